"""Statements over many rows for SQLite: a multi-row VALUES, or an `IN (...)` list, a few dozen or
hundred rows a statement instead of a statement a row (each of which gives the GIL away and waits to
take it back: README, "Throughput and sizing").

    with transaction(db):
        execute_in(db, "DELETE FROM t WHERE id IN ({ids}) AND kind = ?", ids, ["old"])
        db.execute(f"INSERT INTO t (id, kind) VALUES {marks(len(rows), '(?, ?)')}", [v for r in rows for v in r])
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable

ROWS_A_STATEMENT = 64  # rows a multi-row INSERT carries (a few values each, far under SQLite's 32,766)
IDS_A_STATEMENT = 500  # ids an `IN (...)` list carries


def chunks(items: list, n: int):
    """items in runs of n (the last shorter): one statement each."""
    return (items[i:i + n] for i in range(0, len(items), n))


def marks(n: int, row: str = "?") -> str:
    """n `row`s joined by commas: the placeholders of an `IN (...)` list or a multi-row VALUES."""
    return ", ".join([row] * n)


def execute_in(db: sqlite3.Connection, sql: str, ids: Iterable, params: Iterable = ()) -> list[tuple]:
    """Run `sql`, whose `{ids}` stands for an `IN (...)` list's placeholders, over `ids` a few hundred
    at a time (`params` bound before them each time) -> the rows it answered, if any."""
    ids, params = list(ids), list(params)
    return [row for part in chunks(ids, IDS_A_STATEMENT)
            for row in db.execute(sql.format(ids=marks(len(part))), [*params, *part])]


@contextlib.contextmanager
def transaction(db: sqlite3.Connection):
    """BEGIN IMMEDIATE ... COMMIT on an autocommit connection (isolation_level=None), rolled back if
    anything in it fails: on a connection shared by several writers an open one would fail every later
    BEGIN. Errors pass through. One for a batch, not autocommit's commit and fsync a statement."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.OperationalError):  # SQLite may have ended it already
                db.execute("ROLLBACK")
        raise
