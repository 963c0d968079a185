"""Signals: each scores one observation in [0, 1]; higher means more worth a label. Pure, no I/O.

    obs = Observation(sample_id, pred.probs, embedding=pred.embedding, tags=frame.tags,
                      captured_at=frame.captured_at, index=frame.index)
    value, scores, reasons = score(obs, cfg.sampling.signals, cfg.sampling.seed, context, state)

`value` is sum(weight * score). `scores` maps each signal's name (its kind, or `metadata:{tag}`) to
its score. `reasons` name the signals that fired (score >= FIRES_AT = 0.5), in config order, some
with a suffix (`rare_class:3`, `metadata:zone=dock`); `random` is never a reason on its own. When
nothing fired, the strongest signal's name is the reason, so every kept candidate has one.

What each kind scores (every score is >= 0.5 exactly when the "fires" column holds):

    kind              fires when                                          scores 0 when
    random            a uniform draw fixed by (seed, sample_id) >= 0.5    never (but it is no reason)
    every_nth         index % n == 0                                      index unknown (None)
    interval          first frame >= interval_s of capture time after     no state
                      the last firing (and the first frame of a state)
    least_confidence  graded: 1 - max p (rescaled), see below             detector with no detections
    margin            graded: 1 - (p1 - p2)                               detector with no detections
    entropy           graded: entropy / log C                             detector with no detections
    confidence_band   top p in [low, high]                                detector with no detections
    close_to_threshold  at least min_count (default 1) detection scores     classifier, or no detection in
                      in [low, high]; graded by the count                 the band
    rare_class        predicted class's share of the training counts      no counts, or the class is not
                      <= max_share                                        among them
    detection_count   at least min_count detections                       classifier (no detections array)
    novelty           cosine distance to the nearest remembered           no embedding, or no state
                      embedding >= min_distance; 1 when nothing is
                      remembered yet
    metadata          tags[tag] is one of values                          tag missing or another value

Detectors (`Observation.detections` is an (N, 6) array, possibly empty): the uncertainty kinds read
the detection scores instead of `probs`, each score s as the binary prediction (s, 1 - s), and by
default the most uncertain detection decides (`aggregate = "max"`; `"mean"` averages over the boxes):
least_confidence = margin = 1 - |2s - 1|, entropy = H(s) / log 2; confidence_band = 1 when any
detection score lies in [low, high]. No detection: 0. `close_to_threshold` counts the boxes whose
score lies in [low, high] (Roboflow's close_to_threshold: threshold ± epsilon, with a minimum count
of objects): it fires from `min_count` such boxes on, graded count / (2 min_count).
`rare_class` takes the rarest detected class; `detection_count` counts every row it is given (the
detector's own score threshold has already been applied).

State: a `SignalState` is one agent's streaming memory. `score` advances its interval clock when the
interval signal fires; it never changes the novelty memory: the agent calls `state.remember(emb)`
for each candidate it commits. Relays and the hub score without a state (they see what agents kept,
out of capture order), so `interval` and `novelty` score 0 there, and so does `every_nth`, as their
candidates carry no frame index.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ..config import SignalConfig

FIRES_AT = 0.5
_BELOW = math.nextafter(FIRES_AT, 0.0)  # the largest score that does not fire


# --- inputs -------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)  # eq=False: arrays have no truth value, an Observation is not a key
class Observation:
    """What one frame tells the signals. Shapes are checked on construction."""

    sample_id: str
    probs: np.ndarray  # (C,) class probabilities (for a detector: the image-level class mix)
    embedding: np.ndarray | None = None  # (D,) L2-normalised, the model's output or an image descriptor
    detections: np.ndarray | None = None  # (N, 6) x1, y1, x2, y2, score, class; None for a classifier
    tags: Mapping[str, str] = field(default_factory=dict)
    captured_at: float = 0.0  # capture clock, seconds
    index: int | None = None  # frame number on its camera; None where unknown (relay, hub)

    def __post_init__(self):
        probs = np.asarray(self.probs)
        if probs.ndim != 1 or probs.shape[0] < 1:
            raise ValueError(f"observation.probs: expected a (C,) vector with C >= 1, got shape {probs.shape}")
        object.__setattr__(self, "probs", probs)
        if self.embedding is not None:
            emb = np.asarray(self.embedding)
            if emb.ndim != 1 or emb.shape[0] < 1:
                raise ValueError(f"observation.embedding: expected a (D,) vector, got shape {emb.shape}")
            object.__setattr__(self, "embedding", emb)
        if self.detections is not None:
            det = np.asarray(self.detections)
            if det.ndim != 2 or det.shape[1] != 6:
                raise ValueError("observation.detections: expected (N, 6) rows x1, y1, x2, y2, score, class, "
                                 f"got shape {det.shape}")
            object.__setattr__(self, "detections", det)

    @classmethod
    def from_candidate(cls, c: Any) -> Observation:
        """From anything shaped like a protocol Candidate (sample_id, probs, embedding, tags,
        captured_at; `detections` and `index` when it has them). The embedding becomes float32."""
        emb = getattr(c, "embedding", None)
        return cls(sample_id=c.sample_id, probs=np.asarray(c.probs),
                   embedding=None if emb is None else np.asarray(emb, np.float32),
                   detections=getattr(c, "detections", None), tags=dict(getattr(c, "tags", None) or {}),
                   captured_at=float(c.captured_at), index=getattr(c, "index", None))


@dataclass(frozen=True)
class SignalContext:
    """What the active model tells the signals: its training class counts (from the manifest)."""

    class_counts: tuple[int, ...] = ()

    def __post_init__(self):
        counts = tuple(int(n) for n in self.class_counts)
        if any(n < 0 for n in counts):
            raise ValueError("context.class_counts: counts must not be negative")
        object.__setattr__(self, "class_counts", counts)

    @classmethod
    def from_manifest(cls, manifest: Any) -> SignalContext:
        return cls(class_counts=tuple(getattr(manifest, "class_counts", ()) or ()))

    @cached_property
    def shares(self) -> np.ndarray | None:
        """(C,) each class's share of the training set; None when there are no counts."""
        total = sum(self.class_counts)
        return None if total == 0 else np.asarray(self.class_counts, np.float64) / total


