"""hub.training: train on synthetic digits, fine-tune from a parent, export to ONNX, evaluate.

The data is drawn here with cv2 (no simulator): a digit in a fixed font over a smooth random
background, shifted a little, under day/dusk/night gain. Training is cut short (few images,
few epochs) to keep the file fast; the task is easy enough for that to reach high accuracy.
"""

from __future__ import annotations

import math
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from edgeloop.hub.training.classifier import (DEFAULT_INPUT, EMBEDDING_DIM, LABELS, ClassifierNet, TrainResult, build_net, evaluate,
                                   export_onnx, load_state, train)
from edgeloop.shared.errors import ManifestError, ModelError
from edgeloop.shared.manifest import ModelManifest
from edgeloop.shared.preprocess import preprocess
from edgeloop.shared.runtime import ModelRuntime, Prediction

SLICES = ("day", "dusk", "night")
GAIN = {"day": 1.0, "dusk": 0.6, "night": 0.35}


def make_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> images (n, 64, 64, 3) uint8 BGR, labels (n,) int64 balanced over 0..9, slices (n,) str."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    slices = rng.choice(SLICES, n)
    images = np.empty((n, 64, 64, 3), np.uint8)
    for i, (label, light) in enumerate(zip(labels, slices)):
        # smooth random background: 6x6 noise blown up, kept darker than the digit
        bg = cv2.resize(rng.integers(0, 110, (6, 6, 3), dtype=np.uint8), (64, 64), interpolation=cv2.INTER_CUBIC)
        ink = tuple(int(v) for v in rng.integers(190, 256, 3))
        (w, h), _ = cv2.getTextSize(str(label), cv2.FONT_HERSHEY_SIMPLEX, 1.6, 4)
        x, y = 32 - w // 2 + int(rng.integers(-5, 6)), 32 + h // 2 + int(rng.integers(-5, 6))
        cv2.putText(bg, str(label), (x, y), cv2.FONT_HERSHEY_SIMPLEX, 1.6, ink, 4, cv2.LINE_AA)
        frame = bg * GAIN[light] + rng.normal(0, 4, bg.shape)
        images[i] = np.clip(frame, 0, 255).astype(np.uint8)
    return images, labels, slices


@pytest.fixture(scope="module")
def data():
    return make_digits(400, seed=1), make_digits(200, seed=2)


@pytest.fixture(scope="module")
def trained(data):
    (x, y, _), _ = data
    seen = []
    result = train(x, y, epochs=6, seed=0, progress=lambda e, n, loss: seen.append((e, n, loss)))
    return result, seen


@pytest.fixture(scope="module")
def exported(trained, data):
    result, _ = trained
    _, (xt, _, _) = data
    onnx_bytes, manifest = export_onnx(result.net, version="v2", parent="v1", class_counts=[40] * 10,
                                       metrics={"val_accuracy": 0.5}, parity_frames=xt[:32])
    return onnx_bytes, manifest


def test_net_shapes():
    net = build_net().eval()
    assert isinstance(net, ClassifierNet)
    logits, emb = net(torch.zeros(5, 3, DEFAULT_INPUT.height, DEFAULT_INPUT.width))
    assert logits.shape == (5, len(LABELS)) and emb.shape == (5, EMBEDDING_DIM) == (5, 64)
    assert sum(p.numel() for p in net.parameters()) < 200_000  # "small"


def test_training_reaches_high_accuracy_on_held_out_data(trained, exported, data):
    result, seen = trained
    _, (xt, yt, st) = data
    assert isinstance(result, TrainResult) and not result.net.training
    assert result.epochs == 6 and math.isfinite(result.seconds)  # the time is reported, whatever it is
    assert [(e, n) for e, n, _ in seen] == [(e, 6) for e in range(1, 7)]
    assert seen[-1][2] == result.train_loss < seen[0][2]
    report = evaluate(ModelRuntime.load(*exported), xt, yt, st)
    assert report["n"] == 200
    assert report["accuracy"] >= 0.9, report
    assert all(report["per_slice"][s] >= 0.8 for s in SLICES), report


def test_state_round_trips(trained):
    result, _ = trained
    net = load_state(result.state)
    assert not net.training
    x = torch.from_numpy(preprocess(make_digits(8, seed=9)[0], DEFAULT_INPUT))
    with torch.no_grad():
        for a, b in zip(net(x), result.net(x)):
            assert torch.equal(a, b)


def test_load_state_rejects_bad_bytes(trained):
    with pytest.raises(ModelError, match="does not load"):
        load_state(b"not a state dict")
    with pytest.raises(ModelError, match="3 classes"):
        load_state(trained[0].state, num_classes=3)


