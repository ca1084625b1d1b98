"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb in a temp dir, started with pg_ctl
on a free port (as the postgres user when run as root, since initdb refuses root), stopped by the PID
pg_ctl wrote. Installs nothing: Debian's `postgresql` comes from scripts/setup.sh.

    python -m tests.pg_cluster      start one, print its URL, stop it on Enter or Ctrl-C
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class ClusterError(RuntimeError):
    """The cluster could not be made or started; the message says why (with the server log)."""


def bin_dir() -> Path:
    """Where Debian puts the server binaries (they are not on PATH); the newest version wins."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise ClusterError("PostgreSQL's initdb is not installed: run scripts/setup.sh (Debian package postgresql)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """One PostgreSQL server with its data in a temporary directory; `url` names its `postgres` database."""

    def __init__(self, durable: bool = False) -> None:
        # durable=False turns fsync off: tests kill processes, never the machine, so nothing is lost.
        self.durable = durable
        self.dir = Path(tempfile.mkdtemp(prefix="sscard-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = 0
        self.pid: int | None = None
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(bin_dir() / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)

    def start(self) -> "Cluster":
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        r = self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        if r.returncode:
            raise ClusterError(f"initdb failed: {(r.stderr or r.stdout).strip()}")
        for _ in range(5):                       # the free port may be taken between asking and binding
            self.port = free_port()
            opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
                    + ("" if self.durable else " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"))
            r = self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w", "-t", "60", "start")
            if r.returncode == 0:
                self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
                return self
            if "already in use" not in self._log_tail():
                break
        raise ClusterError(f"pg_ctl start failed: {(r.stderr or r.stdout).strip()}\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-20:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server this object started (pg_ctl signals the PID in its own data dir), then remove it."""
        if self.pid is not None:
            r = self._run("pg_ctl", "-D", str(self.data), "stop", "-m", "fast", "-w", timeout=60)
            if r.returncode:
                os.kill(self.pid, 9)
            self.pid = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """A fresh, empty database; its URL."""
        import psycopg
        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + "/" + name

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    with Cluster() as c:
        print(c.url, flush=True)
        try:
            input("PostgreSQL is running; press Enter to stop it\n")
        except (KeyboardInterrupt, EOFError):
            pass
