"""Statements over many rows for SQLite: a multi-row VALUES, or an `IN (...)` list, a few dozen or
hundred rows a statement instead of a statement a row (each of which gives the GIL away and waits to
take it back: README, "Throughput and sizing").

    for part in chunks(ids, IDS_A_STATEMENT):
        db.execute(f"DELETE FROM t WHERE id IN ({marks(len(part))})", part)
"""

from __future__ import annotations

ROWS_A_STATEMENT = 64  # rows a multi-row INSERT carries (a few values each, far under SQLite's 32,766)
IDS_A_STATEMENT = 500  # ids an `IN (...)` list carries


def chunks(items: list, n: int):
    """items in runs of n (the last shorter): one statement each."""
    return (items[i:i + n] for i in range(0, len(items), n))


def marks(n: int, row: str = "?") -> str:
    """n `row`s joined by commas: the placeholders of an `IN (...)` list or a multi-row VALUES."""
    return ", ".join([row] * n)