class SignalState:
    """One agent's streaming memory for the stateful signals. Deterministic, no I/O.

    - novelty: a ring of the last `memory` embeddings the agent kept (`remember`), stored as unit
      float32 vectors. An embedding of another size than those remembered restarts the ring.
    - interval: the capture time the interval signal last fired (`last_fired_at`).
    """

    def __init__(self, memory: int = 256):
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < 1:
            raise ValueError(f"memory: expected an integer >= 1, got {memory!r}")
        self.memory = memory
        self.last_fired_at: float | None = None
        self._ring: np.ndarray | None = None  # (memory, D)
        self._added = 0  # embeddings remembered since the last forget(); the ring holds the last `memory`

    @classmethod
    def for_signals(cls, signals: Sequence[SignalConfig]) -> SignalState:
        """A state sized for the configured novelty signal (its `memory`), else the default size."""
        sizes = [s.memory for s in signals if s.kind == "novelty"]
        return cls(memory=max(sizes)) if sizes else cls()

    def __len__(self) -> int:
        return min(self._added, self.memory)

    def remember(self, embedding: np.ndarray | None) -> None:
        """Add a kept candidate's embedding (D,); the oldest is dropped when the ring is full.
        None, a zero vector or one with non-finite values is ignored."""
        unit = _unit_vector(embedding)
        if unit is None:
            return
        if self._ring is None or self._ring.shape[1] != unit.shape[0]:
            self._ring = np.zeros((self.memory, unit.shape[0]), np.float32)
            self._added = 0
        self._ring[self._added % self.memory] = unit
        self._added += 1

    def forget(self) -> None:
        """Clear the novelty memory: embeddings of another model are not comparable (call on a model
        swap). The interval clock is kept."""
        self._ring, self._added = None, 0

    def remembered(self, last: int | None = None) -> np.ndarray:
        """(K, D) the last `last` (default all) remembered unit embeddings, oldest first."""
        k = len(self) if last is None else max(0, min(last, len(self)))
        if self._ring is None or k == 0:
            return np.zeros((0, 0 if self._ring is None else self._ring.shape[1]), np.float32)
        rows = (self._added - k + np.arange(k)) % self.memory
        return self._ring[rows].copy()

    def nearest_distance(self, embedding: np.ndarray | None, last: int | None = None) -> float | None:
        """Cosine distance in [0, 2] from `embedding` to the nearest of the last `last` remembered
        embeddings; None when nothing comparable is remembered (empty, or another size) or the
        embedding is unusable."""
        unit = _unit_vector(embedding)
        mem = self.remembered(last)
        if unit is None or mem.shape[0] == 0 or mem.shape[1] != unit.shape[0]:
            return None
        return float(np.clip(1.0 - float(np.max(mem @ unit)), 0.0, 2.0))

    def interval_fires(self, captured_at: float, interval_s: float) -> bool:
        """True (and restart the interval) for the first frame at least interval_s after the last
        firing, or the first frame seen. A clock that steps back restarts the interval too, so that
        an NTP step or a camera reset cannot silence the signal for hours."""
        if not math.isfinite(captured_at):
            return False
        last = self.last_fired_at
        if last is None or captured_at - last >= interval_s or captured_at < last:
            self.last_fired_at = captured_at
            return True
        return False


