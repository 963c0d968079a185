"""Selectors keep the best candidates under a budget. Pure, deterministic, no I/O.

- `WindowedSelector` (streaming, agent and relay): candidates fall in windows of the capture
  clock (`Budget.window_s`); when a window closes, its top-k by value are kept, k being the
  window's share of `per_hour` (the fractional remainder carries to the next window) and the kept
  bytes staying within the window's share of `bytes_per_hour`.
- `select_top` (batch, hub): the best k of a pool under a count and byte budget.

Items are anything with `.sample_id`, `.value`, `.captured_at` and `.nbytes` (a Candidate).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol, TypeVar

from ..config import Budget


class Scored(Protocol):
    sample_id: str
    value: float
    captured_at: float

    @property
    def nbytes(self) -> int: ...


T = TypeVar("T", bound=Scored)


def select_top(pool: Iterable[T], k: float, max_bytes: float = math.inf, min_value: float = -math.inf) -> list[T]:
    """The highest-value items (ties broken by sample_id) with count <= k and bytes <= max_bytes."""
    kept: list[T] = []
    used = 0
    for item in sorted(pool, key=lambda c: (-c.value, c.sample_id)):
        if len(kept) + 1 > k:  # k may be fractional: keep floor(k)
            break
        if item.value < min_value or used + item.nbytes > max_bytes:
            continue
        kept.append(item)
        used += item.nbytes
    return kept


def _worst(pool: list[T]) -> T:
    """The item that leaves a full pool first: the last in select_top's order (value desc, sample_id)."""
    return max(pool, key=lambda c: (-c.value, c.sample_id))


class WindowedSelector:
    """Streaming top-k per window of capture time. Feed with `offer`, collect with `close_until`."""

    def __init__(self, budget: Budget, min_value: float = -math.inf, track_dropped: bool = False, pick=None,
                 pool_limit: int | None = None):
        """pick(pool, k, max_bytes) -> kept items; default: the top by value (`select_top`).

        pool_limit bounds the candidates a window holds (a device cannot hold a minute of frames):
        beyond it the lowest-value one leaves the pool, and `would_accept` tells a caller not to
        build a candidate (encode its image) that would leave at once.
        """
        if pool_limit is not None and pool_limit < 1:
            raise ValueError("pool_limit must be at least 1")
        self.budget = budget
        self.pool_limit = pool_limit
        self.pick = pick or select_top
        self.min_value = min_value
        self._windows: dict[int, list] = {}
        self._carry = 0.0  # fractional count budget carried from closed windows
        self.closed_until = -math.inf  # windows before this index are closed
        self.track_dropped = track_dropped
        self._dropped: list = []  # items of closed windows that were not kept, until drained

    def window_of(self, t: float) -> int:
        return math.floor(t / self.budget.window_s)

    def offer(self, item: T) -> bool:
        """Add a candidate to its window; False if it is below min_value or left a full pool at once.

        A late candidate (its window already closed, e.g. from an agent that was offline) competes
        in the oldest window still open rather than being dropped unseen.
        """
        if item.value < self.min_value:
            return False
        pool = self._windows.setdefault(self._open_window(item.captured_at), [])
        pool.append(item)
        if self.pool_limit is not None and len(pool) > self.pool_limit:
            worst = _worst(pool)
            pool.remove(worst)
            if self.track_dropped:
                self._dropped.append(worst)
            return worst is not item
        return True

    def would_accept(self, captured_at: float, value: float) -> bool:
        """Whether a candidate of this value and time would stay in its window's pool (for now)."""
        if value < self.min_value:
            return False
        pool = self._windows.get(self._open_window(captured_at), ())
        return self.pool_limit is None or len(pool) < self.pool_limit or value > min(c.value for c in pool)

    def _open_window(self, t: float) -> int:
        return max(self.window_of(t), self.closed_until)

    @property
    def pending(self) -> int:
        return sum(len(v) for v in self._windows.values())

    def drain_dropped(self) -> list:
        """Items of closed windows that were not kept, since the last call."""
        out, self._dropped = self._dropped, []
        return out

    def open_windows(self) -> list[int]:
        return sorted(self._windows)

    def close_until(self, t: float | None = None) -> list[T]:
        """Close every window that ends at or before capture time `t` (all when None); -> kept items."""
        last = math.inf if t is None else self.window_of(t)
        kept: list[T] = []
        for w in sorted(k for k in self._windows if k < last):
            pool = self._windows.pop(w)
            allowance = self.budget.per_window + self._carry
            k = math.floor(allowance) if math.isfinite(allowance) else len(pool)
            chosen = self.pick(pool, k, self.budget.bytes_per_window)
            if math.isfinite(allowance):
                # Only the fraction carries: a quiet window does not bank budget for a burst.
                self._carry = allowance - math.floor(allowance)
            kept.extend(chosen)
            if self.track_dropped:
                chosen_ids = {c.sample_id for c in chosen}
                self._dropped.extend(c for c in pool if c.sample_id not in chosen_ids)
            self.closed_until = max(self.closed_until, w + 1)
        if math.isfinite(last):
            self.closed_until = max(self.closed_until, last)  # empty windows before t are closed too
        return kept
