"""A three-class detection project of the scenes world (car, van, person: not the simulator's twelve),
an Ultralytics-style seed detector for it (names in metadata_props only, no manifest), and the test
trainer that continues it (tests/trainers/contract_trainer.py), for the training-job suites."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

CLASSES = ("car", "van", "person")
WORLD_CLASS = {0: 0, 1: 1, 6: 2}  # scenes class index -> project class index; the rest are not labeled
TRAINER = Path(__file__).parent / "trainers" / "contract_trainer.py"


def three_class(ds):
    """A scenes DetectionDataset -> the hub's DetectionSet of the three classes (other objects dropped)."""
    from edgeloop.hub.training.golden import DetectionSet

    boxes, classes = [], []
    for b, c in zip(ds.boxes, ds.classes):
        keep = np.isin(c, list(WORLD_CLASS))
        boxes.append(np.asarray(b, np.float32)[keep].reshape(-1, 4))
        classes.append(np.asarray([WORLD_CLASS[int(k)] for k in c[keep]], np.int64))
    return DetectionSet(images=ds.images, boxes=boxes, classes=classes, names=CLASSES, tags=ds.tags)


def make_project(root: Path, seed_frames: int = 96, golden_per_condition: int = 12, epochs: int = 3,
                 world_seed: int = 3) -> dict:
    """Write golden.npz, seed.npz, yolo.onnx (bare, Ultralytics-style) and ckpt/state.pt under root."""
    from edgeloop.hub.training.detect import export_detector_onnx, train_detector
    from edgeloop.sim import ScenesWorld
    from factories import ultralytics_style

    world = ScenesWorld(seed=world_seed, fps=2)
    golden, seed = three_class(world.golden_set(per_condition=golden_per_condition)), three_class(
        world.seed_set(n=seed_frames))
    golden.save(root / "golden.npz")
    seed.save(root / "seed.npz")
    result = train_detector(list(seed.images), seed.boxes, seed.classes, CLASSES, epochs=epochs, seed=0)
    onnx, _ = export_detector_onnx(result.net, version="v0", parent=None, names=CLASSES)
    (root / "yolo.onnx").write_bytes(ultralytics_style(onnx, CLASSES, (192, 256)))
    (root / "ckpt").mkdir(exist_ok=True)
    (root / "ckpt" / "state.pt").write_bytes(result.state)
    return {"golden": golden, "seed": seed, "world": world}


def trainer_command(mode_file: Path) -> str:
    return f"command:{sys.executable} {TRAINER} --mode-file {mode_file}"
