"""The built-in trainers, as trainers of the contract (contract.py): `builtin:classify` and `builtin:detect`.

    python -m edgeloop.hub.training.builtin detect --data DIR --parent DIR --out DIR --epochs 12 --seed 0

Both read the hub's export (annotations.json: COCO, images beside it), fine-tune from the parent's
checkpoint/state.pt when there is one (else train from scratch), and write OUT/model.onnx,
OUT/manifest.json, OUT/checkpoint/state.pt and OUT/metrics.json. The hub numbers, calibrates, judges
and signs the result: the manifest's version here is a placeholder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .frames import FrameFiles
from .workspace import STATE_FILE


def progress_line(epoch: int, of: int, loss: float) -> None:
    print(json.dumps({"epoch": epoch, "of": of, "loss": round(float(loss), 5)}), flush=True)


def read_coco(data: Path) -> tuple[tuple[str, ...], list[dict], dict[int, list[dict]]]:
    """data/annotations.json -> (class names by index, images, annotations per image id)."""
    doc = json.loads((data / "annotations.json").read_text())
    cats = sorted(doc["categories"], key=lambda c: c["id"])
    names = tuple(c["name"] for c in cats)
    index = {c["id"]: k for k, c in enumerate(cats)}
    per_image: dict[int, list[dict]] = {}
    for a in doc["annotations"]:
        per_image.setdefault(a["image_id"], []).append({**a, "class": index[a["category_id"]]})
    return names, doc["images"], per_image


def parent_state(parent: Path) -> bytes | None:
    path = parent / "checkpoint" / STATE_FILE
    return path.read_bytes() if path.exists() else None


def write_out(out: Path, onnx: bytes, manifest, state: bytes, metrics: dict) -> None:
    (out / "checkpoint").mkdir(parents=True, exist_ok=True)
    (out / "checkpoint" / STATE_FILE).write_bytes(state)
    (out / "manifest.json").write_bytes(manifest.to_json())
    (out / "metrics.json").write_text(json.dumps(metrics))
    (out / "model.onnx").write_bytes(onnx)  # last: its presence means the rest is there


def classify(args) -> None:
    from . import classifier

    names, images, per_image = read_coco(args.data)
    frames = FrameFiles([args.data / i["file_name"] for i in images])  # read a batch at a time
    labels = np.asarray([per_image[i["id"]][0]["class"] for i in images], np.int64)
    result = classifier.train(frames, labels, parent_state=parent_state(args.parent), epochs=args.epochs,
                              seed=args.seed, num_classes=len(names), progress=progress_line)
    counts = np.bincount(labels, minlength=len(names)).tolist()
    onnx, manifest = classifier.export_onnx(result.net, version="candidate", parent=None, labels=names,
                                            class_counts=counts, parity_frames=frames[:16])
    write_out(args.out, onnx, manifest, result.state,
              {"train_loss": result.train_loss, "train_seconds": round(result.seconds, 2), "settings": result.settings})


def detect(args, frames=None) -> None:
    """frames: the set's decoded frames, when a caller has them all in memory (bench trainer-memory's
    baseline); by default they are read from --data a batch at a time."""
    from .detect.model import export_detector_onnx
    from .detect.train import train_detector

    names, images, per_image = read_coco(args.data)
    if frames is None:
        frames = FrameFiles([args.data / i["file_name"] for i in images])
    boxes, classes = [], []
    for i in images:
        anns = per_image.get(i["id"], [])
        boxes.append(np.asarray([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)],
                                np.float32).reshape(-1, 4))
        classes.append(np.asarray([a["class"] for a in anns], np.int64))
    result = train_detector(frames, boxes, classes, names, parent_state=parent_state(args.parent),
                            epochs=args.epochs, seed=args.seed, progress=progress_line)
    counts = np.bincount(np.concatenate([np.zeros(0, np.int64), *classes]), minlength=len(names)).tolist()
    onnx, manifest = export_detector_onnx(result.net, version="candidate", parent=None, names=names,
                                          class_counts=counts, parity_frames=frames[:4])
    write_out(args.out, onnx, manifest, result.state,
              {"train_loss": result.train_loss, "train_seconds": round(result.seconds, 2), "settings": result.settings})


TASKS = ("classify", "detect")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edgeloop.hub.training.builtin",
                                description="The hub's built-in trainers, run as the trainer contract says.")
    p.add_argument("task", choices=TASKS)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--parent", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    (classify if args.task == "classify" else detect)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
