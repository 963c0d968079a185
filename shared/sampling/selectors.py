"""Selectors keep the best candidates under a budget. Pure, deterministic, no I/O.

- `WindowedSelector` (streaming, agent and relay): candidates fall in windows of the capture
  clock (`Budget.window_s`); when a window closes, its top-k by value are kept, k being the
  window's share of `per_hour` (the fractional remainder carries to the next window) and the kept
  bytes staying within the window's share of `bytes_per_hour`. Budgets are by event time, as in
  Beam's and Flink's windowing: a candidate that arrives after its window closed (an agent back
  from an outage with an hour of backlog) is judged in a late pane of *its own* window, against
  what that window kept, for as long as the window is remembered (`lateness_s`). With a `late_key`
  (the relay: the device), against what the window kept in time and what it kept late of the same
  key: each device's late candidates get the share they would have had in time, whatever other late
  devices sent before them.
- `select_top` (batch, hub): the best k of a pool under a count and byte budget.

Items are anything with `.sample_id`, `.value`, `.captured_at` and `.nbytes` (a Candidate).
"""

from __future__ import annotations

import dataclasses
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


FLUSHED_KEPT = 4096  # windows closed ahead of time that a selector remembers as closed


class _Kept:
    """What a closed window remembers of a candidate it kept, to judge late ones against: all but
    the image (the pickers read value, nbytes, embedding, predicted, detections)."""

    __slots__ = ("item", "nbytes")

    def __init__(self, item):
        self.nbytes = item.nbytes
        self.item = dataclasses.replace(item, image=b"") if hasattr(item, "image") else item

    def __getattr__(self, name):
        return getattr(self.item, name)


