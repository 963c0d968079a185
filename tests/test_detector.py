"""hub.detect: train the built-in detector on synthetic scenes, export it YOLOv8-style, fine-tune it.

The scenes are drawn here with cv2 (no simulator): red boxes, green discs and yellow-blue bars from
8 to 100 px on a smooth noisy background, under day/dusk/night gain, 0 to 4 per frame. Training is
cut short (160 frames, 8 epochs, ~20 s on 2 cores) and shared by the tests through `trained()`
(test_detect_eval.py uses it too); the task is easy enough for that to reach a clear mAP.
"""

from __future__ import annotations

import ast
import functools

import cv2
import numpy as np
import onnx
import pytest

from edgeloop.hub.training.detect import (DEFAULT_IMGSZ, EMBEDDING_DIM, STRIDE, build_detector, evaluate_detector,
                                 export_detector_onnx, load_detector_state, train_detector)
from edgeloop.hub.training.golden import DetectionSet, load_detection_set
from edgeloop.shared.errors import ConfigError, ModelError
from edgeloop.shared.manifest import ModelManifest
from edgeloop.shared.runtime import ModelRuntime

NAMES = ("box", "disc", "bar")
GAIN = {"day": 1.0, "dusk": 0.6, "night": 0.3}
COLOURS = ((40, 40, 230), (40, 220, 40), (230, 200, 40))  # BGR


