"""Frame sources: anything cv2.VideoCapture opens (file, device index, URL), and source plug-ins.

    src = open_source("video.mp4")                   # or "0", "rtsp://...", "http://cam/stream.mjpg"
    src = open_source("sim:cam-000", sim_seed=0)     # NAME:ARGS -> the plug-in NAME (see shared/frames.py)
    for frame in src: ...                             # SourceFrame(image BGR uint8, captured_at, tags)
    src.close()                                       # from another thread: ends the iteration

Frame-rate cap (`max_fps`): a live source (device, URL) keeps grabbing and skips the frames over
the cap without decoding them, so the driver's buffer never lags behind; a file or the simulated
camera, which give frames on demand, are paced instead. A live source that drops is reopened with
backoff until it comes back (or the source is closed); a file ends at its end.

Plug-ins (entry-point group `edgeloop.sources`): the simulator installs `sim:CAMERA` (the digits
world) and `scenes:CAMERA` (the detection world); the agent never imports them by name.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

from edgeloop.shared.errors import ConfigError, EdgeloopError
from edgeloop.shared.frames import SOURCE_PLUGINS, Paced, SourceFrame

__all__ = ["SourceError", "SourceFrame", "CaptureSource", "open_source"]

log = logging.getLogger(__name__)


class SourceError(EdgeloopError):
    """A frame source cannot be opened or read."""

    hint = "check the --source value: a video file, a device index, a URL, or a plug-in's NAME:ARGS (sim:CAMERA)"


class CaptureSource(Paced):
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
    name, sep, args = spec.partition(":")
    # NAME:ARGS names a plug-in; a URL (rtsp://, http://) or a Windows-style drive path does not.
    if sep and _PLUGIN_NAME.fullmatch(name) and not args.startswith("//") and not Path(spec).exists():
        return _plugin(name)(args, seed=sim_seed, start=start, max_fps=max_fps)
    return CaptureSource(spec, camera_id or "cam0", max_fps=max_fps)


_PLUGIN_NAME = re.compile(r"[a-z][a-z0-9_]{1,31}")


def _plugin(name: str):
    found = {ep.name: ep for ep in entry_points(group=SOURCE_PLUGINS)}
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise SourceError(f"no source plug-in named {name!r} (installed: {known}); "
                          "simulated cameras need the sim extra: pip install 'edgeloop[sim]'")
    return found[name].load()
