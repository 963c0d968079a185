"""ModelRuntime on real ONNX files: classifiers with and without an embedding, two detector styles.

Each model is a tiny torch module exported with torch.onnx.export and run by onnxruntime. The detectors
return fixed tensors (+ 0 * input.mean(), so that the output depends on the input and exports as a graph),
which makes their detections exact and checkable.
"""

from __future__ import annotations

import dataclasses
import re
import warnings

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgeloop.shared import detection
from edgeloop.shared.descriptor import DESCRIPTOR_DIM, image_descriptor
from edgeloop.shared.errors import ManifestError, ModelMismatch
from edgeloop.shared.manifest import DetectionSpec, InputSpec, ModelManifest
from edgeloop.shared.runtime import ModelRuntime

OPSET = 17
LABELS3 = ("person", "car", "dog")


def export(module: nn.Module, path, input_shape, output_names, dynamic_batch: bool = True) -> bytes:
    module.eval()
    axes = {"images": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(module, (torch.zeros(input_shape),), str(path), input_names=["images"],
                          output_names=list(output_names), dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    return path.read_bytes()


def manifest(task="classification", outputs=None, labels=LABELS3, **input_changes) -> ModelManifest:
    spec = dataclasses.replace(InputSpec(name="images", height=32, width=32), **input_changes)
    return ModelManifest(version="m-1", task=task, input=spec, outputs=outputs or {"logits": "logits"},
                         labels=labels)


def frame(h=48, w=80, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def cosine(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- classifiers --------------------------------------------------------------------------------

class Classifier(nn.Module):
    """(N, 3, H, W) or, with nhwc, (N, H, W, 3) -> logits or probabilities (N, 3) [, embedding (N, 8)]."""

    def __init__(self, embedding: bool, probabilities: bool = False, nhwc: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.head = nn.Linear(8, 3)
        self.embedding, self.probabilities, self.nhwc = embedding, probabilities, nhwc

    def forward(self, x):
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        feat = torch.relu(self.conv(x)).mean(dim=(2, 3))
        out = self.head(feat) * 4
        if self.probabilities:
            out = torch.softmax(out, dim=1)
        return (out, feat) if self.embedding else out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    nchw = (1, 3, 32, 32)
    return {
        "with_embedding": export(Classifier(True), root / "a.onnx", nchw, ["logits", "embedding"]),
        "no_embedding": export(Classifier(False), root / "b.onnx", nchw, ["logits"]),
        "probabilities": export(Classifier(False, probabilities=True), root / "c.onnx", nchw, ["probabilities"]),
        "nhwc": export(Classifier(False, nhwc=True), root / "d.onnx", (1, 32, 32, 3), ["logits"]),
        "yolo": export(Yolo(), root / "yolo.onnx", (1, 3, 64, 64), ["output0"]),
        "boxes": export(BoxesScoresLabels(batched=True), root / "bsl.onnx", (1, 3, 64, 64),
                        ["boxes", "scores", "labels"], dynamic_batch=False),
        "boxes_flat": export(BoxesScoresLabels(batched=False), root / "bsl2.onnx", (1, 3, 64, 64),
                             ["boxes", "scores", "labels"], dynamic_batch=False),
    }


def test_classifier_with_embedding(models):
    rt = ModelRuntime.load(models["with_embedding"], manifest(outputs={"logits": "logits", "embedding": "embedding"}))
    preds = rt.predict_batch([frame(seed=1), frame(32, 32, seed=2)])
    for p in preds:
        assert p.probs.shape == (3,) and p.probs.dtype == np.float32 and abs(p.probs.sum() - 1) < 1e-5
        assert p.embedding.shape == (8,) and abs(np.linalg.norm(p.embedding) - 1) < 1e-5
        assert p.embedding_source == "model" and p.detections is None
    assert rt.predict(frame(seed=1)).probs == pytest.approx(preds[0].probs, abs=1e-6)


def test_classifier_without_embedding_gets_the_descriptor(models):
    rt = ModelRuntime.load(models["no_embedding"], manifest())
    f = frame(seed=3)
    p = rt.predict(f)
    assert p.embedding_source == "descriptor" and p.embedding.shape == (DESCRIPTOR_DIM,) == (80,)
    np.testing.assert_array_equal(p.embedding, image_descriptor(f))
    assert abs(p.probs.sum() - 1) < 1e-5 and p.detections is None


def test_logits_and_probabilities_roles_agree(models):
    f = frame(seed=4)
    by_logits = ModelRuntime.load(models["no_embedding"], manifest()).predict(f).probs
    by_probs = ModelRuntime.load(models["probabilities"], manifest(outputs={"probabilities": "probabilities"})
                                 ).predict(f).probs
    np.testing.assert_allclose(by_logits, by_probs, atol=1e-6)
    assert by_logits.max() < 0.999  # softmax was applied once, not twice or never


def test_nhwc_bgr_letterbox_matches_preprocessing_by_hand(models):
    mean, std, scale = (10.0, 20.0, 30.0), (2.0, 3.0, 4.0), 0.5
    m = manifest(layout="NHWC", color="BGR", resize="letterbox", mean=mean, std=std, scale=scale)
    f = frame(60, 100, seed=5)
    # By hand: s = min(32/60, 32/100) = 0.32 -> 32 x 19, centred: rows 6..24 of a grey canvas; BGR kept.
    canvas = np.full((32, 32, 3), 114, np.uint8)
    canvas[6:25] = cv2.resize(f, (32, 19), interpolation=cv2.INTER_AREA)
    x = (canvas.astype(np.float32) * scale - np.array(mean, np.float32)) / np.array(std, np.float32)
    with torch.no_grad():
        want = torch.softmax(Classifier(False, nhwc=True)(torch.from_numpy(x[None])), dim=1)[0].numpy()
    rt = ModelRuntime.load(models["nhwc"], m)
    np.testing.assert_allclose(rt.predict(f).probs, want, atol=1e-5)
    np.testing.assert_array_equal(rt.prepare([f]), x[None])


# --- detectors ----------------------------------------------------------------------------------
# Five boxes in 64x64 model-input pixels, xyxy:
#   A class 0, 0.9  (10, 10, 30, 30)
#   B class 0, 0.8  (12, 10, 32, 30)   IoU(A, B) = 0.82: suppressed by A
#   C class 1, 0.7  (11, 11, 31, 31)   overlaps A as much, but another class: kept
#   D class 2, 0.1  (43, 43, 53, 53)   below the 0.25 threshold
#   E class 2, 0.6  (40, 36, 56, 44)
#   F class 1, 0.5  (27,  2, 37,  8)   in the top letterbox band of a 2:1 frame (rows 0..15): dropped there
BOXES = np.array([[10, 10, 30, 30], [12, 10, 32, 30], [11, 11, 31, 31], [43, 43, 53, 53], [40, 36, 56, 44],
                  [27, 2, 37, 8]], np.float32)
SCORES = np.array([0.9, 0.8, 0.7, 0.1, 0.6, 0.5], np.float32)
CLASSES = np.array([0, 0, 1, 2, 2, 1], np.int64)


class Yolo(nn.Module):
    """-> (1, 4+3, 6): cx, cy, w, h, then 3 class scores (the others 0.05) per box."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        xy, wh = (BOXES[:, :2] + BOXES[:, 2:]) / 2, BOXES[:, 2:] - BOXES[:, :2]
        cls = np.full((num_classes, len(BOXES)), 0.05, np.float32)
        cls[CLASSES, np.arange(len(BOXES))] = SCORES
        self.register_buffer("table", torch.from_numpy(np.concatenate([xy.T, wh.T, cls])))

    def forward(self, x):
        return (self.table + 0 * x.mean()).unsqueeze(0)  # batch axis always 1, whatever the input's


class BoxesScoresLabels(nn.Module):
    """-> boxes (1, 6, 4), scores (1, 6), labels (1, 6) int64; or without the batch axis."""

    def __init__(self, batched: bool, boxes=BOXES):
        super().__init__()
        self.batched = batched
        self.register_buffer("boxes", torch.from_numpy(boxes))
        self.register_buffer("scores", torch.from_numpy(SCORES))
        self.register_buffer("labels", torch.from_numpy(CLASSES))

    def forward(self, x):
        zero = 0 * x.mean()
        out = (self.boxes + zero, self.scores + zero, self.labels + zero.long())
        return tuple(t.unsqueeze(0) for t in out) if self.batched else out


YOLO_OUTPUTS = {"detections": "output0"}
BSL_OUTPUTS = {"boxes": "boxes", "scores": "scores", "labels": "labels"}
# Frame 100 x 200 letterboxed into 64 x 64: scale 0.32, the frame lands at rows 16..47 (32 high), all 64 columns.
LETTERBOX_WANT = np.array([
    [10 / 64, 0.0, 30 / 64, 14 / 32, 0.9, 0],         # A (its top lies in the band: clipped to 0)
    [11 / 64, 0.0, 31 / 64, 15 / 32, 0.7, 1],         # C
    [40 / 64, 20 / 32, 56 / 64, 28 / 32, 0.6, 2],     # E
], np.float32)
# Stretched: model pixels / 64, whatever the frame's shape; F survives.
STRETCH_WANT = np.array([
    [10 / 64, 10 / 64, 30 / 64, 30 / 64, 0.9, 0],
    [11 / 64, 11 / 64, 31 / 64, 31 / 64, 0.7, 1],
    [40 / 64, 36 / 64, 56 / 64, 44 / 64, 0.6, 2],
    [27 / 64, 2 / 64, 37 / 64, 8 / 64, 0.5, 1],
], np.float32)


@pytest.mark.parametrize("model, outputs", [("yolo", YOLO_OUTPUTS), ("boxes", BSL_OUTPUTS),
                                            ("boxes_flat", BSL_OUTPUTS)])
@pytest.mark.parametrize("resize, want", [("letterbox", LETTERBOX_WANT), ("stretch", STRETCH_WANT)])
def test_detector_finds_exactly_the_expected_boxes(models, model, outputs, resize, want):
    m = manifest("detection", outputs, height=64, width=64, resize=resize)
    rt = ModelRuntime.load(models[model], m)
    p = rt.predict(frame(100, 200))
    assert p.detections.dtype == np.float32
    np.testing.assert_allclose(p.detections, want, atol=1e-6)
    # The class mix: each class's best score, normalised.
    np.testing.assert_allclose(p.probs, np.array([0.9, 0.7, 0.6]) / 2.2, atol=1e-6)
    assert p.embedding_source == "descriptor" and p.embedding.shape == (DESCRIPTOR_DIM,)


def test_detector_batches_map_each_frame_on_its_own_shape(models):
    rt = ModelRuntime.load(models["yolo"], manifest("detection", YOLO_OUTPUTS, height=64, width=64, resize="letterbox"))
    wide, square = rt.predict_batch([frame(100, 200), frame(64, 64)])
    np.testing.assert_allclose(wide.detections, LETTERBOX_WANT, atol=1e-6)
    np.testing.assert_allclose(square.detections, STRETCH_WANT, atol=1e-6)  # no padding: same as stretch


def test_detection_settings_from_the_manifest(models):
    m = dataclasses.replace(manifest("detection", YOLO_OUTPUTS, height=64, width=64),
                            detection=DetectionSpec(score_threshold=0.05, iou_threshold=0.9, max_detections=4))
    p = ModelRuntime.load(models["yolo"], m).predict(frame(64, 64))
    # B survives at IoU 0.9, D passes 0.05; the cap keeps the best four: A, B, C, E.
    np.testing.assert_allclose(p.detections[:, 4], [0.9, 0.8, 0.7, 0.6], atol=1e-6)


def test_nothing_detected_gives_uniform_probs(models):
    m = dataclasses.replace(manifest("detection", YOLO_OUTPUTS, height=64, width=64),
                            detection=DetectionSpec(score_threshold=0.95))
    p = ModelRuntime.load(models["yolo"], m).predict(frame())
    assert p.detections.shape == (0, 6)
    np.testing.assert_allclose(p.probs, [1 / 3] * 3)


# --- NMS properties -----------------------------------------------------------------------------

def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@st.composite
def box_sets(draw):
    n = draw(st.integers(0, 25))
    coord = st.floats(-50, 200, width=32)
    size = st.floats(0.5, 80, width=32)
    xy = np.array(draw(st.lists(st.tuples(coord, coord), min_size=n, max_size=n)), np.float32).reshape(n, 2)
    wh = np.array(draw(st.lists(st.tuples(size, size), min_size=n, max_size=n)), np.float32).reshape(n, 2)
    scores = np.array(draw(st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n)), np.float32)
    classes = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), np.int64)
    return np.concatenate([xy, xy + wh], axis=1), scores, classes


@settings(max_examples=150, deadline=None)
@given(box_sets(), st.floats(0, 1), st.floats(0.05, 1), st.integers(1, 30))
def test_nms_invariants(data, score_thr, iou_thr, cap):
    boxes, scores, classes = data
    keep = detection.nms(boxes, scores, classes, score_thr, iou_thr, cap)
    assert keep.dtype == np.int64 and len(set(keep.tolist())) == len(keep) <= cap
    assert all(0 <= i < len(boxes) for i in keep)  # a subset of the input
    assert np.all(scores[keep] >= score_thr)
    assert np.all(np.diff(scores[keep]) <= 0)  # best first
    for a in range(len(keep)):
        for b in range(a + 1, len(keep)):
            if classes[keep[a]] == classes[keep[b]]:
                assert iou(boxes[keep[a]], boxes[keep[b]]) <= iou_thr + 1e-5
    if len(keep) < cap:  # not capped: every dropped candidate lost to a kept box of its class
        for i in set(np.flatnonzero(scores >= score_thr).tolist()) - set(keep.tolist()):
            assert any(classes[k] == classes[i] and scores[k] >= scores[i] and iou(boxes[k], boxes[i]) > iou_thr - 1e-5
                       for k in keep), i


def test_nms_separates_classes_even_with_negative_coordinates():
    # cv2 offsets classes by (max coordinate + 1): without the shift, these two would collide.
    boxes = np.array([[-100, -100, -60, -60], [-90, -100, -50, -60]], np.float32)
    keep = detection.nms(boxes, np.array([0.9, 0.8], np.float32), np.array([0, 1]), 0.25, 0.45, 10)
    assert keep.tolist() == [0, 1]


def test_letterbox_geometry_mirrors_preprocess():
    from edgeloop.shared.preprocess import resize

    spec = InputSpec(name="x", height=48, width=64, resize="letterbox")
    for h, w in [(100, 200), (480, 640), (300, 100), (7, 1000)]:
        left, top, nw, nh = detection.letterbox_geometry((h, w), spec)
        out = resize(np.full((h, w, 3), 255, np.uint8), spec)
        rows, cols = np.nonzero(out[..., 0] == 255)
        assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (top, top + nh, left, left + nw)


# --- mismatches: typed errors at load -----------------------------------------------------------

def test_detector_class_count_must_match_labels(models):
    with pytest.raises(ModelMismatch, match=r"model gives 3 classes \(7 rows = 4 box \+ classes\), manifest has 2"):
        ModelRuntime.load(models["yolo"], manifest("detection", YOLO_OUTPUTS, labels=("a", "b"), height=64, width=64))


def test_boxes_style_label_ids_beyond_the_labels(models):
    with pytest.raises(ModelMismatch, match=r"'labels' gives class id 2, manifest has 2 labels"):
        ModelRuntime.load(models["boxes"], manifest("detection", BSL_OUTPUTS, labels=("a", "b"), height=64, width=64))


@pytest.mark.parametrize("model, outputs, says", [
    ("yolo", {"detections": "dets"}, r"manifest.outputs.detections = 'dets' is not an output"),
    ("boxes", {**BSL_OUTPUTS, "labels": "classes"}, r"manifest.outputs.labels = 'classes' is not an output"),
    ("boxes_flat", {"detections": "boxes"}, r"'boxes' has shape \[6, 4\]: a 'detections' output is \[1, 4\+C, N\]"),
    ("boxes", {"detections": "boxes"}, r"model gives 2 classes \(6 rows = 4 box \+ classes\), manifest has 3"),
    ("yolo", {"boxes": "output0", "scores": "output0", "labels": "output0"},
     r"'output0' has shape \[1, 7, 6\]: expected \[1, N, 4\] or \[N, 4\]"),
    ("boxes", {"boxes": "boxes", "scores": "boxes", "labels": "labels"},
     r"'boxes' has shape \[1, 6, 4\], expected \[1, 6\]"),
])
def test_detector_output_mismatch(models, model, outputs, says):
    with pytest.raises(ModelMismatch, match=says):
        ModelRuntime.load(models[model], manifest("detection", outputs, height=64, width=64))


def test_wrong_input_shape(models):
    with pytest.raises(ModelMismatch, match=r"has shape \[.*64, 64\], manifest says \[1, 3, 32, 32\]"):
        ModelRuntime.load(models["yolo"], manifest("detection", YOLO_OUTPUTS))


@pytest.mark.parametrize("task, outputs, says", [
    ("detection", {"boxes": "boxes"}, "a detector names either 'detections'"),
    ("detection", {"boxes": "boxes", "scores": "scores"}, "a detector names either"),
    ("detection", {"detections": "output0", "boxes": "boxes", "scores": "s", "labels": "l"}, "a detector names either"),
    ("detection", {"logits": "output0"}, "a detector names either"),
    ("classification", {"logits": "logits", "boxes": "boxes"}, "detection role(s) boxes in a classification manifest"),
    ("classification", {"embedding": "embedding"}, "a classifier needs a 'logits' or 'probabilities' output"),
])
def test_manifest_roles_must_fit_the_task(models, task, outputs, says):
    m = manifest(task, outputs, height=64, width=64)
    with pytest.raises(ManifestError, match="^manifest.outputs: " + re.escape(says)):
        m.output_style()
    with pytest.raises(ManifestError, match=re.escape(says)):
        ModelRuntime.load(models["yolo"], m)


# --- the descriptor -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def photos():
    from sklearn.datasets import load_sample_images
    return [np.ascontiguousarray(im[..., ::-1]) for im in load_sample_images().images]  # RGB -> BGR


def test_descriptor_shape_and_determinism(photos):
    china = photos[0]
    v = image_descriptor(china)
    assert v.shape == (DESCRIPTOR_DIM,) and v.dtype == np.float32
    assert abs(np.linalg.norm(v) - 1) < 1e-5
    np.testing.assert_array_equal(v, image_descriptor(china.copy()))


def test_descriptor_near_frames_close_other_scenes_far(photos):
    china, flower = photos
    rng = np.random.default_rng(0)
    noisy = np.clip(china.astype(np.int16) + rng.normal(0, 12, china.shape), 0, 255).astype(np.uint8)
    brighter = cv2.convertScaleAbs(china, alpha=1.0, beta=20)
    shifted = np.roll(china, 8, axis=1)
    v = image_descriptor(china)
    other = cosine(v, image_descriptor(flower))
    for near in (noisy, brighter, shifted):
        assert cosine(v, image_descriptor(near)) > max(0.9, other + 0.2), (cosine(v, image_descriptor(near)), other)


@pytest.mark.parametrize("shape", [(480, 640, 3), (1, 1, 3), (7, 300, 3)])
def test_descriptor_of_flat_or_tiny_frames_is_finite(shape):
    v = image_descriptor(np.full(shape, 77, np.uint8))
    assert np.all(np.isfinite(v)) and abs(np.linalg.norm(v) - 1) < 1e-5