def make_scenes(n: int, seed: int, width: int = 320, height: int = 240) -> DetectionSet:
    """-> n frames (height, width) with their boxes; lighting cycles day, dusk, night; two sites."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, height, width, 3), np.uint8)
    boxes, classes, tags = [], [], []
    for i in range(n):
        light = ("day", "dusk", "night")[i % 3]
        bg = cv2.resize(rng.integers(40, 140, (6, 8, 3), dtype=np.uint8), (width, height),
                        interpolation=cv2.INTER_CUBIC)
        img = bg.astype(np.float32)
        bb, cc = [], []
        for _ in range(rng.integers(0, 5)):
            c = int(rng.integers(0, 3))
            size = float(np.exp(rng.uniform(np.log(8), np.log(100))))  # log-uniform: as many small as large
            bw, bh = size, size * (rng.uniform(0.25, 0.4) if c == 2 else rng.uniform(0.6, 1.0))
            x1, y1 = rng.uniform(0, width - bw), rng.uniform(0, height - bh)
            colour = tuple(float(v * rng.uniform(0.8, 1.1)) for v in COLOURS[c])
            if c == 1:
                centre = (int(round(x1 + bw / 2)), int(round(y1 + bh / 2)))
                cv2.ellipse(img, centre, (max(1, int(bw / 2)), max(1, int(bh / 2))), 0, 0, 360, colour, -1)
            else:
                corners = (int(round(x1)), int(round(y1))), (int(round(x1 + bw)), int(round(y1 + bh)))
                cv2.rectangle(img, *corners, colour, -1)
            bb.append([x1, y1, x1 + bw, y1 + bh])
            cc.append(c)
        img = img * GAIN[light] + rng.normal(0, 6, img.shape)
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
        boxes.append(np.array(bb, np.float32).reshape(-1, 4))
        classes.append(np.array(cc, np.int64))
        tags.append({"lighting": light, "weather": ("clear", "rain")[i % 2], "site": f"site-{i % 2}",
                     "camera": "cam-0"})
    return DetectionSet(images, boxes, classes, NAMES, tags)


@functools.cache
def trained():
    """-> (train set, DetTrainResult, onnx bytes, manifest): one short training, shared by the test files."""
    data = make_scenes(160, seed=1)
    result = train_detector(data.images, data.boxes, data.classes, NAMES, epochs=8, seed=0)
    onnx_bytes, manifest = export_detector_onnx(result.net, version="v1", parent=None, names=NAMES,
                                                parity_frames=data.images[:4])
    return data, result, onnx_bytes, manifest


@functools.cache
def golden() -> DetectionSet:
    return make_scenes(60, seed=99)


# --- the artifact -----------------------------------------------------------------------------

def test_export_speaks_yolov8():
    _, result, onnx_bytes, manifest = trained()
    h, w = DEFAULT_IMGSZ
    rt = ModelRuntime.load(onnx_bytes, manifest)  # the agent's runtime
    out0, emb = rt.session.run(["output0", "embedding"], {"images": rt.prepare([golden().images[0]])})
    assert out0.shape == (1, 4 + len(NAMES), (h // STRIDE) * (w // STRIDE))
    assert emb.shape == (1, EMBEDDING_DIM)
    scores = out0[0, 4:]
    assert scores.min() >= 0 and scores.max() <= 1  # sigmoid probabilities, as YOLOv8's
    assert np.all(out0[0, 2:4] > 0)  # widths and heights

    meta = {p.key: p.value for p in onnx.load_from_string(onnx_bytes).metadata_props}
    assert ast.literal_eval(meta["names"]) == dict(enumerate(NAMES))
    assert ast.literal_eval(meta["imgsz"]) == [h, w]
    assert meta["stride"] == str(STRIDE) and meta["task"] == "detect"

    assert manifest == ModelManifest.from_json(manifest.to_json())
    assert manifest.task == "detection" and manifest.labels == NAMES
    assert manifest.outputs == {"detections": "output0", "embedding": "embedding"}
    assert (manifest.input.name, manifest.input.resize, manifest.input.color) == ("images", "letterbox", "RGB")
    assert manifest.input.shape == (1, 3, h, w)
    assert manifest.metrics["onnx_parity_max_abs_diff"] <= 1e-3
    pred = rt.predict(golden().images[0])
    assert pred.detections.shape[1] == 6 and pred.embedding_source == "model"


def test_training_beats_an_untrained_net():
    _, _, onnx_bytes, manifest = trained()
    untrained_bytes, untrained_manifest = export_detector_onnx(build_detector(len(NAMES)).eval(), version="v0",
                                                               parent=None, names=NAMES)
    after = evaluate_detector(ModelRuntime.load(onnx_bytes, manifest), golden())
    before = evaluate_detector(ModelRuntime.load(untrained_bytes, untrained_manifest), golden())
    assert after["map50"] > 0.5 and after["map50"] > before["map50"] + 0.4, (before["map50"], after["map50"])
    assert after["map"] > before["map"]
    assert set(after["per_slice"]) == {"day", "dusk", "night"}
    assert {"lighting:night", "weather:rain", "site:site-1", "size:S", "size:M"} <= set(after["slices"])
    assert all(0 <= v <= 1 for v in after["slices"].values())
    assert set(after["per_class"]) == set(NAMES)


def test_fine_tuning_starts_from_the_parent():
    data, parent, _, _ = trained()
    few = make_scenes(32, seed=5)
    losses = {}
    for name, state in (("scratch", None), ("parent", parent.state)):
        r = train_detector(few.images, few.boxes, few.classes, NAMES, parent_state=state, epochs=1, batch_size=16,
                           progress=lambda e, n, loss, name=name: losses.setdefault(name, loss))
        assert r.settings["from_parent"] is (state is not None)
    assert losses["parent"] < 0.5 * losses["scratch"], losses


def test_training_is_deterministic_for_a_seed_and_keeps_empty_frames():
    data = make_scenes(16, seed=7)
    data.boxes[0], data.classes[0] = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)  # a negative frame
    runs = [train_detector(list(data.images), data.boxes, data.classes, NAMES, epochs=1, batch_size=8, seed=3)
            for _ in range(2)]
    assert runs[0].state == runs[1].state
    assert np.isfinite(runs[0].train_loss)


def test_bad_state_bytes_raise_model_error():
    _, result, _, _ = trained()
    with pytest.raises(ModelError, match="DetectorNet"):
        load_detector_state(b"not a state", len(NAMES))
    with pytest.raises(ModelError, match="DetectorNet\\(5 classes\\)"):
        load_detector_state(result.state, 5)
    assert load_detector_state(result.state, len(NAMES)).num_classes == len(NAMES)


def test_export_refuses_names_that_do_not_fit():
    with pytest.raises(ModelError, match="names has 2"):
        export_detector_onnx(build_detector(3), version="v0", parent=None, names=("a", "b"))


# --- the golden set file ----------------------------------------------------------------------

def test_detection_set_round_trip(tmp_path):
    s = make_scenes(6, seed=3)
    s.boxes[2], s.classes[2] = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    s.save(tmp_path / "g.npz")
    back = load_detection_set(tmp_path / "g.npz")
    assert np.array_equal(back.images, s.images) and back.names == s.names and back.tags == s.tags
    for a, b, ca, cb in zip(back.boxes, s.boxes, back.classes, s.classes):
        assert a.dtype == np.float32 and np.array_equal(a, b) and np.array_equal(ca, cb)
    with np.load(tmp_path / "g.npz") as z:  # the simulator's keys
        assert str(z["task"]) == "detect" and list(z["slices"]) == [t["lighting"] for t in s.tags]


def _npz(path, **changes):
    s = make_scenes(3, seed=4)
    s.save(path)
    with np.load(path) as z:
        keys = {k: z[k] for k in z.files}
    for k, v in changes.items():
        if v is None:
            del keys[k]
        else:
            keys[k] = v
    np.savez(path, **keys)


@pytest.mark.parametrize("changes, says", [
    ({"box_class": None}, "missing key\\(s\\) box_class"),
    ({"task": np.array("classify")}, "task is 'classify'"),
    ({"box_image": np.array([0, 9])}, "box_image .* expected"),
    ({"images": np.zeros((3, 8, 8), np.uint8)}, "images: expected"),
    ({"weather": np.array(["clear"])}, "weather: expected \\(3,\\)"),
])
def test_bad_detection_sets(tmp_path, changes, says):
    path = tmp_path / "bad.npz"
    _npz(path, **changes)
    with pytest.raises(ConfigError, match=says):
        load_detection_set(path)


def test_unreadable_detection_sets(tmp_path):
    with pytest.raises(ConfigError, match="not a detection set"):
        load_detection_set(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk" * 100)
    with pytest.raises(ConfigError, match="not a detection set"):
        load_detection_set(tmp_path / "junk.npz")
    make_scenes(2, seed=1).save(tmp_path / "cut.npz")
    data = (tmp_path / "cut.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="not a detection set"):
        load_detection_set(tmp_path / "cut.npz")
