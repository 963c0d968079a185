"""Held rows of the outbox (shared/outbox.py's SqliteOutbox), for a caller that writes a candidate on
arrival and queues it later: the relay, whose selection windows decide what goes up.

A held row (`held` 1, and `leased` 1 so that nothing leases or evicts it) is written on
arrival but not queued yet, outside the quota, until a put of its sample releases it where it lies
or `drop_held` deletes it. The relay holds each candidate so from its arrival until its selection
window decides, so that a candidate's bytes are written once (`hold`, `put_many`, `held`). Release
flips `held` 1 -> NULL and `leased` 1 -> 0, values SQLite stores in no bytes: the record keeps its
size and is overwritten in place, its 20 KB of overflow pages untouched (any change of size rewrites
them all: 4x the CPU per release, measured).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from .protocol import Candidate
from .sqlbatch import ROWS_A_STATEMENT, chunks, execute_in, marks


class HeldRows:
    """SqliteOutbox's held rows (its `_db`, `_lock`, `quota` and `journal`): written in the caller's
    transaction, on a shared connection, under its lock, except `held`."""

    def hold(self, sample_id: str, value: float, payload: bytes, replace: bool = False) -> None:
        """Write a row that waits, held, for a put of its sample (put_many) or `drop_held`. A sample
        queued or out already is left as it is; one held already is replaced only if `replace`."""
        if replace:
            if self._db.execute("UPDATE outbox SET value = ?, nbytes = ?, payload = ? WHERE sample_id = ? "
                                "AND held = 1", (float(value), len(payload), payload, sample_id)).rowcount:
                return
        self._db.execute("INSERT OR IGNORE INTO outbox (sample_id, value, nbytes, leased, created, payload, held) "
                         "VALUES (?, ?, ?, 1, ?, ?, 1)", (sample_id, float(value), len(payload), time.time(), payload))

    def hold_many(self, rows: list[tuple[str, float, bytes]], replace: bool = False) -> None:
        """`hold` each (sample_id, value, payload), as one statement a few dozen rows when not `replace`."""
        if replace:
            for sid, value, payload in rows:
                self.hold(sid, value, payload, replace=True)
            return
        now = time.time()
        for part in chunks(rows, ROWS_A_STATEMENT):
            self._db.execute("INSERT OR IGNORE INTO outbox (sample_id, value, nbytes, leased, created, payload, held) "
                             f"VALUES {marks(len(part), '(?, ?, ?, 1, ?, ?, 1)')}",
                             [v for sid, value, payload in part for v in (sid, float(value), len(payload), now, payload)])

    def drop_held(self, sample_ids: Iterable[str]) -> None:
        """Delete these samples' held rows (their window did not keep them); queued ones stay."""
        execute_in(self._db, "DELETE FROM outbox WHERE held = 1 AND sample_id IN ({ids})", sample_ids)

    def held(self) -> list[bytes]:
        """The held rows' payloads (packed Candidates), for a caller restarting its windows."""
        with self._lock:
            return [p for (p,) in self._db.execute("SELECT payload FROM outbox WHERE held = 1")]

    def _release_held(self, items: list[tuple[Candidate, float, bool]], held: dict[str, tuple[int, int]],
                      used: int) -> tuple[int, int]:
        """Queue the longest run of held rows at the head of `items` that fits the quota as it is, a
        statement a few dozen rows (the caller's transaction; taken from `held`) -> (how many, the
        queue's bytes after). Each would be accepted by _put_in_tx with nothing to evict, so the
        answers are its own; an UPDATE a row gave the GIL away for each, with the lock held."""
        run = []
        for c, v, _ in items:
            row = held.get(c.sample_id)
            if row is None or used + row[1] > self.quota:
                break
            run.append((c.sample_id, float(v)))
            used += row[1]
            del held[c.sample_id]
        now = time.time()
        for part in chunks(run, ROWS_A_STATEMENT):
            cases = " ".join("WHEN ? THEN ?" for _ in part)
            self._db.execute(f"UPDATE outbox SET leased = 0, held = NULL, created = ?, value = CASE sample_id {cases} "
                             f"END WHERE sample_id IN ({marks(len(part))})",
                             [now, *(x for row in part for x in row), *(sid for sid, _ in part)])
            if self.journal:
                self._db.execute(f"INSERT OR IGNORE INTO committed (sample_id, at) VALUES {marks(len(part), '(?, ?)')}",
                                 [x for sid, _ in part for x in (sid, now)])
        return len(run), used

    def _held_rows(self, sample_ids: list[str]) -> dict[str, tuple[int, int]]:
        """sample_id -> (held, nbytes) of those held, in chunks of a few hundred ids."""
        return {sid: (h, n) for sid, h, n in execute_in(
            self._db, "SELECT sample_id, held, nbytes FROM outbox WHERE held = 1 AND sample_id IN ({ids})", sample_ids)}
