import pytest
from hypothesis import settings

# Tests never assert on wall time: a loaded CI machine must not fail an example for being slow.
settings.register_profile("sscard", deadline=None)
settings.load_profile("sscard")

from personalize.demo import blank_card, demo_card


@pytest.fixture
def card():
    """The demo card, powered on, with the demo DF not yet selected."""
    return demo_card()


@pytest.fixture
def blank():
    return blank_card()


@pytest.fixture(scope="session")
def pg_cluster():
    """One throwaway PostgreSQL server for the session; a cluster that cannot start fails the test."""
    from tests.pg_cluster import Cluster, ClusterError
    cluster = Cluster()
    try:
        cluster.start()
    except (ClusterError, OSError, FileNotFoundError) as e:
        cluster.stop()
        pytest.fail(f"PostgreSQL could not start: {e}", pytrace=False)
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster):
    """An empty database of its own for one test."""
    import uuid
    return pg_cluster.create_database(f"t_{uuid.uuid4().hex[:12]}")