class WindowedSelector:
    """Streaming top-k per window of capture time. Feed with `offer`, collect with `close_until`."""

    def __init__(self, budget: Budget, min_value: float = -math.inf, track_dropped: bool = False, pick=None,
                 pool_limit: int | None = None, lateness_s: float = 0.0, late_key=None):
        """pick(pool, k, max_bytes) -> kept items; default: the top by value (`select_top`).

        pool_limit bounds the candidates a window (or a late pane) holds: beyond it the lowest-value
        one leaves the pool, and `would_accept` tells a caller not to build a candidate (encode its
        image) that would leave at once.

        lateness_s: how long after it closed a window remembers what it kept (its count and the
        kept candidates, images left out). A late candidate is judged with those, so it is kept if
        and only if it would have been kept had it come in time (for the top picker and a count
        budget): a backlog gets the share the same hour live would have had. What was forwarded
        already stays forwarded, so late arrivals can take a window past its share. A candidate
        later than the memory is judged with the other late ones of its window alone.

        late_key(item) -> a hashable source (the relay passes the device). Without it a late pane is
        judged against everything its window kept so far, in time or late, so one device's backlog
        competes with whatever other devices sent late before it. With it, a late candidate is judged
        against what its window kept in time and what it kept late of the same key only: a backlog
        gets exactly the share the same hour live would have had (top picker, count budget), whoever
        else is late. The price: several late devices together can take a window further past its
        share, each by what it would have taken in time.
        """
        if pool_limit is not None and pool_limit < 1:
            raise ValueError("pool_limit must be at least 1")
        self.budget = budget
        self.pool_limit = pool_limit
        self.pick = pick or select_top
        self.min_value = min_value
        self._windows: dict[int, list] = {}
        self._late: dict[int, list] = {}  # late panes: candidates of closed windows, by their window
        self._memory: dict[int, tuple[float, list]] = {}  # closed window -> (its k, what it kept so far)
        self.late_key = late_key
        self._late_memory: dict[int, dict] = {}  # with late_key: closed window -> key -> what it kept late
        self._memory_windows = math.ceil(lateness_s / budget.window_s) if lateness_s > 0 else 0
        self._carry = 0.0  # fractional count budget carried from closed windows
        self._late_carry = 0.0  # the same, for late panes of windows no longer remembered
        self.closed_until = -math.inf  # windows before this index are closed
        # ... and these after it, closed by a flush (`close_until(None)`) ahead of time: a flush does
        # not move closed_until, so one window far ahead (a wrong clock) cannot make every window late.
        self._flushed: set[int] = set()
        self.track_dropped = track_dropped
        self._dropped: list = []  # items of closed windows that were not kept, until drained
        self.late_kept = 0  # late candidates kept in their own window's late pane, so far
        self._judged_late: list[str] = []  # ids judged in late panes, until drained (with track_dropped)

    def window_of(self, t: float) -> int:
        return math.floor(t / self.budget.window_s)

    def offer(self, item: T) -> bool:
        """Add a candidate to its window; False if it is below min_value or left a full pool at once.

        A late candidate (its window already closed, e.g. from an agent that was offline) goes to
        its window's late pane, judged at the next `close_until` that passes the window.
        """
        if item.value < self.min_value:
            return False
        pool = self._pool_of(item.captured_at).setdefault(self.window_of(item.captured_at), [])
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
        pool = self._pool_of(captured_at).get(self.window_of(captured_at), ())
        return self.pool_limit is None or len(pool) < self.pool_limit or value > min(c.value for c in pool)

    def _pool_of(self, t: float) -> dict[int, list]:
        w = self.window_of(t)  # a window that kept something is closed, whatever closed_until says
        late = w < self.closed_until or w in self._flushed or w in self._memory
        return self._late if late else self._windows

    @property
    def pending(self) -> int:
        return sum(len(v) for v in self._windows.values()) + sum(len(v) for v in self._late.values())

    def drain_dropped(self) -> list:
        """Items of closed windows that were not kept, since the last call."""
        out, self._dropped = self._dropped, []
        return out

    def drain_late(self) -> list[str]:
        """Ids of the items judged in late panes (kept or not), since the last call (track_dropped)."""
        out, self._judged_late = self._judged_late, []
        return out

    def open_windows(self) -> list[int]:
        return sorted(self._windows)

    def late_panes(self) -> list[int]:
        return sorted(self._late)

    @property
    def remembered_windows(self) -> int:
        return len(self._memory)

    def restore(self, kept: Iterable, closed_until: float) -> None:
        """After a restart: what closed windows kept (from a journal), and the first window that was
        not closed. Late candidates are then judged as before the restart; a window's k is taken as
        its whole share (the carried fraction is not journaled)."""
        self.closed_until = max(self.closed_until, closed_until)
        if not self._memory_windows:
            return
        by_window: dict[int, list] = {}
        late: dict[int, dict] = {}
        for c in kept:
            w = self.window_of(c.captured_at)
            if self.late_key is not None and getattr(c, "late", False):
                late.setdefault(w, {}).setdefault(self.late_key(c), []).append(_Kept(c))
            else:
                by_window.setdefault(w, []).append(c)
        share = self.budget.per_window
        for w, items in by_window.items():
            if w >= self.closed_until - self._memory_windows:
                k = (math.floor(share) if share >= 1 else min(1, len(items))) if math.isfinite(share) else math.inf
                self._memory[w] = (k, [_Kept(c) for c in items])
                if w in late:
                    self._late_memory[w] = late[w]

    def close_until(self, t: float | None = None) -> list[T]:
        """Close every window, and late pane, that ends at or before capture time `t` (all when
        None); -> kept items."""
        last = math.inf if t is None else self.window_of(t)
        kept: list[T] = []
        for w in sorted(k for k in self._windows if k < last):
            pool = self._windows.pop(w)
            k, self._carry = self._allowance(self._carry)
            kept.extend(self._judge(w, k, pool, []))
            if math.isfinite(last):
                self.closed_until = max(self.closed_until, w + 1)
            else:
                self._flushed.add(w)
        if math.isfinite(last):
            self.closed_until = max(self.closed_until, last)  # empty windows before t are closed too
            self._flushed = {w for w in self._flushed if w >= self.closed_until}
        if len(self._flushed) > FLUSHED_KEPT:
            self._flushed = set(sorted(self._flushed)[-FLUSHED_KEPT:])
        for w in sorted(k for k in self._late if k < last):
            pool = self._late.pop(w)
            if w in self._memory and self.late_key is not None:
                late = self._judge_by_key(w, pool)
            elif w in self._memory:
                k, ref = self._memory[w]
                late = self._judge(w, k, pool, ref)
            else:  # forgotten (or it never closed with candidates): the late ones alone
                (k, self._late_carry), ref = self._allowance(self._late_carry), []
                late = self._judge(w, k, pool, ref)
            self.late_kept += len(late)
            if self.track_dropped:
                self._judged_late.extend(c.sample_id for c in pool)
            kept.extend(late)
        for w in [w for w in self._memory if w < self.closed_until - self._memory_windows]:
            del self._memory[w]
            self._late_memory.pop(w, None)
        return kept

    def _allowance(self, carry: float) -> tuple[float, float]:
        """-> (a window's k, the carry after it). Only the fraction carries: a quiet window does not
        bank budget for a burst."""
        allowance = self.budget.per_window + carry
        if not math.isfinite(allowance):
            return math.inf, 0.0
        return math.floor(allowance), allowance - math.floor(allowance)

    def _judge_by_key(self, w: int, pool: list) -> list:
        """A late pane of a remembered window, with late_key: each key's candidates are picked with what
        the window kept in time and what it kept late of that key -> the items of `pool` picked."""
        k, in_time = self._memory[w]
        by_key: dict = {}
        for c in pool:
            by_key.setdefault(self.late_key(c), []).append(c)
        late_kept = self._late_memory.setdefault(w, {})
        chosen: list = []
        for key, items in by_key.items():
            ref = in_time + late_kept.get(key, [])
            picked = self.pick(ref + items, k, self.budget.bytes_per_window)
            mine = {id(c) for c in items}
            chosen_here = [c for c in picked if id(c) in mine]
            # what this key keeps late so far: its earlier late picks still in the pick, and the new ones
            earlier = {id(c) for c in late_kept.get(key, [])}
            late_kept[key] = [c if isinstance(c, _Kept) else _Kept(c) for c in picked
                              if id(c) in earlier or id(c) in mine]
            if self.track_dropped:
                kept_ids = {id(c) for c in chosen_here}
                self._dropped.extend(c for c in items if id(c) not in kept_ids)
            chosen.extend(chosen_here)
        return sorted(chosen, key=lambda c: (-c.value, c.sample_id))

    def _judge(self, w: int, k: float, pool: list, ref: list) -> list:
        """Pick k of what window w kept so far (`ref`) and `pool` -> the items of `pool` picked, best
        first; the rest of `pool` is dropped. The window remembers the pick, for late ones."""
        picked = self.pick(ref + pool, k, self.budget.bytes_per_window)
        mine = {id(c) for c in pool}
        chosen = [c for c in picked if id(c) in mine]
        if self._memory_windows and (math.isfinite(self.budget.per_window)
                                     or math.isfinite(self.budget.bytes_per_window)):
            self._memory[w] = (k, [c if isinstance(c, _Kept) else _Kept(c) for c in picked])
        if self.track_dropped:
            kept_ids = {id(c) for c in chosen}
            self._dropped.extend(c for c in pool if id(c) not in kept_ids)
        return chosen

