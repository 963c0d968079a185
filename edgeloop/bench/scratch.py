"""The folder a benchmark's services live in, emptied first: every run starts from nothing."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger("edgeloop.bench")


def fresh_box(out: Path) -> Path:
    """OUT/box, without what an earlier run left there (its hub database would already hold the
    models, rollouts and desired versions this run is about to make)."""
    box = Path(out) / "box"
    if box.exists():
        log.info("removing the previous run's %s", box)
        shutil.rmtree(box)
    return box
