"""Temperature scaling (Guo et al., 2017) and expected calibration error, in plain numpy.

    fit, held = split_halves(golden.labels, golden.slices)
    t = fit_temperature(logits[fit], labels[fit])                 # one scalar T > 0
    before = expected_calibration_error(softmax(logits[held]), labels[held])
    after = expected_calibration_error(softmax(logits[held] / t), labels[held])

Dividing logits by one T > 0 never changes the argmax, so accuracy stays as it was; only the
confidence the device reads from softmax moves towards how often it is right.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

# Search T in [1/20, 20]: far wider than any sane net needs, and it keeps the bounded search finite
# when a set is separable (the NLL then keeps falling as T -> 0).
LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))


def _check(logits: np.ndarray, labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
    if logits.ndim != 2 or len(logits) == 0 or labels.shape != (len(logits),):
        raise ValueError(f"{name}: expected (N, C) scores with N >= 1 and (N,) labels, "
                         f"got {logits.shape} and {labels.shape}")
    if not np.all(np.isfinite(logits)):
        raise ValueError(f"{name}: scores must be finite")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"{name}: labels must be integers in 0..{logits.shape[1] - 1}")
    return logits, labels.astype(np.int64)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of labels (N,) under softmax(logits (N, C) / temperature)."""
    logits, labels = _check(logits, labels, "nll")
    logp = log_softmax(logits / temperature, axis=1)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """logits (N, C), labels (N,) ints -> the T > 0 minimising the NLL of softmax(logits / T).

    A bounded 1-d search over log T (so T stays positive and the problem is well scaled either side
    of 1); T > 1 softens an overconfident model, T < 1 sharpens an underconfident one.
    """
    logits, labels = _check(logits, labels, "fit_temperature")
    rows = np.arange(len(labels))

    def loss(log_t: float) -> float:
        return float(-log_softmax(logits / math.exp(log_t), axis=1)[rows, labels].mean())

    res = minimize_scalar(loss, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-4})
    return float(math.exp(res.x))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """probs (N, C), labels (N,) -> ECE in [0, 1].

    Confidence = max prob, prediction = its argmax; equal-width confidence bins (i/bins, (i+1)/bins]
    (a confidence of exactly 0 goes to the first); the sum over bins of (bin size / N) times
    |accuracy in the bin - mean confidence in the bin|.
    """
    probs, labels = _check(probs, labels, "expected_calibration_error")
    if bins < 1:
        raise ValueError(f"expected_calibration_error: bins must be >= 1, got {bins}")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    which = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    # n_b/N * |acc_b - conf_b| = |sum of correct in b - sum of conf in b| / N: no division by empty bins.
    hits = np.bincount(which, weights=correct, minlength=bins)
    confs = np.bincount(which, weights=conf, minlength=bins)
    return float(np.abs(hits - confs).sum() / len(labels))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) scores, stable for large ones."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def split_halves(labels: Sequence[int], slices: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """-> (fit indices, held-out indices): a deterministic split of a labeled set in two.

    Samples are ordered by (slice, label, index) and dealt alternately, so every (slice, class)
    group with two or more members lands in both halves and the halves differ in size by at most
    one. (Alternating within a slice alone is not enough: the simulator's golden set cycles its
    labels 0..9 within each slice, so the even positions would hold only even classes.)
    """
    labels, slices = np.asarray(labels), np.asarray(slices, dtype=object)
    if labels.shape != slices.shape or labels.ndim != 1:
        raise ValueError(f"split_halves: labels {labels.shape} and slices {slices.shape} must be (N,) alike")
    order = sorted(range(len(labels)), key=lambda i: (str(slices[i]), int(labels[i]), i))
    order = np.asarray(order, np.int64)
    return np.sort(order[0::2]), np.sort(order[1::2])
