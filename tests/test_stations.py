"""Several stations on one batch: the journal on SQLite and on PostgreSQL, claims with leases,
per-station audit logs checked against the journal."""

import pytest

pytestmark = pytest.mark.postgres


def test_the_throwaway_cluster_answers_and_goes_away_when_stopped():
    import psycopg

    from tests.pg_cluster import Cluster
    c = Cluster().start()
    try:
        with psycopg.connect(c.url) as db:
            assert db.execute("SELECT 1 + 1").fetchone() == (2,)
    finally:
        c.stop()
    assert not c.dir.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(c.url, connect_timeout=2)
