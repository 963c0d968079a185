"""The frame loop's two helper threads: capture (read, check, preprocess) and inference.

    capture = Prefetcher(source, get_runtime)      # source -> preprocessed frames, `depth` ahead
    infer = Inferrer(capture, get_runtime)         # -> the same frames with the session's raw outputs
    capture.start(); infer.start()
    item = infer.get(timeout=0.5)                  # a Captured, None (nothing yet) or END

Each hands on through a small bounded queue, so a slow consumer holds back the camera rather than
filling memory. onnxruntime and cv2 release the GIL: on a device with two cores the model runs
back to back in its thread while the frame loop decodes, scores and selects the previous frame
and the capture thread reads the next.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgeloop.shared.errors import ImageError
from edgeloop.shared.manifest import InputSpec
from edgeloop.shared.runtime import ModelRuntime, RawOutputs

from .sources import SourceFrame

END = object()  # after the source's last frame
_POLL_S = 0.2  # how often a blocked thread looks whether it was stopped


def check_frame(frame: SourceFrame) -> None:
    img = frame.image
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or not img.size:
        shape = getattr(img, "shape", None)
        raise ImageError(f"frame {frame.index}: expected an (H, W, 3) uint8 image, got {shape}")


@dataclass(eq=False)
class Captured:
    frame: SourceFrame
    batch: np.ndarray | None  # preprocessed for `spec`; None when no model was loaded yet
    spec: InputSpec | None
    error: str = ""
    raw: RawOutputs | None = None  # the inference thread's run, when it made one


def _put(q: queue.Queue, item, stopped: threading.Event) -> bool:
    """Put, waiting for room unless stopped -> whether it was put. Stopped, an item still goes in
    while there is room: the end of the source reaches a frame loop that is draining."""
    while True:
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            if stopped.is_set():
                return False


def _get(q: queue.Queue, timeout: float):
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        return None


class Prefetcher(threading.Thread):
    """Reads, checks and preprocesses frames ahead of inference, into a small bounded queue."""

    def __init__(self, source, get_runtime: Callable[[], ModelRuntime | None], depth: int = 2):
        super().__init__(name="capture", daemon=True)
        self.source, self.get_runtime = source, get_runtime
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stopped = threading.Event()
        self.error: Exception | None = None  # what ended the source, if it failed

    def run(self) -> None:
        try:
            for frame in self.source:
                if not _put(self.q, self._prepare(frame), self.stopped) or self.stopped.is_set():
                    return
        except Exception as exc:  # noqa: BLE001 - reported by the consumer, not lost in this thread
            self.error = exc
        finally:
            _put(self.q, END, self.stopped)

    def _prepare(self, frame: SourceFrame) -> Captured:
        try:
            check_frame(frame)
            rt = self.get_runtime()
            if rt is None:
                return Captured(frame, None, None)
            return Captured(frame, rt.prepare([frame.image]), rt.manifest.input)
        except ImageError as exc:
            return Captured(frame, None, None, str(exc))
        except Exception as exc:  # noqa: BLE001 - cv2 on a frame it cannot resize: a bad frame, not a crash
            return Captured(frame, None, None, f"frame {frame.index}: {exc}")

    def get(self, timeout: float):
        """-> a captured frame, None (nothing yet) or END."""
        return _get(self.q, timeout)

    def stop(self) -> None:
        self.stopped.set()
        close = getattr(self.source, "close", None)
        if close:
            close()


class Inferrer(threading.Thread):
    """Runs the active model on the prefetched frames, one queue ahead of the frame loop.

    Only the session runs here. A frame it could not run (no model yet, a model swapped in after
    its preprocessing, an error) goes on without outputs, and the frame loop infers it itself, so
    that what fails is reported where it was before."""

    def __init__(self, prefetch: Prefetcher, get_runtime: Callable[[], ModelRuntime | None], depth: int = 1):
        super().__init__(name="inference", daemon=True)
        self.prefetch, self.get_runtime = prefetch, get_runtime
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stopped = threading.Event()

    def run(self) -> None:
        while True:
            item = self.prefetch.get(_POLL_S)
            if item is None:
                if self.stopped.is_set() and not self.prefetch.is_alive():
                    return  # stopped, and the capture thread ended without an END for us
                continue
            if item is not END:
                self._infer(item)
            if not _put(self.q, item, self.stopped) or item is END:
                return

    def _infer(self, item: Captured) -> None:
        rt = self.get_runtime()
        if item.error or item.batch is None or rt is None or item.spec is not rt.manifest.input:
            return
        try:
            item.raw = rt.run(item.batch)
        except Exception:  # noqa: BLE001 - the frame loop runs it again and reports what it raises
            item.raw = None

    def get(self, timeout: float):
        """-> a captured frame (with `raw` when it was inferred), None (nothing yet) or END."""
        return _get(self.q, timeout)

    def stop(self) -> None:
        self.stopped.set()