def test_finetune_starts_from_parent(trained, data):
    parent, _ = trained
    (x, y, _), _ = data
    # With zero epochs the child is exactly its parent.
    child = train(x, y, parent_state=parent.state, epochs=0)
    assert child.state == parent.state
    # One epoch on new data: the child starts where the parent is (it already knows digits), a fresh net
    # starts at chance (loss ~ ln 10 = 2.3).
    x2, y2, _ = make_digits(128, seed=3)
    first = {}
    for name, state in (("child", parent.state), ("fresh", None)):
        train(x2, y2, parent_state=state, epochs=1, progress=lambda e, n, loss, name=name: first.setdefault(name, loss))
    assert first["child"] < first["fresh"] / 2, first


def test_same_seed_same_model_other_seed_other_model(data):
    (x, y, _), _ = data
    x, y = x[:128], y[:128]
    a, b, c = (train(x, y, epochs=2, seed=s) for s in (7, 7, 8))
    assert a.state == b.state
    assert a.state != c.state


def test_train_validates_input(data):
    (x, y, _), _ = data
    with pytest.raises(ValueError, match="labels"):
        train(x[:10], np.full(10, 10), epochs=1)
    with pytest.raises(ValueError, match="uint8"):
        train(x[:10].astype(np.float32), y[:10], epochs=1)


def test_export_manifest_and_parity(exported, trained, data):
    onnx_bytes, m = exported
    assert isinstance(onnx_bytes, bytes)
    assert (m.version, m.parent, m.task, m.input) == ("v2", "v1", "classification", DEFAULT_INPUT)
    assert m.outputs == {"logits": "logits", "embedding": "embedding"}
    assert m.labels == LABELS and m.class_counts == (40,) * 10
    assert m.metrics["val_accuracy"] == 0.5
    assert 0 <= m.metrics["onnx_parity_max_abs_diff"] <= 1e-3
    assert m.created_at.endswith("+00:00")
    assert ModelManifest.from_json(m.to_json()) == m

    # The deployed path (ModelRuntime: preprocess + onnxruntime + softmax) agrees with torch,
    # for any batch size (the batch axis is dynamic).
    rt = ModelRuntime.load(onnx_bytes, m)
    net = trained[0].net
    frames = data[1][0][:7]
    with torch.no_grad():
        logits, emb = net(torch.from_numpy(preprocess(frames, DEFAULT_INPUT)))
    want_probs = torch.softmax(logits, 1).numpy()
    want_emb = torch.nn.functional.normalize(emb, dim=1).numpy()
    for preds in (rt.predict_batch(list(frames)), [rt.predict(f) for f in frames]):
        np.testing.assert_allclose(np.stack([p.probs for p in preds]), want_probs, atol=1e-4)
        np.testing.assert_allclose(np.stack([p.embedding for p in preds]), want_emb, atol=1e-4)


def test_export_without_parity_frames_uses_random_ones():
    _, m = export_onnx(build_net(), version="v0", parent=None)
    assert m.parent is None and m.metrics["onnx_parity_max_abs_diff"] <= 1e-3


class _DriftsWhenExported(ClassifierNet):
    """A net whose exported graph differs from its eager self: the parity check must catch it."""

    def forward(self, x):
        logits, emb = super().forward(x)
        return (logits + 0.5 if torch.onnx.is_in_onnx_export() else logits), emb


def test_export_raises_when_onnx_disagrees_with_torch():
    with pytest.raises(ModelError, match=r"differ by up to 0\.5"):
        export_onnx(_DriftsWhenExported(), version="bad", parent=None)


def test_export_rejects_a_bad_manifest():
    with pytest.raises(ManifestError, match="class_counts"):
        export_onnx(build_net(), version="v0", parent=None, class_counts=[1, 2])


class _LookupRuntime:
    """Stands in for ModelRuntime: frame i is filled with the value i, and predicts PREDS[i]."""

    PREDS = [3, 1, 7, 0, 5, 5]

    def predict_batch(self, frames):
        return [Prediction(np.eye(10, dtype=np.float32)[self.PREDS[int(f[0, 0, 0])]], None, 0.0) for f in frames]


def test_evaluate_per_slice_by_hand():
    images = np.stack([np.full((64, 64, 3), i, np.uint8) for i in range(6)])
    labels = np.array([3, 1, 2, 0, 4, 9])  # right, right, wrong, right, wrong, wrong
    slices = ["day", "day", "day", "night", "night", "dusk"]
    report = evaluate(_LookupRuntime(), images, labels, slices, batch=4)  # two batches: order must hold
    assert report == {
        "accuracy": 0.5, "n": 6,
        "per_slice": {"day": 2 / 3, "dusk": 0.0, "night": 0.5},
        "per_slice_n": {"day": 3, "dusk": 1, "night": 2},
    }
    with pytest.raises(ValueError):
        evaluate(_LookupRuntime(), images, labels[:5], slices)


def test_device_side_never_imports_torch():
    code = ("import sys, edgeloop.shared.runtime, edgeloop.shared.preprocess, edgeloop.shared.manifest; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

