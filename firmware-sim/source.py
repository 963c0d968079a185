"""The simulated cameras as agent source plug-ins (entry-point group `edgeloop.sources`, pyproject.toml).

    edgeloop agent run --source sim:cam-001 ...                     # the digits world, 1 frame a second
    edgeloop agent run --source 'scenes:cam-001?fps=5&size=320x240'  # the scenes world (detection)
    edgeloop agent run --source 'sim:cam-001?clock=-3600' ...        # a camera whose clock is an hour behind
    edgeloop agent run --source 'sim:cam-001?every=10' ...           # a frame every 10 s of capture time
    edgeloop agent run --max-fps 2 --source 'sim:cam-001?wall=1780000000' ...  # frames keep wall-clock pace

Tags carry the frame index (`frame`) so the simulated labeler can answer from the ground truth;
a camera resumes at `start` (the agent's cursor), so a restarted agent does not replay frames.
With `wall=T` (a Unix time) a camera keeps the wall clock's pace as a real one does: frame k is due
at T + k / max_fps, and an agent that was down resumes at the frame due now, not at its cursor (the
frames it missed were never seen). Without it a restarted camera falls behind its site for good.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from urllib.parse import parse_qsl

from edgeloop.shared.errors import ConfigError
from edgeloop.shared.frames import Paced, SourceFrame

SCENES_OPTIONS = {"fps": float, "size": str, "day_seconds": float}
CLOCK_OPTION = "clock"  # seconds the camera's clock is off (capture times say so; the frames do not change)
EVERY_OPTION = "every"  # seconds of capture time between frames (default: the world's, 1 s)
WALL_OPTION = "wall"  # Unix time of frame 0: frames keep the wall clock's pace (needs max_fps)


class WorldSource(Paced):
    """Frames `start`, `start + 1`, ... of one camera of a world, each a pure function of its index."""

    def __init__(self, world, camera_id: str, start: int = 0, max_fps: float = 0.0, clock: float = 0.0,
                 every: float | None = None, wall: float | None = None):
        super().__init__(max_fps)
        self.world, self.camera_id, self.position, self.clock_offset = world, camera_id, start, clock
        if every is not None and every <= 0:
            raise ConfigError(f"--source: every={every:g}: seconds between frames must be positive")
        if wall is not None and max_fps <= 0:
            raise ConfigError(f"--source: wall={wall:g} keeps the wall clock's pace at --max-fps, which is not set")
        self.every, self.wall = every, wall
        self.wall_clock = time.time  # the clock `wall` is on

    def __iter__(self) -> Iterator[SourceFrame]:
        while not self.closed.is_set():
            if self.wall is None:
                self._pace()
            elif not self._keep_wall_pace():
                return
            f = self.world.frame(self.camera_id, self.position)
            self.position += 1
            at = f.captured_at if self.every is None else self.world.epoch + (self.position - 1) * self.every
            yield SourceFrame(f.image, at + self.clock_offset, self.camera_id, self.position - 1,
                              {**f.tags, "frame": str(self.position - 1)})


    def _keep_wall_pace(self) -> bool:
        """Skip the frames that passed while nobody watched, then wait for the next one -> False if closed."""
        due = math.floor((self.wall_clock() - self.wall) * (1.0 / self.min_dt))
        if due > self.position:
            self.skipped += due - self.position
            self.position = due
        return not self.closed.wait(max(0.0, self.wall + self.position * self.min_dt - self.wall_clock()))


def _options(args: str, known: dict, kind: str) -> tuple[str, dict]:
    """'CAMERA?key=value&...' -> (camera, {key: typed value}); ConfigError naming what is wrong."""
    camera, _, query = args.partition("?")
    options = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)) if query else []:
        if key not in known:
            raise ConfigError(f"--source {kind}:{args}: unknown option {key!r} (known: {', '.join(known)})")
        try:
            options[key] = known[key](value)
        except ValueError as exc:
            raise ConfigError(f"--source {kind}:{args}: {key}={value!r} is not a number") from exc
    return camera or "cam-000", options


def digits_source(args: str, seed: int = 0, start: int = 0, max_fps: float = 0.0) -> WorldSource:
    """`sim:CAMERA[?clock=SECONDS&every=SECONDS&wall=UNIX_TIME]`: a camera of the digits world (classification)."""
    from .world import World

    camera, options = _options(args, {CLOCK_OPTION: float, EVERY_OPTION: float, WALL_OPTION: float}, "sim")
    return WorldSource(World(seed=seed), camera, start, max_fps, **options)


def scenes_source(args: str, seed: int = 0, start: int = 0, max_fps: float = 0.0) -> WorldSource:
    """`scenes:CAMERA[?fps=5&size=320x240&day_seconds=600&clock=SECONDS&wall=UNIX_TIME]`: a camera of the
    scenes world (detection)."""
    from .scenes import ScenesWorld

    camera, options = _options(args, {**SCENES_OPTIONS, CLOCK_OPTION: float, WALL_OPTION: float}, "scenes")
    clock, wall = options.pop(CLOCK_OPTION, 0.0), options.pop(WALL_OPTION, None)
    if "size" in options:
        options["size"] = parse_size(options["size"], f"--source scenes:{args}")
    return WorldSource(ScenesWorld(seed=seed, **options), camera, start, max_fps, clock, wall=wall)


def parse_size(text: str, where: str) -> tuple[int, int]:
    """'320x240' -> (320, 240)."""
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise ConfigError(f"{where}: size must be WIDTHxHEIGHT such as 320x240, got {text!r}")
    return int(w), int(h)