def _unit_vector(embedding: np.ndarray | None) -> np.ndarray | None:
    if embedding is None:
        return None
    v = np.asarray(embedding, np.float64).ravel()  # float64: float32 squares overflow from 1.8e19 on
    if v.size == 0 or not np.all(np.isfinite(v)):
        return None
    norm = float(np.linalg.norm(v))
    return None if not math.isfinite(norm) or norm == 0.0 else (v / norm).astype(np.float32)


# --- classifier uncertainty (probs) -------------------------------------------------------------

def least_confidence(probs: np.ndarray) -> float:
    """1 - max p, rescaled so that a uniform prediction scores 1."""
    c = len(probs)
    return float((1.0 - np.max(probs)) * c / (c - 1)) if c > 1 else 0.0


def margin(probs: np.ndarray) -> float:
    """1 - (p1 - p2): close to 1 when the top two classes are nearly tied."""
    if len(probs) < 2:
        return 0.0
    top2 = np.partition(probs, -2)[-2:]
    return float(1.0 - (top2[1] - top2[0]))


def entropy(probs: np.ndarray) -> float:
    """Shannon entropy normalised by log(C)."""
    c = len(probs)
    if c < 2:
        return 0.0
    p = np.clip(probs.astype(np.float64), 1e-12, 1.0)
    return float(min(1.0, -(p * np.log(p)).sum() / np.log(c)))


def confidence_band(probs: np.ndarray, low: float, high: float) -> float:
    """1 when the top confidence lies in [low, high] (close to the decision threshold), else 0."""
    return 1.0 if low <= float(np.max(probs)) <= high else 0.0


def random_signal(sample_id: str, seed: int) -> float:
    """A uniform draw fixed by (seed, sample_id): deterministic, independent of arrival order."""
    return (zlib.crc32(f"{seed}:{sample_id}".encode()) & 0xFFFFFFFF) / 0xFFFFFFFF


# --- detector uncertainty (detection scores) ----------------------------------------------------

