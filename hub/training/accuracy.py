"""A classifier's accuracy, overall and per slice, measured on the deployed artifact (onnxruntime).

Torch-free: the hub judges every model with this, whoever trained it."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgeloop.shared.runtime import ModelRuntime


def evaluate(runtime: ModelRuntime, images: np.ndarray, labels: np.ndarray, slices: Sequence[str],
             batch: int = 256) -> dict:
    """Accuracy of the deployed artifact (onnxruntime, not torch) overall and per slice.

    images (N, H, W, 3) uint8 BGR, labels (N,) ints, slices (N,) names such as "day"/"dusk"/"night".
    -> {"accuracy": float, "n": int, "per_slice": {slice: accuracy}, "per_slice_n": {slice: n}}
    """
    labels, slices = np.asarray(labels), np.asarray(slices, dtype=object)
    n = len(images)
    if n == 0:
        raise ValueError("evaluate: no images")
    if labels.shape != (n,) or slices.shape != (n,):
        raise ValueError(f"evaluate: {n} images but labels {labels.shape} and slices {slices.shape}")
    pred = np.concatenate([[p.label for p in runtime.predict_batch(images[i:i + batch])] for i in range(0, n, batch)])
    correct = pred == labels
    names = sorted(set(slices.tolist()))
    return {
        "accuracy": float(correct.mean()),
        "n": n,
        "per_slice": {s: float(correct[slices == s].mean()) for s in names},
        "per_slice_n": {s: int((slices == s).sum()) for s in names},
    }
