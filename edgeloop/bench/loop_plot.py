"""The loop benchmark's figure: accuracy vs labels, mean +- std band per arm (edgeloop/bench/loop.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


COLORS = {"random": (0.5, 0.5, 0.5), "threshold": (0.85, 0.55, 0.1), "central": (0.15, 0.35, 0.8),
          "edgeloop": (0.1, 0.6, 0.25), "oracle": (0.6, 0.2, 0.6),
          "every_nth": (0.55, 0.35, 0.2)}  # RGB in 0..1


def plot(report: dict, path: Path, metric: str = "accuracy") -> str:
    """`metric` (golden-set accuracy, or mAP@0.5: the arms' accuracy_mean / accuracy_std) vs labels,
    mean ± std band per arm -> path (PNG). matplotlib if present, else cv2."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _plot_cv2(report, path, metric=metric)
        return "cv2"
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for name, a in report["arms"].items():
        x, m, s = np.array(a["labels_used"]), np.array(a["accuracy_mean"]), np.array(a["accuracy_std"])
        ax.plot(x, m, marker="o", label=name, color=COLORS.get(name))
        ax.fill_between(x, m - s, m + s, alpha=0.2, color=COLORS.get(name))
    ax.axhline(report["target"], ls="--", color="k", lw=0.8, label=f"target {report['target']:.3f}")
    ax.set_xlabel("labels spent (cumulative, incl. seed set)")
    ax.set_ylabel(f"golden-set {metric}")
    ax.set_title(f"edgeloop bench loop: {metric} vs labels")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return "matplotlib"


def _nice_step(span: float, n: int = 6) -> float:
    raw = span / max(1, n)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _plot_cv2(report: dict, path: Path, size: tuple[int, int] = (960, 600), metric: str = "accuracy") -> None:
    import cv2

    W, H = size
    left, right, top, bottom = 80, 170, 50, 60
    img = np.full((H, W, 3), 255, np.uint8)
    arms = report["arms"]
    xs = [x for a in arms.values() for x in a["labels_used"]]
    lo = min(min(np.subtract(a["accuracy_mean"], a["accuracy_std"])) for a in arms.values())
    hi = max(max(np.add(a["accuracy_mean"], a["accuracy_std"])) for a in arms.values())
    lo, hi = min(lo, report["target"]), max(hi, report["target"])
    ystep = _nice_step(max(hi - lo, 0.05))
    y0, y1 = math.floor(lo / ystep) * ystep, math.ceil(hi / ystep) * ystep
    if y1 <= y0:  # a flat curve on a tick (every arm at 0): give the axis one step
        y1 = y0 + ystep
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x1 = x0 + 1
    xstep = _nice_step(x1 - x0)

    def px(x, y):
        return (int(round(left + (x - x0) / (x1 - x0) * (W - left - right))),
                int(round(H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom))))

    font, grey = cv2.FONT_HERSHEY_SIMPLEX, (200, 200, 200)
    # grid and ticks
    v = y0
    while v <= y1 + 1e-9:
        p = px(x0, v)
        cv2.line(img, (left, p[1]), (W - right, p[1]), grey, 1)
        cv2.putText(img, f"{v:.2f}", (left - 55, p[1] + 5), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        v += ystep
    v = math.ceil(x0 / xstep) * xstep
    while v <= x1 + 1e-9:
        p = px(v, y0)
        cv2.line(img, (p[0], top), (p[0], H - bottom), grey, 1)
        cv2.putText(img, f"{v:g}", (p[0] - 15, H - bottom + 20), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        v += xstep
    cv2.rectangle(img, (left, top), (W - right, H - bottom), (0, 0, 0), 1)
    # std bands (translucent), then mean lines with markers
    overlay = img.copy()
    for name, a in arms.items():
        bgr = tuple(int(255 * c) for c in reversed(COLORS.get(name, (0, 0, 0))))
        m, s = np.array(a["accuracy_mean"]), np.array(a["accuracy_std"])
        upper = [px(x, y) for x, y in zip(a["labels_used"], m + s)]
        lower = [px(x, y) for x, y in zip(a["labels_used"], m - s)]
        cv2.fillPoly(overlay, [np.array(upper + lower[::-1], np.int32)], bgr)
    img = cv2.addWeighted(overlay, 0.2, img, 0.8, 0)
    tp = px(x0, report["target"])[1]
    for xa in range(left, W - right, 12):  # dashed target line
        cv2.line(img, (xa, tp), (min(xa + 6, W - right), tp), (0, 0, 0), 1)
    for i, (name, a) in enumerate(arms.items()):
        bgr = tuple(int(255 * c) for c in reversed(COLORS.get(name, (0, 0, 0))))
        pts = [px(x, y) for x, y in zip(a["labels_used"], a["accuracy_mean"])]
        cv2.polylines(img, [np.array(pts, np.int32)], False, bgr, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 4, bgr, -1, cv2.LINE_AA)
        ly = top + 20 + 24 * i
        cv2.line(img, (W - right + 12, ly), (W - right + 40, ly), bgr, 3)
        cv2.putText(img, name, (W - right + 46, ly + 5), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    ly = top + 20 + 24 * len(arms)
    cv2.line(img, (W - right + 12, ly), (W - right + 40, ly), (0, 0, 0), 1)
    cv2.putText(img, f"target {report['target']:.3f}", (W - right + 46, ly + 5), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"edgeloop bench loop: {metric} vs labels (mean +- std over seeds)", (left, 30), font, 0.6,
                (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "labels spent (cumulative, incl. seed set)", (left + 200, H - 15), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, metric, (5, top - 15), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")