def detection_uncertainty(det_scores: np.ndarray, kind: str, low: float = 0.35, high: float = 0.65,
                          aggregate: str = "max") -> float:
    """det_scores (N,) -> one frame's score for an uncertainty `kind`, each detection read as the binary
    prediction (s, 1 - s), aggregated over the detections ("max": the most uncertain one, "mean");
    0 for no detection."""
    s = np.asarray(det_scores, np.float64).ravel()
    s = s[np.isfinite(s)]
    if s.size == 0:
        return 0.0
    if kind == "confidence_band":
        return 1.0 if bool(np.any((s >= low) & (s <= high))) else 0.0
    s = np.clip(s, 0.0, 1.0)
    if kind in ("least_confidence", "margin"):  # both are 1 - |2s - 1| for two classes
        per_box = 1.0 - np.abs(2.0 * s - 1.0)
    elif kind == "entropy":
        p = np.clip(s, 1e-12, 1.0 - 1e-12)
        per_box = np.minimum(1.0, -(p * np.log(p) + (1 - p) * np.log(1 - p)) / math.log(2.0))
    else:
        raise ValueError(f"{kind!r} is not an uncertainty signal")
    return float(np.mean(per_box) if aggregate == "mean" else np.max(per_box))


def close_to_threshold(det_scores: np.ndarray, low: float, high: float, min_count: int) -> float:
    """det_scores (N,) -> graded count of the boxes scoring within [low, high]: fires (>= 0.5) from
    min_count boxes on, 1 at twice as many."""
    s = np.asarray(det_scores, np.float64).ravel()
    n = int(np.count_nonzero(np.isfinite(s) & (s >= low) & (s <= high)))
    return _graded(n >= min_count, n / (2.0 * min_count)) if n else 0.0


# --- scoring ------------------------------------------------------------------------------------

def _graded(fires: bool, value: float) -> float:
    """value in [0, 1], pinned to the right side of FIRES_AT, so that rounding can never move a
    signal across its threshold."""
    value = min(max(value, 0.0), 1.0)
    return max(value, FIRES_AT) if fires else min(value, _BELOW)


def _rare_class(obs: Observation, context: SignalContext | None, max_share: float) -> tuple[float, str]:
    shares = None if context is None else context.shares
    if shares is None:
        return 0.0, "rare_class"
    if obs.detections is None:
        if len(obs.probs) != len(shares):  # counts of another model
            return 0.0, "rare_class"
        classes = np.array([int(np.argmax(obs.probs))])
    else:
        c = np.asarray(obs.detections[:, 5], np.float64)
        c = c[np.isfinite(c) & (c >= 0) & (c < len(shares)) & (c == np.floor(c))]
        classes = np.unique(c.astype(np.int64))  # sorted: the lowest index wins a tie in share
    if classes.size == 0:
        return 0.0, "rare_class"
    cls = int(classes[np.argmin(shares[classes])])
    share = float(shares[cls])
    fires = share <= max_share
    # Linear from 1 (never seen in training) through 0.5 (share == max_share) to 0 (the only class).
    value = 1.0 - 0.5 * share / max_share if fires else 0.5 * (1.0 - share) / (1.0 - max_share)
    return _graded(fires, value), f"rare_class:{cls}"


def _novelty(obs: Observation, state: SignalState | None, min_distance: float, memory: int) -> float:
    if state is None or _unit_vector(obs.embedding) is None:
        return 0.0
    d = state.nearest_distance(obs.embedding, last=memory)
    if d is None:  # nothing comparable remembered yet: everything is new
        return 1.0
    fires = d >= min_distance
    if fires:
        value = 1.0 if min_distance >= 2.0 else 0.5 + 0.5 * (d - min_distance) / (2.0 - min_distance)
    else:
        value = 0.5 * d / min_distance
    return _graded(fires, value)


