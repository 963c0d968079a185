"""The simulated cameras as agent source plug-ins (entry-point group `edgeloop.sources`, pyproject.toml).

    edgeloop agent run --source sim:cam-001 ...                     # the digits world, 1 frame a second
    edgeloop agent run --source 'scenes:cam-001?fps=5&size=320x240'  # the scenes world (detection)

Tags carry the frame index (`frame`) so the simulated labeler can answer from the ground truth;
a camera resumes at `start` (the agent's cursor), so a restarted agent does not replay frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qsl

from edgeloop.shared.errors import ConfigError
from edgeloop.shared.frames import Paced, SourceFrame

SCENES_OPTIONS = {"fps": float, "size": str, "day_seconds": float}


class WorldSource(Paced):
    """Frames `start`, `start + 1`, ... of one camera of a world, each a pure function of its index."""

    def __init__(self, world, camera_id: str, start: int = 0, max_fps: float = 0.0):
        super().__init__(max_fps)
        self.world, self.camera_id, self.position = world, camera_id, start

    def __iter__(self) -> Iterator[SourceFrame]:
        while not self.closed.is_set():
            self._pace()
            f = self.world.frame(self.camera_id, self.position)
            self.position += 1
            yield SourceFrame(f.image, f.captured_at, self.camera_id, self.position - 1,
                              {**f.tags, "frame": str(self.position - 1)})


def digits_source(args: str, seed: int = 0, start: int = 0, max_fps: float = 0.0) -> WorldSource:
    """`sim:CAMERA`: a camera of the digits world (classification)."""
    from .world import World

    return WorldSource(World(seed=seed), args or "cam-000", start, max_fps)


def scenes_source(args: str, seed: int = 0, start: int = 0, max_fps: float = 0.0) -> WorldSource:
    """`scenes:CAMERA[?fps=5&size=320x240&day_seconds=600]`: a camera of the scenes world (detection)."""
    from .scenes import ScenesWorld

    camera, _, query = args.partition("?")
    options = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)) if query else []:
        if key not in SCENES_OPTIONS:
            raise ConfigError(f"--source scenes:{args}: unknown option {key!r} (known: {', '.join(SCENES_OPTIONS)})")
        try:
            options[key] = SCENES_OPTIONS[key](value)
        except ValueError as exc:
            raise ConfigError(f"--source scenes:{args}: {key}={value!r} is not a number") from exc
    if "size" in options:
        options["size"] = parse_size(options["size"], f"--source scenes:{args}")
    return WorldSource(ScenesWorld(seed=seed, **options), camera or "cam-000", start, max_fps)


def parse_size(text: str, where: str) -> tuple[int, int]:
    """'320x240' -> (320, 240)."""
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise ConfigError(f"{where}: size must be WIDTHxHEIGHT such as 320x240, got {text!r}")
    return int(w), int(h)
