"""shared/wal.WalCheckpointer: a writer whose own checkpoint threshold is far off still sees its log
copied into the database file, by the checkpointer's thread, without blocking its commits."""

from __future__ import annotations

import sqlite3
import time

from edgeloop.shared.wal import FALLBACK_PAGES, WalCheckpointer


def _writer(path):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_PAGES}")
    db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, payload BLOB)")
    return db


def _write(db, rows: int, start: int = 0) -> None:
    db.execute("BEGIN IMMEDIATE")
    db.executemany("INSERT INTO t VALUES (?, ?)", [(start + i, bytes(20_000)) for i in range(rows)])
    db.execute("COMMIT")


def test_the_log_reaches_the_database_file_without_the_writer_checkpointing(tmp_path):
    path = tmp_path / "x.sqlite"
    db = _writer(path)
    _write(db, 200)  # ~1,000 pages: under the writer's own threshold, so its commits copy nothing
    assert path.stat().st_size < 100_000, "the writer checkpointed by itself: the test proves nothing"
    ckpt = WalCheckpointer(path, interval_s=0.01).start()
    try:
        deadline = time.monotonic() + 20
        while path.stat().st_size < 200 * 20_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert path.stat().st_size >= 200 * 20_000  # the rows' pages are in the database file now
        _write(db, 200, start=200)  # the writer goes on while the checkpointer runs
        deadline = time.monotonic() + 20
        while path.stat().st_size < 400 * 20_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert path.stat().st_size >= 400 * 20_000
    finally:
        ckpt.stop()
    assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 400
    db.close()


def test_stop_ends_the_thread(tmp_path):
    path = tmp_path / "y.sqlite"
    _writer(path).close()
    ckpt = WalCheckpointer(path, interval_s=0.01).start()
    ckpt.stop()
    assert not ckpt._thread.is_alive()
