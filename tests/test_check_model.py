"""`edgeloop agent check-model`: a model and its manifest are checked before they reach a device."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from edgeloop.hub.training import build_net, export_onnx
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
