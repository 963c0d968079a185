"""Batch selectors for the relay and hub: diversity, deduplication, class balance. Pure, numpy only.

- `near_duplicates`: flag items within a cosine distance of a kept, higher-value item.
- `kcenter`: weighted greedy k-center (farthest-first) on cosine distance.
- `class_quotas`: split a count budget evenly across classes (water-filling).
- `select_diverse`: all of the above over Candidate-like items under a count and byte budget.

Cosine distance is `1 - cos(a, b)` clipped to [0, 2]; a zero vector is at distance 1 from
everything (itself included). Every function is deterministic: ties go to the lowest index.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from .duplicates import LazyDuplicates

_MIN_WEIGHT = 1e-6
_BLOCK = 1 << 22  # distances computed at once by _initial_mind (32 MB of float64)
_MAX_WEIGHT = 1e12

__all__ = ["cosine_distances", "near_duplicates", "kcenter", "class_quotas", "select_diverse"]


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings: expected a 2-D (N, D) array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings: contains NaN or infinity")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _dist_to(unit: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cosine distance of every row of `unit` to the unit (or zero) vector `y`."""
    d = unit @ y
    np.subtract(1.0, d, out=d)  # in place: at 10^6 rows each temporary is another pass over memory
    return np.clip(d, 0.0, 2.0, out=d)


