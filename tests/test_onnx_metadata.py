"""A bare ONNX as Ultralytics exports it: its metadata is enough to run it, or the refusal names what
is missing (`edgeloop.shared.onnx_metadata`, `edgeloop agent check-model`)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, strategies as st

from edgeloop.shared.errors import ManifestError
from edgeloop.shared.onnx_metadata import infer_manifest, load_model_file, parse_names
from edgeloop.shared.runtime import ModelRuntime
from factories import ultralytics_style

NAMES = ("car", "van", "bike")


@pytest.fixture(scope="module")
def exported():
    from edgeloop.hub.training.detect import build_detector, export_detector_onnx

    import torch

    torch.manual_seed(0)
    return export_detector_onnx(build_detector(len(NAMES)), version="v0", parent=None, names=NAMES)


@pytest.fixture(scope="module")
def bare(exported, tmp_path_factory):
    onnx, _ = exported
    path = tmp_path_factory.mktemp("bare") / "yolo.onnx"
    path.write_bytes(ultralytics_style(onnx, NAMES, (192, 256)))
    return path


@given(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=40, unique=True))
def test_names_as_ultralytics_writes_them_read_back(names):
    assert parse_names(str(dict(enumerate(names)))) == tuple(names)
    assert parse_names(str(list(names))) == tuple(names)


@pytest.mark.parametrize("raw, says", [
    ("__import__('os').system('touch /tmp/pwned')", "not a Python literal"),
    ("{1: 'car', 2: 'van'}", "ids 0..1"),
    ("{0: 'car', 1: 'car'}", "appears twice"),
    ("{0: ''}", "non-empty"),
    ("{}", "expected a dict"),
    ("'car'", "expected a dict"),
])
def test_names_that_are_not_a_class_list_are_refused(raw, says):
    with pytest.raises(ManifestError, match=says):
        parse_names(raw)


def test_the_inferred_manifest_runs_the_model_as_its_own_manifest_does(exported, bare):
    onnx, manifest = exported
    inferred, notes = infer_manifest(bare.read_bytes())
    assert inferred.task == "detection" and inferred.labels == NAMES
    spec = inferred.input
    assert (spec.name, spec.height, spec.width, spec.resize, spec.color) == ("images", 192, 256, "letterbox", "RGB")
    assert spec.scale == pytest.approx(1 / 255) and spec.mean == (0, 0, 0) and spec.std == (1, 1, 1)
    assert inferred.outputs == {"detections": "output0"}
    assert any("letterbox" in n for n in notes)
    frame = np.random.default_rng(1).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    ours = ModelRuntime.load(onnx, manifest).predict(frame)
    theirs = ModelRuntime.load(bare.read_bytes(), inferred).predict(frame)
    np.testing.assert_allclose(theirs.detections, ours.detections, atol=1e-5)


def test_the_input_shape_stands_in_for_a_missing_imgsz(exported):
    inferred, notes = infer_manifest(ultralytics_style(exported[0], NAMES, None))
    assert (inferred.input.height, inferred.input.width) == (192, 256)
    assert any("fixed shape" in n for n in notes)


@pytest.mark.parametrize("drop, says", [("names", "lacks names"), ("task", "lacks task")])
def test_metadata_that_does_not_suffice_names_what_is_missing(exported, drop, says):
    with pytest.raises(ManifestError, match=says):
        infer_manifest(ultralytics_style(exported[0], NAMES, (192, 256), drop=[drop]))


def test_a_task_edgeloop_does_not_run_is_refused(exported):
    with pytest.raises(ManifestError, match="'segment'"):
        infer_manifest(ultralytics_style(exported[0], NAMES, (192, 256), task="segment"))


def test_a_given_manifest_overrides_the_metadata(exported, bare):
    onnx, manifest = exported
    _, used, notes = load_model_file(bare.read_bytes(), manifest.to_json())
    assert used == manifest and notes == ["manifest: given"]
    with pytest.raises(ManifestError, match="not an ONNX model"):
        load_model_file(b"neither an artifact nor onnx")


def test_check_model_prints_the_classes_and_the_inferred_preprocessing(bare):
    proc = subprocess.run([sys.executable, "-m", "edgeloop", "agent", "check-model", str(bare), "--runs", "3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "classes car, van, bike" in proc.stdout
    assert "inferred from the ONNX metadata" in proc.stdout
    assert "192x256 from metadata imgsz, letterbox" in proc.stdout and "scale 1/255" in proc.stdout
    assert "input  images: [1, 3, 192, 256] NCHW RGB" in proc.stdout and "resize=letterbox" in proc.stdout