def signal(cfg: SignalConfig, obs: Observation, seed: int = 0, context: SignalContext | None = None,
           state: SignalState | None = None) -> tuple[float, str]:
    """One signal -> (score in [0, 1], the reason it gives if it fires). May advance `state`'s
    interval clock (see the module docstring)."""
    kind = cfg.kind
    reason = cfg.name
    match kind:
        case "random":
            s = random_signal(obs.sample_id, seed)
        case "least_confidence" | "margin" | "entropy" | "confidence_band" if obs.detections is not None:
            s = detection_uncertainty(obs.detections[:, 4], kind, cfg.low, cfg.high, cfg.aggregate)
        case "close_to_threshold":
            s = 0.0 if obs.detections is None else close_to_threshold(obs.detections[:, 4], cfg.low, cfg.high,
                                                                       cfg.min_count or 1)
        case "least_confidence":
            s = least_confidence(obs.probs)
        case "margin":
            s = margin(obs.probs)
        case "entropy":
            s = entropy(obs.probs)
        case "confidence_band":
            s = confidence_band(obs.probs, cfg.low, cfg.high)
        case "every_nth":
            s = 1.0 if obs.index is not None and obs.index % cfg.n == 0 else 0.0
        case "interval":
            s = 1.0 if state is not None and state.interval_fires(float(obs.captured_at), cfg.interval_s) else 0.0
        case "rare_class":
            s, reason = _rare_class(obs, context, cfg.max_share)
        case "detection_count":
            n = 0 if obs.detections is None else obs.detections.shape[0]
            s = 0.0 if obs.detections is None else _graded(n >= cfg.min_count, n / (2.0 * cfg.min_count))
        case "novelty":
            s = _novelty(obs, state, cfg.min_distance, cfg.memory)
        case "metadata":
            value = obs.tags.get(cfg.tag)
            s = 1.0 if value in cfg.values else 0.0
            if s:
                reason = f"metadata:{cfg.tag}={value}"
        case _:
            raise ValueError(f"unknown signal {kind!r}")
    s = float(s)
    return (min(s, 1.0) if s >= 0.0 else 0.0), reason  # NaN from a broken model scores 0


def score(obs: Observation, signals: Sequence[SignalConfig], seed: int = 0,
          context: SignalContext | None = None, state: SignalState | None = None
          ) -> tuple[float, dict[str, float], tuple[str, ...]]:
    """-> (value, scores by signal name, reasons). value = sum(weight * score); see the module
    docstring for the reasons, and for what `state` is needed by and how it changes."""
    scores: dict[str, float] = {}
    reasons: list[str] = []
    value = 0.0
    for cfg in signals:
        s, reason = signal(cfg, obs, seed, context, state)
        scores[cfg.name] = s
        value += cfg.weight * s
        if cfg.kind != "random" and s >= FIRES_AT:
            reasons.append(reason)
    if not reasons and scores:  # nothing fired: name the strongest signal
        reasons = [max(scores, key=scores.get)]
    return float(value), scores, tuple(reasons)


def uncertainty_values(probs: np.ndarray, signals: Sequence[SignalConfig]) -> np.ndarray:
    """(N,) values of `score` for N classifier predictions `probs` (N, C) at once, bit for bit the
    same as calling `score` on each row (same dtype arithmetic), for signals of the kinds
    least_confidence and margin only (the hub's uncertainty: 10^6 rows would take a minute one by one).
    ValueError for any other kind."""
    p = np.asarray(probs)
    if p.ndim != 2:
        raise ValueError(f"probs: expected (N, C), got shape {p.shape}")
    n, c = p.shape
    value = np.zeros(n, np.float64)
    for cfg in signals:
        if cfg.kind == "least_confidence":
            s = (1.0 - p.max(axis=1)) * c / (c - 1) if c > 1 else np.zeros(n)
        elif cfg.kind == "margin":
            top2 = np.partition(p, -2, axis=1)[:, -2:] if c > 1 else None
            s = 1.0 - (top2[:, 1] - top2[:, 0]) if c > 1 else np.zeros(n)
        else:
            raise ValueError(f"uncertainty_values: {cfg.kind!r} is not a batch signal")
        s = np.asarray(s).astype(np.float64)
        s = np.where(s >= 0.0, np.minimum(s, 1.0), 0.0)  # as `signal`: NaN scores 0
        value += cfg.weight * s
    return value

