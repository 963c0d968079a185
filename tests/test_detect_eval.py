"""The hub's mAP agrees with an independent evaluation of the same ONNX file on the same golden set.

The independent side shares nothing with edgeloop but the file: a plain onnxruntime session, its own
letterbox, its own decoding of YOLOv8's [1, 4+C, N], cv2's NMS, and pycocotools fed the usual way
(COCO.loadRes of a results list), the way one would score an Ultralytics export. The golden frames
are 320x256, so the letterbox pads (the model was trained on 320x240).
"""

from __future__ import annotations

import ast
import contextlib
import io

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from test_detector import make_scenes, trained

from edgeloop.hub.training.detect import coco_map, evaluate_detector
from edgeloop.shared.runtime import ModelRuntime

CONF, IOU, MAX_DET = 0.01, 0.45, 100  # evaluate_detector's settings, restated


def independent_map(onnx_bytes: bytes, images: np.ndarray, boxes, classes) -> tuple[float, float]:
    """-> (AP50, AP50:95) of the ONNX detector on the frames, as an Ultralytics user would compute it."""
    model = onnx.load_from_string(onnx_bytes)
    meta = {p.key: p.value for p in model.metadata_props}
    ih, iw = ast.literal_eval(meta["imgsz"])
    names = ast.literal_eval(meta["names"])
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    results = []
    for i, frame in enumerate(images):
        h, w = frame.shape[:2]
        r = min(ih / h, iw / w)
        nh, nw = round(h * r), round(w * r)
        top, left = (ih - nh) // 2, (iw - nw) // 2
        canvas = np.full((ih, iw, 3), 114, np.uint8)
        canvas[top:top + nh, left:left + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
        x = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        out = sess.run(["output0"], {"images": x})[0][0].T  # (N, 4+C)
        cls = out[:, 4:].argmax(1)
        score = out[np.arange(len(out)), 4 + cls]
        keep = score >= CONF
        out, cls, score = out[keep], cls[keep], score[keep]
        xywh = np.column_stack([out[:, 0] - out[:, 2] / 2, out[:, 1] - out[:, 3] / 2, out[:, 2], out[:, 3]])
        idx = np.asarray(cv2.dnn.NMSBoxesBatched(xywh.tolist(), score.tolist(), cls.tolist(), CONF, IOU),
                         np.int64).reshape(-1)
        idx = idx[np.argsort(-score[idx], kind="stable")][:MAX_DET]
        for k in idx:
            x1 = np.clip((xywh[k, 0] - left) / r, 0, w)
            y1 = np.clip((xywh[k, 1] - top) / r, 0, h)
            x2 = np.clip((xywh[k, 0] + xywh[k, 2] - left) / r, 0, w)
            y2 = np.clip((xywh[k, 1] + xywh[k, 3] - top) / r, 0, h)
            if x2 > x1 and y2 > y1:
                results.append({"image_id": i, "category_id": int(cls[k]), "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "score": float(score[k])})
    gt = COCO()
    gt.dataset = {
        "images": [{"id": i} for i in range(len(images))],
        "categories": [{"id": c, "name": n} for c, n in names.items()],
        "annotations": [{"id": j, "image_id": i, "category_id": int(c), "iscrowd": 0,
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                         "area": float((b[2] - b[0]) * (b[3] - b[1]))}
                        for j, (i, b, c) in enumerate((i, b, c) for i in range(len(images))
                                                      for b, c in zip(boxes[i], classes[i]))],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[1]), float(ev.stats[0])


def test_hub_map_agrees_with_an_independent_evaluation():
    _, _, onnx_bytes, manifest = trained()
    golden = make_scenes(45, seed=123, width=320, height=256)
    hub = evaluate_detector(ModelRuntime.load(onnx_bytes, manifest), golden)
    map50, map_ = independent_map(onnx_bytes, golden.images, golden.boxes, golden.classes)
    assert hub["n"] == 45
    assert map50 > 0.25  # a model that finds things, or the agreement means little
    assert hub["map50"] == pytest.approx(map50, abs=0.01)
    assert hub["map"] == pytest.approx(map_, abs=0.01)


# --- the scoring function on its own ----------------------------------------------------------

def _gt():
    boxes = [np.array([[10, 10, 50, 40], [100, 100, 200, 220]], np.float32),  # medium, large
             np.array([[5, 5, 20, 15]], np.float32),  # small
             np.zeros((0, 4), np.float32)]  # a frame with nothing in it
    classes = [np.array([0, 1]), np.array([2]), np.zeros(0, np.int64)]
    return boxes, classes


def test_ground_truth_as_detections_scores_one():
    boxes, classes = _gt()
    scores = [np.ones(len(c), np.float32) for c in classes]
    got = coco_map(boxes, classes, boxes, scores, classes, num_classes=4, groups={"a": [0], "empty": [2]})
    one = pytest.approx(1.0)
    assert got["map50"] == one and got["map"] == one
    assert got["per_class"] == [one, one, one, None]  # class 3 has no ground truth: None, not -1
    assert got["size"] == {"size:S": one, "size:M": one, "size:L": one}
    assert got["groups"]["a"] == {"map50": one, "map": one}
    assert got["groups"]["empty"] == {"map50": None, "map": None}


def test_misses_and_shifted_boxes():
    boxes, classes = _gt()
    empty = [np.zeros((0, 4), np.float32)] * 3
    nothing = coco_map(boxes, classes, empty, [np.zeros(0)] * 3, [np.zeros(0, np.int64)] * 3, num_classes=3)
    assert nothing["map50"] == 0.0 and nothing["map"] == 0.0
    # Every box shifted by 0.3 of its width: IoU 0.7 / 1.3 = 0.54 passes at IoU 0.5 only: AP50 1, mAP 1/10.
    shifted = [b + np.array([1, 0, 1, 0], np.float32) * (b[:, 2:3] - b[:, 0:1]) * 0.3 for b in boxes]
    scores = [np.ones(len(c), np.float32) for c in classes]
    got = coco_map(boxes, classes, shifted, scores, classes, num_classes=3)
    assert got["map50"] == pytest.approx(1.0) and got["map"] == pytest.approx(0.1)
    wrong_class = [(c + 1) % 3 for c in classes]
    assert coco_map(boxes, classes, boxes, scores, wrong_class, num_classes=3)["map50"] == 0.0


def test_slices_without_ground_truth_are_left_out():
    _, _, onnx_bytes, manifest = trained()
    golden = make_scenes(6, seed=8)
    for i, tags in enumerate(golden.tags):
        if tags["lighting"] == "night":
            golden.boxes[i], golden.classes[i] = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    report = evaluate_detector(ModelRuntime.load(onnx_bytes, manifest), golden)
    assert "night" not in report["per_slice"] and "lighting:night" not in report["slices"]
    assert all(v is None or v >= 0 for v in report["per_class"].values())
    assert {"day", "dusk"} <= set(report["per_slice"])
