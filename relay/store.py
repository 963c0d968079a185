"""The relay's one SQLite file: which ids it has seen, the store-and-forward queue to the hub (a
SqliteOutbox in the same file) with what waits in an open selection window held in it, and the dead
letters: what the hub itself refused, kept for a person to read and replay (`edgeloop relay dead-letters`).

A candidate's bytes are written once, on arrival, as a held row of the forward queue: its window's
decision releases the row where it lies (kept) or deletes it (dropped). Moving each kept candidate
from a table of its own into the queue was a quarter of the relay's CPU (README, "Throughput and
sizing").

The seen tables are also the relay's journal: each id's device, capture time, value and fate
(NULL while pending; kept, dropped by the budget, refused by a full forward queue, dead-lettered),
for as long as it is remembered. A budget's deliberate drop is told from a loss by reading it.

Incoming candidates are written here before the MQTT callback returns, i.e. before the broker
gets our PUBACK: once an agent deletes a candidate, the relay has it on disk.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import msgpack

from edgeloop.shared.errors import StorageError
from edgeloop.shared.outbox import SqliteOutbox
from edgeloop.shared.protocol import Candidate
from edgeloop.shared.sampling.policy import is_feedback
from edgeloop.shared.sqlbatch import ROWS_A_STATEMENT, chunks, execute_in, marks, transaction
from edgeloop.shared.wal import FALLBACK_PAGES, WalCheckpointer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (sample_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS seen_feedback (sample_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (sample_id TEXT PRIMARY KEY, payload BLOB NOT NULL, value REAL NOT NULL,
                                         reason TEXT NOT NULL, at REAL NOT NULL);
"""


JOURNAL_COLUMNS = (("at", "REAL"), ("device_id", "TEXT"), ("captured_at", "REAL"), ("value", "REAL"),
                   ("nbytes", "INTEGER"), ("predicted", "INTEGER"), ("fate", "TEXT"), ("late", "INTEGER"))
# kept by its window; past every budget (audit, feedback, a campaign); a budget's drop; a full forward
# queue's, at once or later (evicted); the hub's refusal
FATES = ("kept", "bypassed", "dropped", "refused", "evicted", "dead")
SELECTED = ("kept", "refused", "evicted", "dead")  # fates of what a window chose, whatever came after


@dataclass(frozen=True)
class Journaled:
    """What the journal holds of a candidate a window kept: enough for the selector to judge late
    ones against it after a restart (WindowedSelector.restore)."""

    sample_id: str
    value: float
    captured_at: float
    nbytes: int
    predicted: int
    device_id: str = ""
    late: bool = False  # kept in a late pane: the selector's late memory of its device
    embedding: None = None
    detections: None = None


