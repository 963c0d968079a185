"""The relay's one SQLite file: which ids it has seen, what waits in an open selection window,
the store-and-forward queue to the hub (a SqliteOutbox in the same file), and the dead letters: what
the hub itself refused, kept for a person to read and replay (`edgeloop relay dead-letters`).

Incoming candidates are written here before the MQTT callback returns, i.e. before the broker
gets our PUBACK: once an agent deletes a candidate, the relay has it on disk.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import msgpack

from edgeloop.shared.errors import StorageError
from edgeloop.shared.outbox import SqliteOutbox
from edgeloop.shared.protocol import Candidate
from edgeloop.shared.sampling.policy import is_feedback

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (sample_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS seen_feedback (sample_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS pending (sample_id TEXT PRIMARY KEY, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (sample_id TEXT PRIMARY KEY, payload BLOB NOT NULL, value REAL NOT NULL,
                                         reason TEXT NOT NULL, at REAL NOT NULL);
"""


class RelayStore:
    def __init__(self, path: Path, forward_quota: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.forward = SqliteOutbox(path, forward_quota)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def accept(self, cands: list[Candidate]) -> list[Candidate]:
        """Record candidates not seen before as pending; -> the new ones (duplicates are dropped).

        Feedback on a frame is new once even when the frame itself was seen: it reuses the frame's
        sample id, and it is the application's word on it (it replaces the frame where it waits)."""
        new = []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for c in cands:
                    seen = "seen_feedback" if is_feedback(c.reasons) else "seen"
                    if self._db.execute(f"INSERT OR IGNORE INTO {seen} (sample_id) VALUES (?)",
                                        (c.sample_id,)).rowcount:
                        self._db.execute("INSERT OR REPLACE INTO pending (sample_id, payload) VALUES (?, ?)",
                                         (c.sample_id, msgpack.packb(c.to_wire(), use_bin_type=True)))
                        new.append(c)
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StorageError(f"relay store: {exc}") from exc
        return new

    def pending(self) -> list[Candidate]:
        with self._lock:
            rows = self._db.execute("SELECT payload FROM pending").fetchall()
        return [Candidate.from_wire(msgpack.unpackb(p, raw=False)) for (p,) in rows]

    def settle(self, kept: list[Candidate], dropped_ids: list[str]) -> list[str]:
        """A window closed: the kept go to the forward queue, the rest are done with.
        -> ids the full forward queue refused (worth less than everything queued): the caller counts them."""
        # Feedback replaces its frame if that is still queued (or sends it again after the frame's send).
        refused = [c.sample_id for c in kept if not self.forward.put(c, c.value, replace=is_feedback(c.reasons))]
        with self._lock:
            self._db.executemany("DELETE FROM pending WHERE sample_id = ?",
                                 [(c.sample_id,) for c in kept] + [(s,) for s in dropped_ids])
        return refused

    # -- dead letters ----------------------------------------------------------------------------
    def dead_letter(self, refused: dict[str, str], batch: list[Candidate]) -> int:
        """Move the candidates the hub refused ({sample_id: reason}) from the forward queue to the dead
        letters -> how many. Written there before they leave the queue: a crash between keeps both."""
        moving = [c for c in batch if c.sample_id in refused]
        with self._lock:
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
                n += 1
        return n

    def close(self) -> None:
        self._db.close()
        self.forward.close()
