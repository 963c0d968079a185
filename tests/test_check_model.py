"""`edgeloop agent check-model`: a model and its manifest are checked before they reach a device."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from edgeloop.hub.training.classifier import build_net, export_onnx
from edgeloop.shared.artifact import pack


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    onnx, manifest = export_onnx(build_net(), version="v1", parent=None)
    (root / "m.onnx").write_bytes(onnx)
    (root / "m.json").write_bytes(manifest.to_json())
    (root / "m.artifact").write_bytes(pack(manifest, onnx))
    wrong = dataclasses.replace(manifest, labels=manifest.labels[:5], class_counts=())
    (root / "wrong.json").write_bytes(wrong.to_json())
    renamed = dataclasses.replace(manifest, outputs={"logits": "scores_out"})
    (root / "renamed.json").write_bytes(renamed.to_json())
    return root


def check(*args):
    return subprocess.run([sys.executable, "-m", "edgeloop", "agent", "check-model", *map(str, args), "--runs", "5"],
                          capture_output=True, text=True, timeout=120)


def test_a_good_pair_prints_specs_and_latency(model):
    for args in ([model / "m.onnx", "--manifest", model / "m.json"], [model / "m.artifact"]):
        proc = check(*args)
        assert proc.returncode == 0, proc.stderr
        assert "input  image: [1, 3, 32, 32] NCHW RGB" in proc.stdout
        assert "output logits" in proc.stdout and "role=embedding" in proc.stdout
        assert "latency p50" in proc.stdout and "embedding 64-d" in proc.stdout


@pytest.mark.parametrize("manifest, says", [
    ("wrong.json", "gives 10 classes, manifest has 5 labels"),
    ("renamed.json", "'scores_out' is not an output of the model"),
])
def test_a_mismatch_is_a_clear_error(model, manifest, says):
    proc = check(model / "m.onnx", "--manifest", model / manifest)
    assert proc.returncode == 2
    assert says in proc.stderr and "Traceback" not in proc.stderr


# --- a detector ---------------------------------------------------------------------------------

# A YOLOv8-style [1, 4+3, 3] output: two class-0 boxes overlapping (NMS keeps one) and a class-2 box.
YOLO_TABLE = [[20, 22, 48], [20, 20, 40], [20, 20, 16], [20, 20, 8],  # cx, cy, w, h
              [0.9, 0.8, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.6]]  # class scores


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    import warnings

    import torch

    from edgeloop.shared.manifest import DetectionSpec, InputSpec, ModelManifest

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("table", torch.tensor(YOLO_TABLE))

        def forward(self, x):
            return (self.table + 0 * x.mean()).unsqueeze(0)

    root = tmp_path_factory.mktemp("detector")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Net(), (torch.zeros(1, 3, 64, 64),), str(root / "d.onnx"), input_names=["images"],
                          output_names=["output0"], opset_version=17, dynamo=False)
    manifest = ModelManifest(version="det-1", task="detection", input=InputSpec(name="images", height=64, width=64),
                             outputs={"detections": "output0"}, labels=("a", "b", "c"),
                             detection=DetectionSpec(score_threshold=0.3, iou_threshold=0.5, max_detections=20))
    (root / "d.json").write_bytes(manifest.to_json())
    (root / "too-few-labels.json").write_bytes(dataclasses.replace(manifest, labels=("a", "b")).to_json())
    (root / "boxes-only.json").write_bytes(dataclasses.replace(manifest, outputs={"boxes": "output0"}).to_json())
    return root


def test_a_detector_prints_its_style_thresholds_and_detections(detector):
    proc = check(detector / "d.onnx", "--manifest", detector / "d.json")
    assert proc.returncode == 0, proc.stderr
    assert "(detection, 3 labels" in proc.stdout
    assert ("detector: YOLOv8-style detections [1, 4+C, N], score >= 0.3, NMS IoU > 0.5 suppressed, at most 20; "
            "the test frame gave 2 detections") in proc.stdout
    assert "embedding descriptor (80-d)" in proc.stdout


@pytest.mark.parametrize("manifest, says", [
    ("too-few-labels.json", "model gives 3 classes (7 rows = 4 box + classes), manifest has 2 labels"),
    ("boxes-only.json", "manifest.outputs: a detector names either 'detections'"),
])
def test_a_detector_mismatch_is_a_clear_error(detector, manifest, says):
    proc = check(detector / "d.onnx", "--manifest", detector / manifest)
    assert proc.returncode == 2
    assert says in proc.stderr and "Traceback" not in proc.stderr
