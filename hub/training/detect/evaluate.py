"""mAP of a deployed detector on the golden set, scored by pycocotools' COCOeval.

    rt = ModelRuntime.load(onnx_bytes, manifest)          # the devices' runtime: onnxruntime + NMS
    report = evaluate_detector(rt, golden)                # {"map50", "map", "per_slice", "slices", ...}
    scores = coco_map(gt_boxes, gt_classes, det_boxes, det_scores, det_classes, num_classes=12)

The metric is COCO's, computed by the reference implementation (never a hand-written mAP): AP at
IoU 0.5 ("map50") and averaged over IoU 0.5:0.95 ("map"), 101-point interpolation, 100 detections per
image, areas small < 32² <= medium < 96² <= large in frame pixels. A score that has no ground truth
to be measured on (pycocotools' -1) is reported as None, or its slice left out; never as -1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from typing import Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ....shared.manifest import DetectionSpec
from ....shared.runtime import ModelRuntime
from ..golden import DetectionSet

# mAP ranks every detection down to the least confident: a serving threshold (0.25) would cut the
# precision-recall curve short and understate recall, so evaluation lowers it (COCO practice:
# Ultralytics validates at conf 0.001). 0.01 keeps NMS cheap on 768 cells and changes mAP by < 0.001.
EVAL_SCORE_THRESHOLD = 0.01
EVAL_MAX_DETECTIONS = 100  # COCO's maxDets
_AREAS = {"size:S": "small", "size:M": "medium", "size:L": "large"}


def evaluate_detector(runtime: ModelRuntime, golden: DetectionSet, batch: int = 32) -> dict:
    """COCO mAP of the artifact as the device runs it (onnxruntime, letterbox, NMS), overall and per slice.

    -> {"map50", "map", "n": images, "per_slice": {lighting: map50}, "per_slice_map": {lighting: map},
        "slices": {"lighting:day": map50, "weather:rain": ..., "site:...": ..., "camera:...": ...,
                   "size:S" | "size:M" | "size:L": map50}, "per_class": {name: AP50 or None}}
    per_slice is what the training gate compares; a slice with no ground truth box is left out.
    The runtime's manifest keeps its NMS IoU; its score threshold and cap are replaced by
    EVAL_SCORE_THRESHOLD and EVAL_MAX_DETECTIONS (see above).
    """
    if len(golden) == 0:
        raise ValueError("evaluate_detector: the golden set has no images")
    if tuple(runtime.manifest.labels) != tuple(golden.names):
        raise ValueError(f"evaluate_detector: model labels {list(runtime.manifest.labels)} are not the golden "
                         f"set's names {list(golden.names)}")
    rt = _low_threshold(runtime)
    det_boxes, det_scores, det_classes = [], [], []
    for i in range(0, len(golden), batch):
        frames = list(golden.images[i:i + batch])
        for frame, pred in zip(frames, rt.predict_batch(frames)):
            h, w = frame.shape[:2]
            d = pred.detections
            det_boxes.append(d[:, :4] * np.array([w, h, w, h], np.float32))  # normalised -> frame pixels
            det_scores.append(d[:, 4])
            det_classes.append(d[:, 5].astype(np.int64))

    groups: dict[str, list[int]] = {}
    for i, tags in enumerate(golden.tags):
        for key in ("lighting", "weather", "site", "camera"):
            if tags.get(key):
                groups.setdefault(f"{key}:{tags[key]}", []).append(i)
    scores = coco_map(golden.boxes, golden.classes, det_boxes, det_scores, det_classes,
                      num_classes=len(golden.names), groups=groups)
    lighting = {k.split(":", 1)[1]: v for k, v in scores["groups"].items() if k.startswith("lighting:")}
    slices = {k: v["map50"] for k, v in sorted(scores["groups"].items()) if v["map50"] is not None}
    slices.update({k: scores["size"][k] for k in _AREAS if scores["size"][k] is not None})
    return {
        "map50": scores["map50"],
        "map": scores["map"],
        "n": len(golden),
        "per_slice": {s: v["map50"] for s, v in sorted(lighting.items()) if v["map50"] is not None},
        "per_slice_map": {s: v["map"] for s, v in sorted(lighting.items()) if v["map"] is not None},
        "slices": slices,
        "per_class": {name: scores["per_class"][c] for c, name in enumerate(golden.names)},
    }


def _low_threshold(runtime: ModelRuntime) -> ModelRuntime:
    """The same session under a manifest whose detection settings suit mAP (no reload, no new session)."""
    spec = runtime.manifest.detection or DetectionSpec()
    detection = DetectionSpec(score_threshold=EVAL_SCORE_THRESHOLD, iou_threshold=spec.iou_threshold,
                              max_detections=EVAL_MAX_DETECTIONS)
    return ModelRuntime(runtime.session, dataclasses.replace(runtime.manifest, detection=detection))


def coco_map(gt_boxes: Sequence[np.ndarray], gt_classes: Sequence[np.ndarray], det_boxes: Sequence[np.ndarray],
             det_scores: Sequence[np.ndarray], det_classes: Sequence[np.ndarray], *, num_classes: int,
             groups: dict[str, Sequence[int]] | None = None) -> dict:
    """COCOeval over N images. Per image i: gt_boxes[i] (K, 4) xyxy pixels, gt_classes[i] (K,) ints in
    0..num_classes-1; det_boxes[i] (D, 4) xyxy pixels, det_scores[i] (D,), det_classes[i] (D,).

    groups: name -> image indices, scored on their own (e.g. {"lighting:night": [3, 7, ...]}).
    -> {"map50", "map", "per_class": [AP50 | None] * num_classes, "size": {"size:S"|"size:M"|"size:L": AP50 | None},
        "groups": {name: {"map50", "map"}}}; None wherever there is no ground truth to score (overall
    map50/map are 0.0 then: with nothing to find and anything found, the model is not credited).
    """
    n = len(gt_boxes)
    if not (len(gt_classes) == len(det_boxes) == len(det_scores) == len(det_classes) == n):
        raise ValueError("coco_map: need the same number of images in every argument")
    gt, dt = _coco_pair(gt_boxes, gt_classes, det_boxes, det_scores, det_classes, num_classes)
    ev = _run(gt, dt, img_ids=list(range(1, n + 1)))
    out = {
        "map50": _ap(ev, iou=0.5) or 0.0,
        "map": _ap(ev) or 0.0,
        "per_class": [_ap(ev, iou=0.5, cls=c) for c in range(num_classes)],
        "size": {k: _ap(ev, iou=0.5, area=a) for k, a in _AREAS.items()},
        "groups": {},
    }
    for name, idx in (groups or {}).items():
        ev_g = _run(gt, dt, img_ids=[int(i) + 1 for i in idx])
        out["groups"][name] = {"map50": _ap(ev_g, iou=0.5), "map": _ap(ev_g)}
    return out


def _coco_pair(gt_boxes, gt_classes, det_boxes, det_scores, det_classes, num_classes: int) -> tuple[COCO, COCO]:
    """Ground truth and detections as two indexed COCO objects; image ids 1..N, category ids class + 1.

    Built directly rather than through COCO.loadRes, which refuses an empty detection list."""
    images = [{"id": i + 1} for i in range(len(gt_boxes))]
    categories = [{"id": c + 1} for c in range(num_classes)]

    def anns(boxes, classes, scores=None):
        out = []
        for i, (b, c) in enumerate(zip(boxes, classes)):
            b = np.asarray(b, np.float64).reshape(-1, 4)
            for k, (x1, y1, x2, y2) in enumerate(b):
                w, h = max(0.0, x2 - x1), max(0.0, y2 - y1)
                a = {"id": len(out) + 1, "image_id": i + 1, "category_id": int(c[k]) + 1,
                     "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0}
                if scores is not None:
                    a["score"] = float(scores[i][k])
                out.append(a)
        return out

    gt, dt = COCO(), COCO()
    gt.dataset = {"images": images, "categories": categories, "annotations": anns(gt_boxes, gt_classes)}
    dt.dataset = {"images": images, "categories": categories, "annotations": anns(det_boxes, det_classes, det_scores)}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt.createIndex()
        dt.createIndex()
    return gt, dt


def _run(gt: COCO, dt: COCO, img_ids: list[int]) -> COCOeval:
    ev = COCOeval(gt, dt, iouType="bbox")
    ev.params.imgIds = img_ids
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return ev


def _ap(ev: COCOeval, iou: float | None = None, area: str = "all", cls: int | None = None) -> float | None:
    """Mean of COCOeval's precision table over recall points (and classes, IoUs) for one slice of it.

    precision is [T IoUs, R recalls, K classes, A areas, M maxDets]; -1 marks a class without ground
    truth in the slice, which COCO's own summarize() leaves out of the mean, as does this. None: nothing left."""
    p = ev.eval["precision"]
    t = slice(None) if iou is None else [int(np.argmin(np.abs(ev.params.iouThrs - iou)))]
    k = slice(None) if cls is None else [ev.params.catIds.index(cls + 1)]
    a = ev.params.areaRngLbl.index(area)
    m = ev.params.maxDets.index(EVAL_MAX_DETECTIONS)
    s = p[t][:, :, k, a, m]
    s = s[s > -1]
    return float(s.mean()) if s.size else None
