"""Checkpoint a busy SQLite WAL file from a thread of its own, off the writer's commit.

SQLite's automatic checkpoint runs inside the commit that crosses wal_autocheckpoint (1,000
pages): that writer then copies every page of the log back into the database file and fsyncs it
before its commit returns. For the relay, which writes a 20 KB candidate's pages once into the log
on arrival, this copy was 28 % of its ingest thread (py-spy, `edgeloop bench scale --parts relay`).
Here a background thread with a connection of its own runs PASSIVE checkpoints, which never block
the writer, and sqlite3 releases the GIL while one runs, so the copy overlaps the writer's work on
another core. The writer's own automatic checkpoint stays, at a higher threshold, as a bound on the
log should this thread fall behind or die.

    ckpt = WalCheckpointer(path).start()   # the writer's connection: PRAGMA wal_autocheckpoint=FALLBACK_PAGES
    ...
    ckpt.stop()
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("edgeloop.wal")
FALLBACK_PAGES = 16_000  # the writer checkpoints itself past this (64 MB of 4 KB pages)
INTERVAL_S = 0.05  # how often the log is checked: a checkpoint of nothing new costs a few microseconds


class WalCheckpointer:
    def __init__(self, path: str | Path, interval_s: float = INTERVAL_S):
        self.path = Path(path)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "WalCheckpointer":
        self._thread = threading.Thread(target=self._run, name=f"wal-checkpoint-{self.path.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")  # the database file is fsynced before the log is reused
            while not self._stop.wait(self.interval_s):
                self._checkpoint(db)
        finally:
            db.close()

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.DatabaseError as exc:  # a full disk, say: the writer's own checkpoint is the fallback
            log.warning("checkpoint of %s failed: %s", self.path, exc)
