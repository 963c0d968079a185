"""Frame sources: the simulated camera, and anything cv2.VideoCapture opens (file, device index, URL).

    src = open_source("sim:cam-000", sim_seed=0)     # or "video.mp4", "0", "rtsp://..."
    for frame in src: ...                             # SourceFrame(image BGR uint8, captured_at, tags)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from edgeloop.shared.errors import ConfigError, EdgeloopError


class SourceError(EdgeloopError):
    """A frame source cannot be opened or read."""

    hint = "check the --source value: sim:CAMERA, a video file, a device index or a URL"


@dataclass(frozen=True)
class SourceFrame:
    image: np.ndarray  # (H, W, 3) uint8 BGR
    captured_at: float  # seconds since the epoch (the capture clock budgets are counted on)
    camera_id: str
    index: int
    tags: dict[str, str] = field(default_factory=dict)


class SimSource:
    """A camera of the simulated world, from frame `start` on; tags carry the frame index for the oracle."""

    def __init__(self, camera_id: str, seed: int = 0, start: int = 0):
        from edgeloop.sim import World  # only simulated devices need the world

        self.world = World(seed=seed)
        self.camera_id = camera_id
        self.position = start

    def __iter__(self) -> Iterator[SourceFrame]:
        while True:
            f = self.world.frame(self.camera_id, self.position)
            self.position += 1
            yield SourceFrame(f.image, f.captured_at, self.camera_id, f.index, {**f.tags, "frame": str(f.index)})


class CaptureSource:
    """cv2.VideoCapture over a file, a device index or a URL."""

    def __init__(self, spec: str, camera_id: str):
        import cv2

        target: str | int = int(spec) if spec.isdigit() else spec
        self.cap = cv2.VideoCapture(target)
        if not self.cap.isOpened():
            raise SourceError(f"source {spec!r} did not open (no such file, device or stream)")
        self.camera_id = camera_id
        self.position = 0

    def __iter__(self) -> Iterator[SourceFrame]:
        while True:
            ok, img = self.cap.read()
            if not ok:
                return
            self.position += 1
            yield SourceFrame(img, time.time(), self.camera_id, self.position - 1, {})


def open_source(spec: str, camera_id: str | None = None, sim_seed: int = 0, start: int = 0):
    if not spec:
        raise ConfigError("--source is empty")
    if spec.startswith("sim:"):
        cam = spec[4:] or "cam-000"
        return SimSource(cam, seed=sim_seed, start=start)
    return CaptureSource(spec, camera_id or "cam0")
