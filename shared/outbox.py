"""A priority outbox in one SQLite file (WAL), with a byte quota.

    box = SqliteOutbox(path, quota_bytes)
    box.put(candidate, value)        # False: refused (worth less than everything it would displace)
    batch = box.lease(64, 1 << 20)   # highest value first; leased items are never evicted
    box.ack(ids)                     # delete after the peer confirmed (PUBACK, hub 2xx)
    box.release(ids)                 # the send failed: lease them again later

`put(c, value, replace=True)` of a sample already queued replaces it (feedback raised its worth); if
that sample is out being sent, the replacement is sent after the peer acks the old copy: `leased`
is 0 (waiting), 1 (out) or 2 (out, and replaced since: keep it after the ack and send it again).

A row may also be held: written on arrival, queued later (shared/outbox_held.py).

When full (the quota, or the disk), the lowest-value unleased candidates go first, and are
counted; the last evictions are kept in a small table. Each put is one
transaction with synchronous=FULL: once put() returns, a SIGKILL or power cut cannot lose it.

With `journal=True` (audits, `edgeloop bench chaos`) the file also keeps, without bound, every
sample_id it ever committed (in the put's own transaction) and every one it evicted, so that an
auditor can account for each candidate afterwards with `read_journal(path)`. Off by default: a
device's journal would grow for as long as it runs.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgpack

from .errors import ProtocolError, StorageError
from .outbox_held import HeldRows
from .protocol import Candidate
from .sqlbatch import execute_in, transaction

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    sample_id TEXT PRIMARY KEY,
    value REAL NOT NULL,
    nbytes INTEGER NOT NULL,
    leased INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    payload BLOB NOT NULL,
    held INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_by_value ON outbox (leased, value);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS evictions (sample_id TEXT PRIMARY KEY, value REAL NOT NULL, at REAL NOT NULL);
"""
# Only with journal=True: every sample_id ever committed, written in the same transaction as the row.
_JOURNAL_SCHEMA = "CREATE TABLE IF NOT EXISTS committed (sample_id TEXT PRIMARY KEY, at REAL NOT NULL);"
EVICTIONS_KEPT = 1000


def _pack(c: Candidate) -> bytes:
    return msgpack.packb(c.to_wire(), use_bin_type=True)


@dataclass(frozen=True)
class Journal:
    """What one outbox file accounts for: every id committed, every id evicted, and what is still queued."""

    committed: frozenset[str]
    evicted: frozenset[str]
    queued: frozenset[str]


def read_journal(path: str | Path) -> Journal:
    """Read an outbox file's journal without writing to it (the agent may still be running). An
    agent's file: rows a relay holds for its windows would count as queued.

    Raises StorageError when the file is missing, unreadable, or was not opened with journal=True
    (without a journal the evictions table only holds the last EVICTIONS_KEPT).
    """
    path = Path(path)
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            committed, evicted, queued = (frozenset(r[0] for r in db.execute(f"SELECT sample_id FROM {table}"))
                                          for table in ("committed", "evictions", "outbox"))
            return Journal(committed, evicted, queued)
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"{path}: cannot read the outbox journal ({exc}); was it opened with journal=True?"
                           ) from exc


class Outbox(Protocol):
    def put(self, c: Candidate, value: float, replace: bool = False) -> bool: ...
    def lease(self, max_items: int, max_bytes: int) -> list[Candidate]: ...
    def ack(self, sample_ids: Iterable[str]) -> None: ...
    def release(self, sample_ids: Iterable[str]) -> None: ...