class RelayStore:
    def __init__(self, path: Path, forward_quota: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # Checkpoints run in a thread of their own (shared/wal.py says why); this is the fallback.
        self._db.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_PAGES}")
        self._db.executescript(_SCHEMA)
        for table in ("seen", "seen_feedback"):  # columns older files lack (NULL for their rows)
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            for col, kind in JOURNAL_COLUMNS:
                if col not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {col} {kind}")
        self._lock = threading.Lock()
        # One connection and one lock for both (the ingest thread's accept, the windows' settle, the
        # forwarder's leases): a writer waits on the lock, never in SQLite's sleeping busy handler.
        # A full disk raises rather than evicts: what a window kept stays pending until it has room.
        self.forward = SqliteOutbox(path, forward_quota, evict_on_full_disk=False, on_evict=self._evicted,
                                    shared=(self._db, self._lock))
        self._adopt_pending_table()
        self._checkpointer = WalCheckpointer(path).start()

    def _adopt_pending_table(self) -> None:
        """A file from before candidates were held in the forward queue kept them in a table of
        their own: hold them there instead, once."""
        with self._lock:
            if not self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'pending'").fetchone():
                return
            with transaction(self._db):
                for sid, payload in self._db.execute("SELECT sample_id, payload FROM pending").fetchall():
                    value = Candidate.from_wire(msgpack.unpackb(payload, raw=False)).value
                    self.forward.hold(sid, value, payload, replace=True)
                self._db.execute("DROP TABLE pending")

    def accept(self, cands: list[Candidate]) -> list[Candidate]:
        """Record candidates not seen before, held in the forward queue until their window decides;
        -> the new ones, in order (duplicates are dropped).

        Feedback on a frame is new once even when the frame itself was seen: it reuses the frame's
        sample id, and it is the application's word on it (it replaces the frame where it is held).
        A few statements for the whole group, not two a candidate: sqlite3 releases the GIL for each
        and takes it back after, and the relay's other thread holds it most of the time (relay/inbox.py)."""
        now, new_ids = time.time(), set()
        with self._lock:
            try:
                with transaction(self._db):
                    for table, feedback in (("seen", False), ("seen_feedback", True)):
                        fresh = self._journal_new(table, [c for c in cands if is_feedback(c.reasons) == feedback], now)
                        self.forward.hold_many([(c.sample_id, c.value, msgpack.packb(c.to_wire(), use_bin_type=True))
                                                for c in fresh], replace=feedback)
                        new_ids.update((c.sample_id, feedback) for c in fresh)
            except sqlite3.DatabaseError as exc:
                raise StorageError(f"relay store: {exc}") from exc
        new = []
        for c in cands:  # the first of each id (a resent batch may come with its first copy)
            key = (c.sample_id, is_feedback(c.reasons))
            if key in new_ids:
                new_ids.discard(key)
                new.append(c)
        return new

    def _journal_new(self, table: str, cands: list[Candidate], now: float) -> list[Candidate]:
        """Journal those of `cands` not in `table` yet (in the caller's transaction) -> them, the first
        of each id only."""
        first = list({c.sample_id: c for c in reversed(cands)}.values())[::-1]
        seen = {r[0] for r in execute_in(self._db, f"SELECT sample_id FROM {table} WHERE sample_id IN ({{ids}})",
                                          [c.sample_id for c in first])}
        fresh = [c for c in first if c.sample_id not in seen]
        for part in chunks(fresh, ROWS_A_STATEMENT):
            self._db.execute(f"INSERT INTO {table} (sample_id, at, device_id, captured_at, value, nbytes, predicted) "
                             f"VALUES {marks(len(part), '(?, ?, ?, ?, ?, ?, ?)')}",
                             [v for c in part for v in (c.sample_id, now, c.device_id, c.captured_at, float(c.value),
                                                        c.nbytes, c.predicted)])
        return fresh

    def pending(self) -> list[Candidate]:
        """What waits for its window (held), e.g. for a restarted relay to offer again."""
        return [Candidate.from_wire(msgpack.unpackb(p, raw=False)) for p in self.forward.held()]

    def settle(self, kept: list[Candidate], dropped_ids: list[str], fate: str = "kept",
               closed_until: float | None = None, late_ids: list[str] = ()) -> list[str]:
        """A window closed: the kept go to the forward queue, the rest are done with.
        -> ids the full forward queue refused (worth less than everything queued): the caller counts them.
        StorageError (a full or failing disk): nothing is lost, they are all still pending; call again.
        closed_until: the selector's first window not closed yet, kept for a restart; late_ids: those
        judged in a late pane (their window had closed when they came), journaled as late."""
        # Feedback replaces its frame if that is still queued (or sends it again after the frame's send).
        # One transaction for the window (Relay._on_batch says why a commit per candidate was the limit).
        # What a window kept is released where it is held; a refused one's row is deleted by the queue.
        refused: list[str] = []

        def done_with(oks: list[bool]) -> None:  # in the forward queue's transaction: one commit, one fsync
            refused[:] = [c.sample_id for c, ok in zip(kept, oks) if not ok]
            out = set(refused)
            fates = [("refused" if c.sample_id in out else fate, c.sample_id, is_feedback(c.reasons)) for c in kept]
            self.forward.drop_held(dropped_ids)
            self._set_fates(fates + [("dropped", s, False) for s in dropped_ids])
            execute_in(self._db, "UPDATE seen SET late = 1 WHERE sample_id IN ({ids})", late_ids)
            if closed_until is not None and math.isfinite(closed_until):
                self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('closed_until', ?)",
                                 (closed_until,))

        try:
            self.forward.put_many([(c, c.value, is_feedback(c.reasons)) for c in kept], also=done_with)
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"relay store: {exc}") from exc
        return refused

    def _evicted(self, ids: list[str]) -> None:
        """The full forward queue gave these up for better ones (SqliteOutbox's on_evict)."""
        with self._lock:
            for table in ("seen", "seen_feedback"):
                execute_in(self._db, f"UPDATE {table} SET fate = 'evicted' WHERE sample_id IN ({{ids}}) "
                           "AND fate = 'kept'", ids)

    def _set_fates(self, fates: list[tuple[str, str, bool]]) -> None:
        """(fate, sample_id, feedback?) -> the journal (lock held): a statement a fate and a few
        hundred ids, not one an id (each gives the GIL away; relay/inbox.py)."""
        by: dict[tuple[str, str], list[str]] = {}
        for fate, sid, is_fb in fates:
            by.setdefault(("seen_feedback" if is_fb else "seen", fate), []).append(sid)
        for (table, fate), ids in by.items():
            execute_in(self._db, f"UPDATE {table} SET fate = ? WHERE sample_id IN ({{ids}})", ids, [fate])

    def windows_kept(self, since: float) -> list[Journaled]:
        """What windows kept, captured since `since`: for a restarted relay to judge late candidates
        as it would have before (WindowedSelector.restore)."""
        with self._lock:
            marks = ", ".join("?" * len(SELECTED))
            rows = self._db.execute("SELECT sample_id, value, captured_at, nbytes, predicted, device_id, late "
                                    f"FROM seen WHERE fate IN ({marks}) AND captured_at >= ? AND value IS NOT NULL "
                                    "AND predicted IS NOT NULL", (*SELECTED, since)).fetchall()
        return [Journaled(sid, v, t, n or 0, p, dev or "", bool(late)) for sid, v, t, n, p, dev, late in rows]

    def closed_until(self) -> float | None:
        """The selector's first window not closed when the relay last settled one (None: never)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'closed_until'").fetchone()
        return None if row is None else row[0]

    def journal(self) -> dict[str, str | None]:
        """sample_id -> its fate here (None: pending), for every id remembered. Where a frame and its
        feedback differ, the feedback's (it went up on its own)."""
        return read_journal(self._db, self._lock)

    def prune_seen(self, older_than_s: float, now: float | None = None) -> int:
        """Forget ids seen more than older_than_s ago -> how many. The dedup table stays bounded; an id
        that comes back later is taken again, and the hub, idempotent by sample id, holds it once."""
        cutoff = (time.time() if now is None else now) - older_than_s
        with self._lock:
            return sum(self._db.execute(f"DELETE FROM {t} WHERE at IS NULL OR at < ?", (cutoff,)).rowcount
                       for t in ("seen", "seen_feedback"))

    def seen_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM seen").fetchone()[0]

    # -- dead letters ----------------------------------------------------------------------------
    def dead_letter(self, refused: dict[str, str], batch: list[Candidate]) -> int:
        """Move the candidates the hub refused ({sample_id: reason}) from the forward queue to the dead
        letters -> how many. Written there before they leave the queue: a crash between keeps both."""
        moving = [c for c in batch if c.sample_id in refused]
        with self._lock:
            self._set_fates([("dead", c.sample_id, is_feedback(c.reasons)) for c in moving])
            self._db.executemany(
                "INSERT OR REPLACE INTO dead_letters (sample_id, payload, value, reason, at) VALUES (?, ?, ?, ?, ?)",
                [(c.sample_id, msgpack.packb(c.to_wire(), use_bin_type=True), float(c.value), refused[c.sample_id],
                  time.time()) for c in moving])
        self.forward.ack([c.sample_id for c in moving])
        return len(moving)

    def dead_letters(self) -> list[dict]:
        """[{"sample_id", "device_id", "reason", "at", "bytes"}], oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT sample_id, payload, reason, at FROM dead_letters ORDER BY at").fetchall()
        out = []
        for sid, payload, reason, at in rows:
            c = Candidate.from_wire(msgpack.unpackb(payload, raw=False))
            out.append({"sample_id": sid, "device_id": c.device_id, "reason": reason, "at": at, "bytes": len(payload)})
        return out

    def replay(self) -> int:
        """Put every dead letter back on the forward queue (after the hub was fixed) -> how many."""
        with self._lock:
            rows = self._db.execute("SELECT sample_id, payload, value FROM dead_letters").fetchall()
        n = 0
        for sid, payload, value in rows:
            c = Candidate.from_wire(msgpack.unpackb(payload, raw=False))
            if self.forward.put(c, value):
                with self._lock:
                    self._db.execute("DELETE FROM dead_letters WHERE sample_id = ?", (sid,))
                    self._set_fates([("kept", sid, is_feedback(c.reasons))])
                n += 1
        return n

    def close(self) -> None:
        self._checkpointer.stop()
        self._db.close()
        self.forward.close()


def read_journal(db: sqlite3.Connection | Path, lock: threading.Lock | None = None) -> dict[str, str | None]:
    """A relay's journal (RelayStore.journal), from its open database or, read-only, its file."""
    conn = db if isinstance(db, sqlite3.Connection) else sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        with lock or contextlib.nullcontext():
            out = dict(conn.execute("SELECT sample_id, fate FROM seen").fetchall())
            for sid, fate in conn.execute("SELECT sample_id, fate FROM seen_feedback"):
                out[sid] = fate if fate is not None else out.get(sid)
        return out
    finally:
        if conn is not db:
            conn.close()


def journal_rows(path: Path) -> list[tuple]:
    """(sample_id, device_id, captured_at, value, fate, at, late) of every frame a relay remembers,
    read-only from its file (bench chaos measures a backlog's share with them)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT sample_id, device_id, captured_at, value, fate, at, late FROM seen").fetchall()
    finally:
        conn.close()
