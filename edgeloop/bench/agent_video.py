"""The video both arms of `edgeloop bench agent` run over: real photos (scikit-learn's samples, else a
busy synthetic scene), panned with sensor noise, written as MJPG in AVI so that decoding is real work."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np

FRAME_SIZE = (640, 480)  # (width, height) of the video
VIDEO_FPS = 30.0
SCENE_FRAMES = 60  # frames per pan over one photo, then the next photo
NOISE_SIGMA = 2.0  # sensor noise, so that consecutive frames are not near copies for the codec
NOISE_FIELDS = 7  # prime: never in step with SCENE_FRAMES


@functools.lru_cache(maxsize=1)
def photos() -> tuple[list[np.ndarray], str]:
    """-> (BGR uint8 photos, where they came from): scikit-learn's sample photos, else a synthetic scene."""
    try:
        from sklearn.datasets import load_sample_images

        return [np.ascontiguousarray(im[:, :, ::-1]) for im in load_sample_images().images], \
            "sklearn.datasets.load_sample_images"
    except ImportError:  # an agent install: no scikit-learn; a busy synthetic scene instead
        import cv2

        rng = np.random.default_rng(0)
        out = []
        for _ in range(2):
            img = cv2.GaussianBlur(rng.integers(0, 256, (480, 720, 3), dtype=np.uint8), (0, 0), 6)
            for _ in range(60):
                p = tuple(int(v) for v in rng.integers(0, 720, 2))
                cv2.circle(img, p, int(rng.integers(5, 60)), tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
            out.append(img)
        return out, "synthetic (scikit-learn not installed)"


def frames(n: int, seed: int = 0) -> Iterator[np.ndarray]:
    """n (480, 640, 3) uint8 BGR frames: crop windows panning over each photo in turn, with sensor noise."""
    import cv2

    w, h = FRAME_SIZE
    pics = []
    for p in photos()[0]:
        s = 1.5 * max(w / p.shape[1], h / p.shape[0])  # room to pan in both directions
        pics.append(cv2.resize(p, (math.ceil(p.shape[1] * s), math.ceil(p.shape[0] * s)),
                               interpolation=cv2.INTER_CUBIC))
    rng = np.random.default_rng(seed)
    # A few noise fields, cycled: drawing a fresh one per frame would cost more than the rest.
    noise = [np.round(rng.normal(0.0, NOISE_SIGMA, (h, w, 3))).astype(np.int16) for _ in range(NOISE_FIELDS)]
    for i in range(n):
        pic = pics[(i // SCENE_FRAMES) % len(pics)]
        t = (i % SCENE_FRAMES) / SCENE_FRAMES
        x = round((pic.shape[1] - w) * t)
        y = round((pic.shape[0] - h) * (0.5 + 0.5 * math.sin(2 * math.pi * t)))
        crop = pic[y:y + h, x:x + w].astype(np.int16) + noise[i % NOISE_FIELDS]
        yield np.clip(crop, 0, 255).astype(np.uint8)


def write_video(path: Path, n: int, keep: int = 0) -> list[np.ndarray]:
    """Write n frames to path (MJPG in AVI); -> `keep` of them, evenly spaced (e.g. to calibrate a model)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, FRAME_SIZE)
    if not writer.isOpened():
        raise click.ClickException(f"cv2.VideoWriter cannot write MJPG to {path}")
    every = max(1, n // keep) if keep else 0
    kept = []
    try:
        for i, f in enumerate(frames(n)):
            writer.write(f)
            if every and i % every == 0 and len(kept) < keep:
                kept.append(f)
    finally:
        writer.release()
    return kept
