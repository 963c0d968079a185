"""Which database the hub tests run on: SQLite (default) or PostgreSQL (EDGELOOP_TEST_DB=postgresql).

    EDGELOOP_TEST_DB=postgresql python -m pytest -q tests/test_hub_api.py

With PostgreSQL, one throwaway cluster (Debian's postgresql package: initdb + postgres from
/usr/lib/postgresql/*/bin) runs for the whole session on a free loopback port, and every hub data
folder a test uses gets a database of its own, made the first time the folder is named. So a hub
restarted on the same folder finds its data again, and two folders never share any, as with SQLite.

Hub fixtures and helpers call, for a hub data folder:

    hubdb.args(data)    extra argv for an `edgeloop hub ...` command: [] or ["--db", url]
    hubdb.store(data)   a HubStore on that folder's database
    hubdb.env(data)     {"EDGELOOP_HUB_DB": url} or {}: for hub processes started by others (onebox)

The cluster starts on first use; tests/conftest.py stops it when the session ends.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from glob import glob
from pathlib import Path

BACKEND = os.environ.get("EDGELOOP_TEST_DB", "sqlite").lower()
if BACKEND not in ("sqlite", "postgresql"):
    raise RuntimeError(f"EDGELOOP_TEST_DB: expected sqlite or postgresql, got {BACKEND!r}")


class PostgresCluster:
    """A PostgreSQL server of its own: a fresh cluster in a temporary folder, on a free port, trusting
    loopback connections, without fsync (nothing in it outlives the tests). Runs as the `postgres`
    user when started by root (initdb refuses root)."""

    def __init__(self):
        bins = sorted(glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
        if not bins:
            raise RuntimeError("no PostgreSQL server: apt-get install postgresql (EDGELOOP_TEST_DB=postgresql)")
        self.bin = Path(bins[-1]).parent
        self.user = "postgres" if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="edgeloop-pg-"))
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def _run_as(self, argv: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(argv, user=self.user, group=self.user and pwd.getpwnam(self.user).pw_gid,
                                extra_groups=[] if self.user else None, cwd=self.root, **kw)

    def start(self, timeout: float = 60) -> "PostgresCluster":
        import psycopg

        data = self.root / "data"
        init = self._run_as([str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                             "--no-locale", "-E", "UTF8", "--no-sync"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = init.communicate(timeout=120)[0]
        if init.returncode:
            raise RuntimeError(f"initdb failed:\n{out.decode(errors='replace')}")
        with socket.socket() as s:  # postgres cannot take port 0 and tell us; pick one, then poll
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = open(self.root / "postgres.log", "ab")
        self.proc = self._run_as(
            [str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.root),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=400", "-c", "shared_buffers=32MB"],
            stdout=self.log, stderr=subprocess.STDOUT)  # same session: an interrupted run stops it too
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                self.admin("SELECT 1")
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not answer in {timeout:.0f}s:\n{self.tail()}")
                time.sleep(0.1)

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)

    def create_database(self, name: str) -> str:
        """-> the URL of a new, empty database `name` (a plain identifier)."""
        self.admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def tail(self) -> str:
        path = self.root / "postgres.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self, timeout: float = 20) -> int | None:
        """Fast shutdown (SIGINT: clients are disconnected), then SIGKILL; the folder goes too."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            code = self.proc.returncode
            self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)
        return code


class HubDatabases:
    """A database per hub data folder (PostgreSQL), or nothing to do (SQLite: DATA/hub.sqlite)."""

    def __init__(self, cluster: PostgresCluster | None):
        self.cluster = cluster
        self._made: dict[Path, str] = {}

    @staticmethod
    def _name(data_dir) -> str:
        return "hub_" + hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:20]

    def url(self, data_dir) -> str | None:
        if self.cluster is None:
            return None
        key = Path(data_dir).resolve()
        if key not in self._made:
            self._made[key] = self.cluster.create_database(self._name(key))
        return self._made[key]

    def clone(self, src, dst) -> None:
        """Give folder `dst` a copy of `src`'s database (nothing may be connected to it)."""
        if self.cluster is not None:
            self.url(src)
            self.cluster.admin(f'CREATE DATABASE "{self._name(dst)}" TEMPLATE "{self._name(src)}"')
            self._made[Path(dst).resolve()] = self.cluster.url(self._name(dst))


_databases: HubDatabases | None = None


def _dbs() -> HubDatabases:
    global _databases
    if _databases is None:
        _databases = HubDatabases(PostgresCluster().start() if BACKEND == "postgresql" else None)
    return _databases


def url(data_dir) -> str | None:
    """The database URL of a hub data folder; None with SQLite (the hub's default, in the folder)."""
    return _dbs().url(data_dir)


def args(data_dir) -> list[str]:
    u = url(data_dir)
    return ["--db", u] if u else []


def env(data_dir) -> dict[str, str]:
    u = url(data_dir)
    return {"EDGELOOP_HUB_DB": u} if u else {}


def store(data_dir):
    from edgeloop.hub.store import HubStore

    return HubStore(data_dir, db=url(data_dir))


def raw(data_dir) -> bytes:
    """Everything the hub's database holds, as bytes: the SQLite files, or a pg_dump of the database."""
    u = url(data_dir)
    if u is None:
        return b"".join(p.read_bytes() for p in sorted(Path(data_dir).glob("hub.sqlite*")))
    return subprocess.run([str(_dbs().cluster.bin / "pg_dump"), u], check=True, capture_output=True,
                          timeout=60).stdout


def copytree(src, dst) -> None:
    """Copy a hub data folder and, with PostgreSQL, its database: a second hub that starts where
    the first one was."""
    shutil.copytree(src, dst)
    _dbs().clone(src, dst)


def shutdown() -> None:
    """Stop the cluster, if one was started."""
    global _databases
    if _databases is not None and _databases.cluster is not None:
        _databases.cluster.stop()
    _databases = None