class SqliteOutbox(HeldRows):
    def __init__(self, path: str | Path, quota_bytes: int, on_evict=None, journal: bool = False,
                 evict_on_full_disk: bool = True,
                 shared: tuple[sqlite3.Connection, threading.Lock] | None = None):
        """journal: keep every committed and evicted sample_id, without bound (see the module docstring).
        evict_on_full_disk: a full disk is a smaller quota (a device, with nowhere else to keep
        frames); False: put() raises StorageError instead, for a caller that holds the candidate
        elsewhere until the disk has room (the relay: held for its window, or unacked at the broker).
        shared: an open connection to `path` and the lock that guards it, for a caller that writes
        other tables of the same file (the relay): one writer, so neither waits for the other's write
        lock in SQLite's busy handler, which sleeps 1 to 100 ms a try (py-spy: a fifth of the relay's
        ingest thread, README "Throughput and sizing")."""
        self.evict_on_full_disk = evict_on_full_disk
        self.path = Path(path)
        self.quota = int(quota_bytes)
        self.journal = journal
        self._on_evict = on_evict  # called with the evicted sample ids, e.g. for an audit log
        self._lock = shared[1] if shared else threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = shared[0] if shared else sqlite3.connect(self.path, check_same_thread=False,
                                                                 isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            if "held" not in {r[1] for r in self._db.execute("PRAGMA table_info(outbox)")}:  # an older file
                self._db.execute("ALTER TABLE outbox ADD COLUMN held INTEGER")
            self._db.execute("CREATE INDEX IF NOT EXISTS outbox_bytes ON outbox (held, nbytes)")
            if journal:
                self._db.executescript(_JOURNAL_SCHEMA)
            # A lease does not outlive the process that took it: resend after a restart (held rows stay held).
            self._db.execute("UPDATE outbox SET leased = 0 WHERE leased != 0 AND held IS NULL")
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: cannot open the outbox ({exc})") from exc

    # -- writes ------------------------------------------------------------------------------
    def put(self, c: Candidate, value: float, replace: bool = False) -> bool:
        """Commit a candidate (durably, before returning True); False when it is refused.

        A sample_id already queued stays as it is, unless `replace` (e.g. feedback raised its worth):
        then it is replaced, and if it is being sent right now, sent again after that send's ack.

        Over the quota, lower-value candidates make room. A full disk is a smaller quota: the
        cheapest candidates are evicted until the write fits, never a crash.
        """
        payload = _pack(c)
        limit, free = self.quota, 2 * len(payload)
        while True:
            try:
                ok, victims = self._put_once(c.sample_id, value, payload, limit, replace)
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL or not self.evict_on_full_disk:
                    raise StorageError(f"{self.path}: outbox write failed ({exc})") from exc
                # The disk is full before the quota is: shrink the quota below what is stored now.
                limit, free = self.used_bytes - free, 2 * free
                if limit < 0:
                    log.error("outbox: disk full and nothing left to evict; refusing %s", c.sample_id)
                    self._count_safely("disk_full")
                    return False
                log.warning("outbox: disk full; evicting the cheapest candidates down to %d bytes", limit)
                continue
            if victims and self._on_evict:
                self._on_evict(victims)
            return ok

    def put_many(self, items: list[tuple[Candidate, float, bool]],
                 also: Callable[[list[bool]], None] | None = None) -> list[bool]:
        """put(c, value, replace) for each (c, value, replace), in order, in one transaction: one
        fsync for a batch (the relay queues a closed window's kept candidates at once) -> put's answer
        for each. A held row is released where it lies, its bytes neither packed nor written again.
        A failed write rolls the whole batch back, then each is put() alone, which knows what to do
        about a full disk. also(answers): the caller's own writes on a shared connection (no locking,
        no transaction of its own), committed with the batch."""
        oks, evicted = [], []
        try:
            with self._lock, transaction(self._db):
                # The queue's bytes once, then kept up to date: summing every row for every put made a
                # batch quadratic in the queue's length (py-spy: 60 % of the relay's settle thread).
                used = self._used()
                # Held rows' state read at once, and the accepted counted once: a statement a row
                # fewer each, and each statement gives the GIL away (the relay's settle, relay/inbox.py).
                # Only held rows are taken from it: nothing else in the batch can change them.
                held = self._held_rows([c.sample_id for c, _, _ in items])
                accepted = [0]
                released, used = self._release_held(items, held, used)
                oks += [True] * released
                accepted[0] += released
                for c, v, replace in items[released:]:
                    ok, victims, used = self._put_in_tx(c.sample_id, float(v), lambda c=c: _pack(c), self.quota,
                                                        bool(replace), used, held.pop(c.sample_id, None), accepted)
                    oks.append(ok)
                    evicted += victims
                self._bump("accepted", accepted[0])
                if also:
                    also(oks)
        except sqlite3.DatabaseError as exc:
            if not isinstance(exc, sqlite3.OperationalError):  # not the disk: alone would fail the same
                raise StorageError(f"{self.path}: outbox write failed ({exc})") from exc
            oks = [self.put(c, v, r) for c, v, r in items]
            if also:  # its writes were rolled back with the batch
                self._in_tx(also, oks)
            return oks
        if evicted and self._on_evict:
            self._on_evict(evicted)
        return oks

    def _in_tx(self, write: Callable[[list[bool]], None], oks: list[bool]) -> None:
        with self._lock:
            try:
                with transaction(self._db):
                    write(oks)
            except sqlite3.DatabaseError as exc:
                raise StorageError(f"{self.path}: write failed ({exc})") from exc

    def _put_once(self, sample_id: str, value: float, payload: bytes, limit: int, replace: bool
                  ) -> tuple[bool, list[str]]:
        with self._lock, transaction(self._db):
            ok, victims, _ = self._put_in_tx(sample_id, value, payload, limit, replace)
        return ok, victims

    def _put_in_tx(self, sample_id: str, value: float, payload: bytes | Callable[[], bytes], limit: int,
                   replace: bool, used: int | None = None, row: tuple[int, int] | None = None,
                   accepted: list[int] | None = None) -> tuple[bool, list[str], int | None]:
        """One put inside the caller's transaction (under its lock) -> (accepted, evicted ids, the
        queue's bytes after it, None when not known without summing). used: the bytes before it.
        payload: the bytes, or what packs them; a held row's own bytes are queued instead.
        row: its (held, nbytes) when the caller read it already; accepted: a count the caller bumps."""
        if row is None:
            row = self._db.execute("SELECT held, nbytes FROM outbox WHERE sample_id = ?", (sample_id,)).fetchone()
        if row is not None and row[0] is None:  # queued or out already
            if not replace:
                return True, [], used  # idempotent
            payload = payload() if callable(payload) else payload
            self._db.execute("UPDATE outbox SET value = ?, nbytes = ?, payload = ?, "
                             "leased = CASE leased WHEN 0 THEN 0 ELSE 2 END WHERE sample_id = ?",
                             (float(value), len(payload), payload, sample_id))
            return True, [], None  # the old size is gone: sum again
        held = row is not None
        if not held:
            payload = payload() if callable(payload) else payload
        size = row[1] if held else len(payload)

        def refuse(used_after: int | None):
            self._bump("refused", 1)
            if held:  # refused for good: its window's decision is final
                self._db.execute("DELETE FROM outbox WHERE sample_id = ?", (sample_id,))
            return False, [], used_after

        if size > self.quota:
            return refuse(used)
        used = self._used() if used is None else used
        before = used
        victims: list[tuple[str, float]] = []
        if used + size > limit:
            for sid, v, n in self._db.execute(
                "SELECT sample_id, value, nbytes FROM outbox WHERE leased = 0 ORDER BY value, created"
            ):
                if v >= value:
                    break
                victims.append((sid, v))
                used -= n
                if used + size <= limit:
                    break
            if used + size > limit:  # cannot make room with cheaper items
                return refuse(before)
            self._evict(victims)
        if held:
            self._db.execute("UPDATE outbox SET leased = 0, held = NULL, value = ?, created = ? WHERE sample_id = ?",
                             (float(value), time.time(), sample_id))
        else:
            self._db.execute(
                "INSERT INTO outbox (sample_id, value, nbytes, created, payload) VALUES (?, ?, ?, ?, ?)",
                (sample_id, float(value), size, time.time(), payload))
        if self.journal:
            self._db.execute("INSERT OR IGNORE INTO committed (sample_id, at) VALUES (?, ?)",
                             (sample_id, time.time()))
        if accepted is None:
            self._bump("accepted", 1)
        else:
            accepted[0] += 1
        return True, [sid for sid, _ in victims], used + size

    def _evict(self, victims: list[tuple[str, float]]) -> None:
        """Delete, count, and remember the last evictions (what a full outbox gave up, and its worth)."""
        if not victims:
            return
        self._db.executemany("DELETE FROM outbox WHERE sample_id = ?", [(s,) for s, _ in victims])
        now = time.time()
        self._db.executemany("INSERT OR REPLACE INTO evictions (sample_id, value, at) VALUES (?, ?, ?)",
                             [(s, v, now) for s, v in victims])
        if not self.journal:  # a journal accounts for every eviction
            self._db.execute("DELETE FROM evictions WHERE rowid <= (SELECT MAX(rowid) FROM evictions) - ?",
                             (EVICTIONS_KEPT,))
        self._bump("evicted", len(victims))

    def _count_safely(self, name: str) -> None:
        with self._lock, contextlib.suppress(sqlite3.OperationalError), transaction(self._db):
            self._bump(name, 1)

    def lease(self, max_items: int, max_bytes: int) -> list[Candidate]:
        """Up to max_items unleased candidates, highest value first, within max_bytes (at least one)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT sample_id, nbytes, payload FROM outbox WHERE leased = 0 ORDER BY value DESC, sample_id LIMIT ?",
                (max_items,)).fetchall()
            chosen, used = [], 0
            for sid, n, payload in rows:
                if chosen and used + n > max_bytes:
                    break
                chosen.append((sid, payload))
                used += n
            if chosen:
                with transaction(self._db):  # not a commit, an fsync, a row with the lock held
                    execute_in(self._db, "UPDATE outbox SET leased = 1 WHERE sample_id IN ({ids})",
                               [sid for sid, _ in chosen])
        out, bad = [], []
        for sid, payload in chosen:
            try:
                out.append(Candidate.from_wire(msgpack.unpackb(payload, raw=False)))
            except (ProtocolError, ValueError, msgpack.UnpackException) as exc:
                bad.append(sid)  # unsendable forever: drop it, count it, never block the queue behind it
                log.error("outbox: dropping unreadable candidate %s (%s)", sid, exc)
        if bad:
            with self._lock, transaction(self._db):
                execute_in(self._db, "DELETE FROM outbox WHERE sample_id IN ({ids})", bad)
                self._bump("unreadable", len(bad))
        return out

    def ack(self, sample_ids: Iterable[str]) -> None:
        ids = list(dict.fromkeys(sample_ids))
        with self._lock, transaction(self._db):
            before = self._db.total_changes
            execute_in(self._db, "DELETE FROM outbox WHERE sample_id IN ({ids}) AND leased != 2 AND held IS NULL", ids)
            self._bump("sent", self._db.total_changes - before)
            # Replaced while out: the peer has the old copy; the new one goes next.
            execute_in(self._db, "UPDATE outbox SET leased = 0 WHERE sample_id IN ({ids}) AND leased = 2", ids)

    def release(self, sample_ids: Iterable[str]) -> None:
        ids = list(sample_ids)
        if ids:
            with self._lock, transaction(self._db):
                execute_in(self._db, "UPDATE outbox SET leased = 0 WHERE sample_id IN ({ids}) AND held IS NULL", ids)

    # -- reads -------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Candidates queued or out (not the held ones)."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM outbox WHERE held IS NULL").fetchone()[0]

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return self._used()

    def ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT sample_id FROM outbox WHERE held IS NULL")}

    def evictions(self) -> list[tuple[str, float]]:
        """The last evicted candidates (sample_id, value), oldest first."""
        with self._lock:
            return self._db.execute("SELECT sample_id, value FROM evictions ORDER BY rowid").fetchall()

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT name, n FROM counters").fetchall())

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- helpers -----------------------------------------------------------------------------
    def _used(self) -> int:
        # From the (held, nbytes) index alone: a scan of the table reads a page per row, 20 KB
        # candidates having a leaf page each (15 % of a relay's settle with 4,000 queued).
        return self._db.execute("SELECT COALESCE(SUM(nbytes), 0) FROM outbox WHERE held IS NULL").fetchone()[0]

    def _bump(self, name: str, n: int) -> None:
        if n:
            self._db.execute("INSERT INTO counters (name, n) VALUES (?, ?) "
                             "ON CONFLICT(name) DO UPDATE SET n = n + excluded.n", (name, n))
