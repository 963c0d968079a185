"""Frame sources: the simulated camera, and anything cv2.VideoCapture opens (file, device index, URL).

    src = open_source("sim:cam-000", sim_seed=0)     # or "video.mp4", "0", "rtsp://..."
    for frame in src: ...                             # SourceFrame(image BGR uint8, captured_at, tags)
    src.close()                                       # from another thread: ends the iteration

Frame-rate cap (`max_fps`): a live source (device, URL) keeps grabbing and skips the frames over
the cap without decoding them, so the driver's buffer never lags behind; a file or the simulated
camera, which give frames on demand, are paced instead. A live source that drops is reopened with
backoff until it comes back (or the source is closed); a file ends at its end.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeloop.shared.errors import ConfigError, EdgeloopError

log = logging.getLogger(__name__)


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


class _Paced:
    """Shared by the sources: the stop flag, the fps cap and its counters."""

    def __init__(self, max_fps: float):
        self.min_dt = 1.0 / max_fps if max_fps > 0 else 0.0
        self.closed = threading.Event()
        self.skipped = 0  # frames dropped by the fps cap
        self.reconnects = 0
        self.corrupt = 0  # frames the source could not decode
        self._last = -float("inf")
        self.clock = time.monotonic  # the pace is kept on this clock

    def close(self) -> None:
        self.closed.set()

    def _pace(self) -> None:
        """Wait until the next frame is due (sources that give frames on demand)."""
        if self.min_dt:
            self.closed.wait(max(0.0, self._last + self.min_dt - self.clock()))
            self._last = self.clock()

    def _due(self) -> bool:
        """Whether a live frame arriving now is due; if so it counts as taken."""
        now = self.clock()
        if now - self._last < self.min_dt:
            return False
        self._last = now
        return True


class SimSource(_Paced):
    """A camera of the simulated world, from frame `start` on; tags carry the frame index for the oracle."""

    def __init__(self, camera_id: str, seed: int = 0, start: int = 0, max_fps: float = 0.0):
        super().__init__(max_fps)
        from edgeloop.sim import World  # only simulated devices need the world

        self.world = World(seed=seed)
        self.camera_id = camera_id
        self.position = start

    def __iter__(self) -> Iterator[SourceFrame]:
        while not self.closed.is_set():
            self._pace()
            f = self.world.frame(self.camera_id, self.position)
            self.position += 1
            yield SourceFrame(f.image, f.captured_at, self.camera_id, f.index, {**f.tags, "frame": str(f.index)})


class CaptureSource(_Paced):
    """cv2.VideoCapture over a file, a device index or a URL."""

    MAX_BAD_READS = 10  # consecutive unreadable frames before a file counts as ended

    def __init__(self, spec: str, camera_id: str, max_fps: float = 0.0, reconnect: bool | None = None,
                 backoff: tuple[float, float] = (0.5, 30.0)):
        super().__init__(max_fps)
        self.spec = spec
        self.target: str | int = int(spec) if spec.isdigit() else spec
        # Devices and streams drop and come back; a file that ends has ended.
        self.live = (isinstance(self.target, int) or not Path(spec).exists()) if reconnect is None else reconnect
        self.backoff = backoff
        self.camera_id = camera_id
        self.position = 0
        self.cap = self._open()
        if self.cap is None:
            raise SourceError(f"source {spec!r} did not open (no such file, device or stream)")

    def _open(self):
        import cv2

        cap = cv2.VideoCapture(self.target)
        if cap.isOpened():
            return cap
        cap.release()
        return None

    def __iter__(self) -> Iterator[SourceFrame]:
        bad = 0
        while not self.closed.is_set():
            if self.live and self.min_dt:
                ok = self.cap.grab()
                if ok and not self._due():
                    self.skipped += 1
                    continue
                ok, img = self.cap.retrieve() if ok else (False, None)
            else:
                self._pace()
                ok, img = self.cap.read()
            if ok and img is not None:
                bad = 0
                self.position += 1
                yield SourceFrame(img, time.time(), self.camera_id, self.position - 1, {})
            elif self.live:
                self._reconnect()
            elif self._frames_left() and bad < self.MAX_BAD_READS:
                bad += 1  # a damaged frame inside the file: count it, step over it
                self.corrupt += 1
                self.position += 1
            else:
                return

    def _frames_left(self) -> bool:
        import cv2

        total = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        return total > 0 and self.cap.get(cv2.CAP_PROP_POS_FRAMES) < total - 1

    def _reconnect(self) -> None:
        """Reopen with exponential backoff until it works or the source is closed."""
        self.cap.release()
        delay = self.backoff[0]
        log.warning("source %s dropped; reconnecting", self.spec)
        while not self.closed.wait(delay):
            cap = self._open()
            if cap is not None:
                self.cap = cap
                self.reconnects += 1
                log.info("source %s is back (reconnect %d)", self.spec, self.reconnects)
                return
            delay = min(delay * 2, self.backoff[1])


def open_source(spec: str, camera_id: str | None = None, sim_seed: int = 0, start: int = 0, max_fps: float = 0.0):
    if not spec:
        raise ConfigError("--source is empty")
    if max_fps < 0:
        raise ConfigError("--max-fps must not be negative")
    if spec.startswith("sim:"):
        cam = spec[4:] or "cam-000"
        return SimSource(cam, seed=sim_seed, start=start, max_fps=max_fps)
    return CaptureSource(spec, camera_id or "cam0", max_fps=max_fps)
