"""One turn of the hub's loop for a detection project: train the built-in detector from its parent on
every frame labeled with boxes, export it (YOLOv8 layout), score it with COCO mAP on the golden set
per slice, judge it against its parent (the gate on mAP@0.5), sign and register it.

    result = train_detection_round(store, golden, key, epochs=12)   # golden: a DetectionSet
    n = import_detection_set(store, seed_set)                         # a labeled seed set, as labels "seed"

Registering is not promoting: the caller decides whether the version becomes the desired one.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from edgeloop.shared.ids import new_sample_id
from edgeloop.shared.images import decode_image, encode_jpeg, sha256
from edgeloop.shared.protocol import Candidate
from edgeloop.shared.runtime import ModelRuntime

from ..golden import DetectionSet
from ...store import HubStore
from ..rounds import NothingToTrain, judge, log_verdict, next_version, parent_of, register
from .evaluate import evaluate_detector
from .model import export_detector_onnx
from .train import train_detector

log = logging.getLogger("edgeloop.hub.training.detect")
# How far a slice's mAP@0.5 may fall below the parent's. Wider than a classifier's 0.02: a golden set of
# a few hundred frames measures a slice's mAP (size:L, weather:fog: a few dozen boxes each) to a few
# hundredths, and a gate that refuses on noise keeps the fleet on its old model.
DETECT_TOLERANCE = 0.05


def import_detection_set(store: HubStore, ds: DetectionSet, source: str = "seed") -> int:
    """Store a labeled detection set (e.g. the round-0 seed set) as samples labeled with boxes; -> how many."""
    uniform = np.full(len(ds.names), 1.0 / len(ds.names), np.float32)
    cands, boxes = [], {}
    for i in range(len(ds)):
        jpeg = encode_jpeg(ds.images[i])
        sid = new_sample_id()
        tags = {k: v for k, v in ds.tags[i].items() if v} | {"source": source}
        cands.append(Candidate(sample_id=sid, device_id=source, camera_id=source, captured_at=0.0,
                               model_version="none", probs=uniform, embedding=None, image=jpeg,
                               image_sha256=sha256(jpeg), tags=tags,
                               detections=np.zeros((0, 6), np.float32)))
        boxes[sid] = [{"class": int(c), "xyxy": [float(v) for v in b]} for b, c in zip(ds.boxes[i], ds.classes[i])]
    store.ingest(cands, site=source, relay_id=source, status="labeled")
    store.add_box_labels(boxes, source=source)
    return len(cands)


def labeled_frames(store: HubStore) -> tuple[list[dict], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The frames labeled with boxes ("no objects" included) -> rows, images, boxes (K, 4) px, classes (K,)."""
    rows = [r for r in store.labeled() if r.get("boxes") is not None]
    images, boxes, classes = [], [], []
    for r in rows:
        images.append(decode_image(store.blobs.get(r["image_sha256"])))
        boxes.append(np.asarray([b["xyxy"] for b in r["boxes"]], np.float32).reshape(-1, 4))
        classes.append(np.asarray([b["class"] for b in r["boxes"]], np.int64))
    return rows, images, boxes, classes


def data_counts(rows: list[dict], classes: list[np.ndarray], names: tuple[str, ...]) -> dict:
    """-> {"by_class": {name: boxes}, "by_slice": {lighting: frames}, "total": frames, "boxes": n, "empty": n}."""
    per_class = np.bincount(np.concatenate(classes + [np.zeros(0, np.int64)]), minlength=len(names))
    by_slice: dict[str, int] = {}
    for r in rows:
        lighting = str((r.get("tags") or {}).get("lighting") or "unknown")
        by_slice[lighting] = by_slice.get(lighting, 0) + 1
    return {"by_class": {n: int(per_class[i]) for i, n in enumerate(names)}, "by_slice": dict(sorted(by_slice.items())),
            "total": len(rows), "boxes": int(per_class.sum()), "empty": sum(len(c) == 0 for c in classes)}


def train_detection_round(store: HubStore, golden: DetectionSet, signing_key, *, epochs: int = 12, seed: int = 0,
                          from_scratch: bool = False, tolerance: float | None = None, min_gain: float = 0.0) -> dict:
    """-> {"version", "parent", "metrics", "labels_total", "seconds", "promoted", "gate"}; registers the model.

    Called by `trainer.train_round` under the training lock. The gate compares mAP@0.5 overall and per
    slice with the parent's: lighting, weather, site, object size (tolerance in absolute mAP@0.5, by
    default DETECT_TOLERANCE)."""
    tolerance = DETECT_TOLERANCE if tolerance is None else tolerance
    t0 = time.monotonic()
    rows, images, boxes, classes = labeled_frames(store)
    if not rows:
        raise NothingToTrain("no frames labeled with boxes to train on")
    names = tuple(golden.names)
    parent, parent_state = parent_of(store, from_scratch)
    version = next_version(store)
    log.info("training detector %s from %s on %d labeled frames (%d boxes)", version, parent or "scratch",
             len(rows), sum(len(c) for c in classes))
    result = train_detector(images, boxes, classes, names, parent_state=parent_state, epochs=epochs, seed=seed)
    counts = data_counts(rows, classes, names)
    onnx, manifest = export_detector_onnx(result.net, version=version, parent=parent, names=names,
                                          class_counts=list(counts["by_class"].values()),
                                          parity_frames=golden.images[:4])
    metrics = {**manifest.metrics, **evaluate_detector(ModelRuntime.load(onnx, manifest), golden),
               "train_seconds": round(result.seconds, 2), "train_loss": result.train_loss,
               "training": {**result.settings, "from_scratch": from_scratch}, "data": counts}
    verdict = judge(metrics, store, parent, tolerance, min_gain)
    register(store, signing_key, manifest, onnx, result.state, metrics, reference=None, labels_total=len(rows))
    log.info("%s: mAP@0.5 %.3f mAP %.3f %s", version, metrics["map50"], metrics["map"],
             " ".join(f"{k}={v:.3f}" for k, v in sorted(metrics["per_slice"].items())))
    log_verdict(version, verdict)
    return {"version": version, "parent": parent, "metrics": metrics, "labels_total": len(rows),
            "seconds": round(time.monotonic() - t0, 2), "promoted": verdict.passed, "gate": metrics["gate"]}