def cosine_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) cosine distances between the rows of `a` (N, D) and `b` (M, D), as used here."""
    ua, ub = _normalize(a), _normalize(b)
    return np.clip(1.0 - ua @ ub.T, 0.0, 2.0)


def near_duplicates(embeddings: np.ndarray, threshold: float, values: np.ndarray) -> np.ndarray:
    """(N,) bool: True for items within cosine distance `threshold` (<=) of a kept higher-value item.

    Greedy in value order (ties by index): an item is kept unless a kept item before it is within
    the threshold, so the highest-value item of each cluster stays and no two kept items are within
    the threshold of each other. A negative threshold flags nothing.
    """
    unit = _normalize(embeddings)
    n = unit.shape[0]
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.shape[0] != n:
        raise ValueError(f"values: expected {n} values, got {values.shape[0]}")
    dup = np.zeros(n, dtype=bool)
    if n == 0 or not threshold >= 0:
        return dup
    vals = np.nan_to_num(values, nan=-np.inf)
    order = np.lexsort((np.arange(n), -vals))  # value descending, then index
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    for i in order:
        if dup[i]:
            continue  # only kept items suppress others
        # A hair of tolerance: identical vectors must count as distance 0 whatever the rounding.
        close = _dist_to(unit, unit[i]) <= threshold + 1e-9
        dup |= close & (rank > rank[i])  # items ranked before i are already decided
    return dup


def _check_weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != n:
        raise ValueError(f"weights: expected {n} weights, got {w.shape[0]}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights: expected finite non-negative weights")
    return w


def _initial_mind(unit: np.ndarray, already: np.ndarray | None) -> np.ndarray:
    n, d = unit.shape
    mind = np.full(n, np.inf)
    if already is None:
        return mind
    already = np.asarray(already)
    if already.size == 0:
        return mind
    ua = _normalize(already.reshape(-1, d) if already.ndim == 1 else already).astype(unit.dtype)
    if ua.shape[1] != d:
        raise ValueError(f"already: expected dimension {d}, got {ua.shape[1]}")
    # Blocks of rows against all of `already`: one matrix product each (10^6 x 10^3 in seconds, where
    # row by row took minutes), never the whole (N, M) matrix at once.
    step = max(1, _BLOCK // max(1, ua.shape[0]))
    for start in range(0, n, step):
        block = unit[start:start + step] @ ua.T  # float32 for k-center's float32 units: half the memory traffic
        np.minimum(mind[start:start + step], np.clip(1.0 - block.max(axis=1), 0.0, 2.0), out=mind[start:start + step])
    return mind


class _KCenter:
    """Incremental weighted farthest-first: `best()` proposes, `take()` / `drop()` decide."""

    def __init__(self, embeddings: np.ndarray, weights: np.ndarray | None, already: np.ndarray | None):
        # Normalised in float64 (float32 squares overflow from 1.8e19), kept in float32: each pick reads
        # every unit vector once, and at 10^6 x 128 that read is the selection's cost (README, bench scale).
        self.unit = _normalize(embeddings).astype(np.float32)
        n = self.unit.shape[0]
        self.w = _check_weights(weights, n)
        self.mind = _initial_mind(self.unit, already)
        self.open = np.ones(n, dtype=bool)

    def best(self) -> int | None:
        idx = np.flatnonzero(self.open)
        if idx.size == 0:
            return None
        mind = self.mind[idx]
        if np.all(np.isinf(mind)):  # nothing selected yet: the max-weight item
            score = self.w[idx]
        else:
            score = np.where(np.isinf(mind), np.inf, mind * self.w[idx])
        top = idx[score == score.max()]
        return int(top[np.argmax(self.w[top])])  # ties: higher weight, then lowest index

    def take(self, i: int) -> None:
        self.open[i] = False
        np.minimum(self.mind, _dist_to(self.unit, self.unit[i]), out=self.mind)

    def drop(self, i: int) -> None:
        self.open[i] = False


def kcenter(embeddings: np.ndarray, k: int, weights: np.ndarray | None = None,
            already: np.ndarray | None = None) -> list[int]:
    """Weighted greedy k-center on cosine distance -> at most min(k, N) distinct indices, in pick order.

    Each step picks the candidate maximising weight * (distance to the selected set), the set
    starting as `already` (M, D) (e.g. labeled samples). With `already` empty the first pick is the
    max-weight item. Ties go to the higher weight, then the lowest index.
    """
    kc = _KCenter(embeddings, weights, already)
    k = max(0, min(int(k) if math.isfinite(k) else kc.unit.shape[0], kc.unit.shape[0]))
    picks: list[int] = []
    while len(picks) < k:
        i = kc.best()
        if i is None:
            break
        kc.take(i)
        picks.append(i)
    return picks


def class_quotas(predicted: np.ndarray, k: int, num_classes: int) -> np.ndarray:
    """(num_classes,) int quotas: k split as evenly as possible over the classes present.

    Water-filling: every class gets min(count, L) for the largest level L that fits, and the
    remaining slots go one each to the lowest-index classes that still have items. The sum is
    min(k, N) and quota[c] <= count of class c.
    """
    pred = np.asarray(predicted).reshape(-1).astype(np.int64)
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted: classes must be in [0, {num_classes}), got {pred.min()}..{pred.max()}")
    counts = np.bincount(pred, minlength=num_classes).astype(np.int64)
    budget = int(min(max(int(k) if math.isfinite(k) else pred.size, 0), pred.size))
    lo, hi = 0, int(counts.max()) if counts.size else 0  # largest L with sum(min(counts, L)) <= budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if np.minimum(counts, mid).sum() <= budget:
            lo = mid
        else:
            hi = mid - 1
    quotas = np.minimum(counts, lo)
    rest = budget - int(quotas.sum())
    if rest > 0:
        more = np.flatnonzero(counts > lo)[:rest]
        quotas[more] += 1
    return quotas


def balance_classes_of(items: Sequence) -> np.ndarray:
    """(N,) int64: the class each item counts for when a budget is balanced over classes.

    A classifier's item counts for its predicted class. A detector's item (`detections`, (K, 6) rows
    x1, y1, x2, y2, score, class) counts for the rarest class among its boxes, rarest by the number of
    boxes of that class in the whole pool, so a frame with one rare object fills the rare class's quota
    however many common ones surround it; a frame with no box counts for a class of its own, one past
    the largest class present (empty scenes get a share, not the whole budget)."""
    dets = [getattr(it, "detections", None) for it in items]
    if all(d is None for d in dets):
        return np.array([int(it.predicted) for it in items], dtype=np.int64)
    box_classes = [np.asarray(d[:, 5], np.int64) if d is not None and len(d) else np.zeros(0, np.int64) for d in dets]
    everything = np.concatenate(box_classes + [np.array([int(it.predicted) for it in items], np.int64)])
    empty = int(everything.max()) + 1
    counts = np.bincount(np.concatenate(box_classes), minlength=empty)
    out = np.empty(len(items), np.int64)
    for i, (it, d, cls) in enumerate(zip(items, dets, box_classes)):
        if d is None:
            out[i] = int(it.predicted)
        elif cls.size == 0:
            out[i] = empty
        else:
            present = np.unique(cls)
            out[i] = int(present[np.argmin(counts[present])])  # ties: the lowest class id
    return out


# --- select_diverse -----------------------------------------------------------------------------

def _weight(value: Any) -> float:
    v = float(value)
    if math.isnan(v):
        return _MIN_WEIGHT
    return min(max(v, _MIN_WEIGHT), _MAX_WEIGHT)


class _Picker:
    """Ranks one group of items: weighted k-center over those with embeddings, value order for the
    rest, interleaved in proportion to the two group sizes."""

    def __init__(self, items: list, dim: int | None, already: np.ndarray | None, usable: set[int] | None = None):
        self.emb = [it for it in items if (id(it) in usable if usable is not None else _usable(it, dim))]
        emb_ids = {id(it) for it in self.emb}
        plain = [it for it in items if id(it) not in emb_ids]
        self.plain = sorted(plain, key=lambda c: (-_sortable(c.value), c.sample_id))
        self.n_emb, self.n = len(self.emb), len(items)
        self.kc = None
        if self.emb:
            x = np.stack([np.asarray(it.embedding, dtype=np.float64).reshape(-1) for it in self.emb])
            w = np.array([_weight(it.value) for it in self.emb])
            self.kc = _KCenter(x, w, already)
        self.taken_emb = 0
        self.taken = 0

    def next(self, fits) -> Any | None:
        """The next item that `fits` (a predicate), or None when the group is exhausted."""
        want_emb = self.taken_emb * self.n < (self.taken + 1) * self.n_emb  # keep the proportion
        order = (self._from_emb, self._from_plain) if want_emb else (self._from_plain, self._from_emb)
        for source in order:
            got = source(fits)
            if got is not None:
                return got
        return None

    def _from_emb(self, fits):
        if self.kc is None:
            return None
        while (i := self.kc.best()) is not None:
            item = self.emb[i]
            if fits(item):
                self.kc.take(i)
                self.taken_emb += 1
                self.taken += 1
                return item
            self.kc.drop(i)
        return None

    def _from_plain(self, fits):
        while self.plain:
            item = self.plain.pop(0)
            if fits(item):
                self.taken += 1
                return item
        return None


def _sortable(value: Any) -> float:
    v = float(value)
    return -math.inf if math.isnan(v) else v


def _usable(item: Any, dim: int | None) -> bool:
    e = getattr(item, "embedding", None)
    if e is None or dim is None:
        return False
    e = np.asarray(e)
    return e.size == dim and e.size > 0 and bool(np.isfinite(e).all())  # finite in float16/32 is finite in 64


def _choose_dim(items: list, already: np.ndarray | None) -> int | None:
    if already is not None and np.asarray(already).size:
        a = np.asarray(already)
        return int(a.shape[-1])
    dims = Counter(np.asarray(it.embedding).size for it in items if getattr(it, "embedding", None) is not None)
    dims.pop(0, None)
    if not dims:
        return None
    return min(dims, key=lambda d: (-dims[d], d))  # the most common dimension, then the smallest


def select_diverse(items: Sequence, k: float, *, max_bytes: float = math.inf, dedup_threshold: float = 0.0,
                   balance_classes: bool = False, num_classes: int | None = None,
                   already: np.ndarray | None = None, near: Callable[[Any], Iterable[str]] | None = None,
                   anchors: Iterable[str] = ()) -> list:
    """At most k items (each once) that are valuable and diverse, total nbytes <= max_bytes.

    Items are Candidate-like (`sample_id, value, nbytes, embedding, predicted`). Steps: sort by
    sample_id (so the result does not depend on input order; of equal sample_ids the highest value
    is kept); drop near-duplicates if `dedup_threshold` > 0; then weighted k-center (weight = value,
    clipped >= 1e-6; distances measured to `already` (M, D) and the picks so far). With
    `balance_classes`, each class (by `predicted`, or a detector's boxes: `balance_classes_of`) first fills its `class_quotas` share with a
    k-center inside the class (classes take turns, so a byte budget is shared fairly); slots left
    over (items that did not fit the bytes) go to a k-center over the rest. Items without a usable
    embedding (None, non-finite, or another dimension than the majority / `already`) are ranked by
    value and interleaved in proportion to their number. Items that do not fit the remaining bytes
    are skipped. Returned in pick order.

    At scale, `near` (item -> sample_ids within `dedup_threshold`, from an ANN index) replaces the
    all-pairs pass: duplicates are decided lazily for the items k-center proposes
    (duplicates.LazyDuplicates, same rule), and items near an `anchors` id are duplicates. Class quotas
    and the share of items without an embedding are then counted before removing duplicates.
    """
    k = math.floor(k) if math.isfinite(k) else len(items)
    if k <= 0 or not items:
        return []
    best: dict[str, Any] = {}
    for it in sorted(items, key=lambda c: (c.sample_id, -_sortable(c.value), c.nbytes)):
        best.setdefault(it.sample_id, it)
    pool = list(best.values())  # sorted by sample_id
    dim = _choose_dim(pool, already)
    if already is not None and np.asarray(already).size:
        already = np.asarray(already, dtype=np.float64).reshape(-1, dim)
    else:
        already = None

    usable = {id(it) for it in pool if _usable(it, dim)}  # once: at 10^6 items each check costs seconds
    lazy = None
    if dedup_threshold > 0 and near is not None:
        lazy = LazyDuplicates([it for it in pool if id(it) in usable], near, anchors)
    elif dedup_threshold > 0:
        idx = [i for i, it in enumerate(pool) if id(it) in usable]
        if idx:
            x = np.stack([np.asarray(pool[i].embedding, dtype=np.float64).reshape(-1) for i in idx])
            v = np.array([_sortable(pool[i].value) for i in idx])
            dup = near_duplicates(x, dedup_threshold, v)
            gone = {idx[j] for j in np.flatnonzero(dup)}
            pool = [it for i, it in enumerate(pool) if i not in gone]

    kept: list = []
    chosen: set[str] = set()
    used = 0.0

    def fits(item) -> bool:
        if item.sample_id in chosen or used + item.nbytes > max_bytes:
            return False
        return lazy is None or item.sample_id not in lazy.rank or not lazy.is_duplicate(item)

    def keep(item) -> None:
        nonlocal used
        kept.append(item)
        chosen.add(item.sample_id)
        used += item.nbytes

    if balance_classes and pool:
        pred = balance_classes_of(pool)
        nc = max(int(pred.max()) + 1, int(num_classes or 0))
        quotas = class_quotas(pred, k, nc)
        pickers = {c: _Picker([it for it, p in zip(pool, pred) if p == c], dim, already, usable)
                   for c in range(nc) if quotas[c] > 0}
        got = dict.fromkeys(pickers, 0)
        active = sorted(pickers)
        while active and len(kept) < k:  # classes take turns
            for c in list(active):
                item = pickers[c].next(fits)
                if item is None:
                    active.remove(c)
                    continue
                keep(item)
                got[c] += 1
                if got[c] >= quotas[c]:
                    active.remove(c)
                if len(kept) >= k:
                    break

    if len(kept) < k:
        rest = [it for it in pool if it.sample_id not in chosen]
        picked = [np.asarray(it.embedding, dtype=np.float64).reshape(-1) for it in kept if id(it) in usable]
        base = already
        if picked:
            base = np.vstack(([already] if already is not None else []) + [np.stack(picked)])
        picker = _Picker(rest, dim, base, usable)
        while len(kept) < k:
            item = picker.next(fits)
            if item is None:
                break
            keep(item)
    return kept
