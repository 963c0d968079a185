"""A trainer of the hub's contract, outside the edgeloop package, as a team would write its own:

    contract_trainer.py --mode-file FILE --data DIR --parent DIR --out DIR [--epochs N] [--seed S]

It reads the YOLO layout (data.yaml, labels/*.txt), fine-tunes from the parent's checkpoint/state.pt
and writes an Ultralytics-style ONNX: no manifest, names and imgsz in metadata_props. FILE holds the
mode, so one project trainer can be made to misbehave: good | exit | broken | hang | classes | slow.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np


def read_yolo(data: Path):
    from edgeloop.shared.images import decode_image

    names = [json.loads(m.group(1)) for m in re.finditer(r"^  \d+: (\".*\")$", (data / "data.yaml").read_text(), re.M)]
    frames, boxes, classes = [], [], []
    for image in sorted((data / "images").glob("*.jpg")):
        frame = decode_image(image.read_bytes())
        h, w = frame.shape[:2]
        rows = [line.split() for line in (data / "labels" / f"{image.stem}.txt").read_text().splitlines() if line]
        cls = np.asarray([int(r[0]) for r in rows], np.int64)
        cxcywh = np.asarray([[float(v) for v in r[1:]] for r in rows], np.float32).reshape(-1, 4)
        xyxy = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], 1)
        frames.append(frame)
        boxes.append(xyxy * np.asarray([w, h, w, h], np.float32))
        classes.append(cls)
    return names, frames, boxes, classes


def strip_to_ultralytics(onnx_bytes: bytes, names) -> bytes:
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    keep = [o for o in model.graph.output if o.name == "output0"]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    del model.metadata_props[:]
    for k, v in {"author": "a team of our own", "task": "detect", "names": str(dict(enumerate(names))),
                 "imgsz": "[192, 256]", "stride": "8"}.items():
        model.metadata_props.add(key=k, value=v)
    return model.SerializeToString()


def main() -> int:
    p = argparse.ArgumentParser()
    for flag in ("--mode-file", "--data", "--parent", "--out"):
        p.add_argument(flag, type=Path, required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    mode = a.mode_file.read_text().strip() if a.mode_file.exists() else "good"
    print(f"contract_trainer: mode {mode}, data {a.data}", flush=True)
    if mode == "exit":
        print("out of memory, says the trainer", file=sys.stderr, flush=True)
        return 3
    if mode == "hang":
        print(json.dumps({"epoch": 0, "of": a.epochs, "loss": None}), flush=True)
        time.sleep(3600)
    if mode == "slow":
        print(json.dumps({"epoch": 1, "of": a.epochs, "loss": 1.0}), flush=True)
        time.sleep(120)
    a.out.mkdir(parents=True, exist_ok=True)
    if mode == "broken":
        (a.out / "model.onnx").write_bytes(b"this is not an onnx file")
        return 0
    if mode == "classes":
        parent = (a.parent / "model.onnx").read_bytes()
        (a.out / "model.onnx").write_bytes(strip_to_ultralytics(parent, ["car", "van", "truck"]))
        return 0

    from edgeloop.hub.training.detect.model import export_detector_onnx
    from edgeloop.hub.training.detect.train import train_detector

    names, frames, boxes, classes = read_yolo(a.data)
    state = a.parent / "checkpoint" / "state.pt"
    result = train_detector(frames, boxes, classes, names, parent_state=state.read_bytes() if state.exists() else None,
                            epochs=a.epochs, seed=a.seed,
                            progress=lambda e, n, loss: print(json.dumps({"epoch": e, "of": n, "loss": loss}),
                                                              flush=True))
    onnx, _ = export_detector_onnx(result.net, version="x", parent=None, names=names)
    (a.out / "checkpoint").mkdir(exist_ok=True)
    (a.out / "checkpoint" / "state.pt").write_bytes(result.state)
    (a.out / "metrics.json").write_text(json.dumps({"train_loss": result.train_loss, "frames": len(frames)}))
    (a.out / "model.onnx").write_bytes(strip_to_ultralytics(onnx, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
