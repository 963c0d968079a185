"""Near duplicates decided on demand, from a neighbour lookup (an ANN index) instead of all pairs.

`batch.near_duplicates` decides every item up front: greedy in value order, an item is a duplicate
when a kept item ranked before it lies within the threshold. That compares each kept item with all
others, N^2 / 2 distances: 10^4 items take a second, 10^6 would take hours. A k-center selection of
k items only ever asks about the few items it proposes, so `LazyDuplicates` answers the same
question for one item at a time, by the same rule applied recursively:

    duplicate(i) = some j within the threshold of i, ranked before i, is not itself a duplicate

with ranks by value, descending, then sample_id (`near_duplicates`' order: its pool is sorted by
sample_id). `anchors` (e.g. already labeled samples) rank before everything and are always kept, so
an item near one is a duplicate, as `hub/selection.py`'s `_away_from` decides. The answers equal
`near_duplicates`' whenever `near` finds every neighbour within the threshold; an approximate index
may miss one, which can only let a duplicate through, never drop an item that has no near neighbour.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any


class LazyDuplicates:
    """`is_duplicate(item)` for Candidate-like items (sample_id, value). near(item) -> sample_ids
    within the threshold (any order, may include ids outside `items`, which are ignored unless they are
    anchors)."""

    def __init__(self, items: Iterable[Any], near: Callable[[Any], Iterable[str]], anchors: Iterable[str] = ()):
        self.by_id = {it.sample_id: it for it in items}
        self.rank = {sid: (-_sortable(it.value), sid) for sid, it in self.by_id.items()}
        self.near = near
        self.anchors = frozenset(anchors)
        self.memo: dict[str, bool] = {}
        self._before: dict[str, list[str]] = {}

    def _ranked_before(self, sid: str) -> list[str] | None:
        """Neighbours ranked before `sid`, best first; None when one of them is an anchor."""
        if sid not in self._before:
            ids = set(self.near(self.by_id[sid])) - {sid}
            if ids & self.anchors:
                return None
            mine = self.rank[sid]
            self._before[sid] = sorted((j for j in ids if j in self.rank and self.rank[j] < mine), key=self.rank.get)
        return self._before[sid]

    def is_duplicate(self, item: Any) -> bool:
        sid = item.sample_id
        stack = [sid]  # explicit: a dense cluster's chain of ranks could outgrow Python's recursion
        while stack:
            cur = stack[-1]
            if cur in self.memo:
                stack.pop()
                continue
            before = self._ranked_before(cur)
            if before is None:
                self.memo[cur] = True
                stack.pop()
                continue
            verdict = False
            for j in before:
                if j not in self.memo:
                    stack.append(j)  # decide j first, then come back to cur
                    verdict = None
                    break
                if not self.memo[j]:
                    verdict = True  # a kept item ranked before it is near: a duplicate
                    break
            if verdict is not None:
                self.memo[cur] = verdict
                stack.pop()
        return self.memo[sid]


def _sortable(value: Any) -> float:
    v = float(value)
    return -math.inf if math.isnan(v) else v
