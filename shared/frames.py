"""What a frame source gives the agent, shared by the agent's own sources and by source plug-ins.

    class MySource(Paced):                 # the stop flag, an fps cap and the counters the agent reports
        def __iter__(self): ... yield SourceFrame(image, captured_at, camera_id, index, tags)

A plug-in makes sources for `--source NAME:ARGS` specs: a callable registered under the entry-point
group `edgeloop.sources` as NAME, called as `factory(args, seed=..., start=..., max_fps=...)` and
returning such a source. The simulator registers `sim` and `scenes` this way (pyproject.toml), so the
agent reaches simulated cameras without importing the simulator.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

SOURCE_PLUGINS = "edgeloop.sources"  # the entry-point group


@dataclass(frozen=True)
class SourceFrame:
    image: np.ndarray  # (H, W, 3) uint8 BGR
    captured_at: float  # seconds since the epoch (the capture clock budgets are counted on)
    camera_id: str
    index: int
    tags: dict[str, str] = field(default_factory=dict)


class Paced:
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
