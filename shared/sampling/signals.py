"""Signals: each scores one prediction in [0, 1]; higher means more worth a label. Pure, no I/O.

`score(probs, sample_id, cfg)` combines the configured signals into a value (weighted sum) and the
reasons that selected it (the signals that fired: score >= 0.5).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from ..config import SignalConfig

FIRES_AT = 0.5


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


def signal(cfg: SignalConfig, probs: np.ndarray, sample_id: str, seed: int) -> float:
    match cfg.kind:
        case "least_confidence":
            return least_confidence(probs)
        case "margin":
            return margin(probs)
        case "entropy":
            return entropy(probs)
        case "confidence_band":
            return confidence_band(probs, cfg.low, cfg.high)
        case "random":
            return random_signal(sample_id, seed)
    raise ValueError(f"unknown signal {cfg.kind!r}")


def score(probs: np.ndarray, sample_id: str, signals: Sequence[SignalConfig], seed: int = 0
          ) -> tuple[float, dict[str, float], tuple[str, ...]]:
    """-> (value, scores by signal kind, reasons). value = sum(weight * score)."""
    scores = {s.kind: signal(s, probs, sample_id, seed) for s in signals}
    value = sum(s.weight * scores[s.kind] for s in signals)
    reasons = tuple(s.kind for s in signals if s.kind != "random" and scores[s.kind] >= FIRES_AT)
    if not reasons and scores:  # nothing fired: name the strongest signal
        reasons = (max(scores, key=scores.get),)
    return float(value), scores, reasons
