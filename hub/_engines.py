"""The two database engines under HubStore: SQLite (one file, one process) and PostgreSQL (one
database, several hub processes). hub/store.py writes every statement once, in the SQL both
understand (qmark parameters, ON CONFLICT, COUNT(*) FILTER, NULLS LAST); an engine only connects,
runs statements, opens transactions, names the column types and takes named locks across processes.

    engine.query(sql, params)     -> rows as dicts
    engine.execute(sql, params)   -> rows changed
    with engine.transaction():    all or nothing (joins an enclosing one)
    with engine.locked("name"):   one holder at a time, across every process on this database

Thread-safety: one connection per engine, shared by the API's worker threads; every use holds the
engine's lock (a transaction holds it to the end). A hub scales out by running more processes, not
more connections per process.

Errors: a database that cannot be reached raises PeerUnavailable, an unusable --db raises
ConfigError; both where the engine is opened.
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
import threading
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from edgeloop.shared.errors import ConfigError, PeerUnavailable


def open_engine(data_dir: Path, db: str | None) -> "SqliteEngine | PostgresEngine":
    """`db` None or "": SQLite at DATA/hub.sqlite; "postgresql://user@host:port/dbname": PostgreSQL."""
    if not db:
        return SqliteEngine(Path(data_dir) / "hub.sqlite", Path(data_dir) / "locks")
    if db.startswith(("postgresql://", "postgres://")):
        return PostgresEngine(db)
    raise ConfigError(f"--db: expected postgresql://user@host/dbname (or nothing for SQLite in the data "
                      f"folder), got {db!r}")


def _dict_row(cursor: sqlite3.Cursor, row: tuple) -> dict:
    return {d[0]: v for d, v in zip(cursor.description, row)}


class SqliteEngine:
    """One SQLite file in WAL mode. Several processes may open it on one host (named locks are
    flock(2) files), but its writers queue on one file lock: one hub process is what it is for."""

    types = {"text": "TEXT", "int": "INTEGER", "float": "REAL", "bytes": "BLOB",
             "serial": "INTEGER PRIMARY KEY"}  # an alias of the rowid: numbered on insert

    def __init__(self, path: Path, lock_dir: Path):
        self.path, self._lock_dir = path, lock_dir
        # isolation_level=None: no implicit transactions; transaction() says BEGIN IMMEDIATE itself.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = _dict_row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=30000")  # another process's write: wait, don't fail
        self._lock = threading.RLock()
        self._depth = 0
        self._named: dict[str, threading.Lock] = {}

    def query(self, sql: str, params: Sequence = ()) -> list[dict]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def execute(self, sql: str, params: Sequence = ()) -> int:
        with self._lock:
            return self._conn.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> None:
        with self._lock:
            self._conn.executemany(sql, rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._depth:  # joined: the outermost commits
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            # IMMEDIATE: take the write lock now, so a read-then-write cannot be overtaken.
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                self._depth = 0

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[None]:
        with self._named.setdefault(name, threading.Lock()):
            self._lock_dir.mkdir(parents=True, exist_ok=True)
            with open(self._lock_dir / f"{name}.lock", "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, or the process dies
                yield

    def columns(self, table: str) -> set[str]:
        return {r["name"] for r in self.query(f"PRAGMA table_info({table})")}

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresEngine:
    """A PostgreSQL database shared by every hub process. Writes are transactions at READ COMMITTED;
    what must not interleave across processes (ingest of one sample_id, numbering) is made safe by
    the statements themselves (ON CONFLICT); longer read-modify-writes take a named lock, an advisory
    lock on a connection of its own (so waiting for it never blocks this process's other queries)."""

    # COLLATE "C": text sorts by bytes, as in SQLite, whatever the cluster's locale.
    types = {"text": 'TEXT COLLATE "C"', "int": "BIGINT", "float": "DOUBLE PRECISION", "bytes": "BYTEA",
             "serial": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"}

    def __init__(self, url: str):
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError as exc:
            raise ConfigError("a postgresql:// --db needs the psycopg driver: pip install 'edgeloop[hub]'") from exc
        self._psycopg, self._dict_row, self.url = psycopg, dict_row, url
        self._lock = threading.RLock()
        self._conn = self._connect()
        self._named: dict[str, threading.Lock] = {}
        self._lock_conns: dict[str, object] = {}

    def _connect(self):
        try:
            return self._psycopg.connect(self.url, autocommit=True, row_factory=self._dict_row, connect_timeout=10)
        except self._psycopg.OperationalError as exc:
            raise PeerUnavailable(f"cannot reach the hub database {_redact(self.url)}: {exc}".strip()) from exc
        except self._psycopg.ProgrammingError as exc:  # a malformed URL
            raise ConfigError(f"--db {_redact(self.url)}: {exc}") from exc

    def _live(self):
        """The connection, made anew if the server dropped the old one (a restart, a failover): the
        statement that saw it drop failed; the next one runs."""
        if self._conn.closed or self._conn.broken:
            self._conn = self._connect()
        return self._conn

    def _run(self, sql: str, params: Sequence):
        if params:  # qmark -> psycopg's format style (without parameters psycopg reads the text as is)
            sql = sql.replace("%", "%%").replace("?", "%s")
        return self._live().execute(sql, params or None)

    def query(self, sql: str, params: Sequence = ()) -> list[dict]:
        with self._lock:
            return self._run(sql, params).fetchall()

    def execute(self, sql: str, params: Sequence = ()) -> int:
        with self._lock:
            return self._run(sql, params).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> None:
        with self._lock:
            with self._live().cursor() as cur:
                cur.executemany(sql.replace("%", "%%").replace("?", "%s"), rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock, self._live().transaction():  # nested: a savepoint
            yield

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[None]:
        key = zlib.crc32(f"edgeloop:{name}".encode())
        with self._named.setdefault(name, threading.Lock()):
            conn = self._lock_conns.get(name)
            if conn is None or conn.closed or conn.broken:
                conn = self._lock_conns[name] = self._connect()
            # A session lock: held until unlocked, or until this process's connection goes away.
            conn.execute("SELECT pg_advisory_lock(%s)", [key])
            try:
                yield
            finally:
                try:
                    conn.execute("SELECT pg_advisory_unlock(%s)", [key])
                except self._psycopg.Error:
                    conn.close()  # the lock went with the connection

    def columns(self, table: str) -> set[str]:
        return {r["column_name"] for r in self.query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ?", [table])}

    def close(self) -> None:
        with self._lock:
            for conn in [self._conn, *self._lock_conns.values()]:
                conn.close()


def _redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{creds.split(':')[0]}{at}{host}" if at else url

