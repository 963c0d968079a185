"""Model manifest, model artifact and images: round trips and typed refusals."""

from __future__ import annotations

import copy
import hashlib
import json
import struct

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgeloop.shared import artifact, images
from edgeloop.shared.errors import ImageError, IntegrityError, ManifestError, ModelError
from edgeloop.shared.manifest import (COLORS, LAYOUTS, MAX_MANIFEST_BYTES, OUTPUT_ROLES, RESIZES, InputSpec,
                                      ModelManifest)

# --- manifest -----------------------------------------------------------------------------------


def manifest_dict(**overrides) -> dict:
    d = {
        "version": "m-2",
        "task": "classification",
        "input": {"name": "input", "height": 64, "width": 48, "layout": "NCHW", "color": "RGB",
                  "scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                  "resize": "letterbox"},
        "outputs": {"logits": "logits", "embedding": "emb"},
        "labels": ["cat", "dog", "bird"],
        "parent": "m-1",
        "class_counts": [10, 0, 3],
        "metrics": {"accuracy": 0.9, "slices": {"night": 0.7}},
        "created_at": "2024-05-01T12:00:00Z",
    }
    d.update(overrides)
    return d


MANIFEST = ModelManifest.from_dict(manifest_dict())
ONNX = b"\x08\x07\x12\x07pytorch" + bytes(range(256)) * 4  # opaque to the artifact code

text = st.text(max_size=16)
nonempty = st.text(min_size=1, max_size=16)
finite = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | finite | text,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                           max_leaves=8)
input_specs = st.builds(
    InputSpec, name=nonempty, height=st.integers(1, 4096), width=st.integers(1, 4096),
    layout=st.sampled_from(LAYOUTS), color=st.sampled_from(COLORS),
    scale=st.floats(1e-9, 1e9), mean=st.tuples(finite, finite, finite),
    std=st.tuples(*[finite.filter(lambda x: x != 0)] * 3), resize=st.sampled_from(RESIZES))


@st.composite
def manifests(draw) -> ModelManifest:
    task = draw(st.sampled_from(["classification", "detection"]))
    outputs = draw(st.dictionaries(st.sampled_from(OUTPUT_ROLES), nonempty, min_size=1, max_size=4))
    if task == "classification" and not {"logits", "probabilities"} & outputs.keys():
        outputs[draw(st.sampled_from(["logits", "probabilities"]))] = draw(nonempty)
    labels = tuple(draw(st.lists(text, min_size=1, max_size=6)))
    counts = draw(st.just(()) | st.lists(st.integers(0, 10**9), min_size=len(labels), max_size=len(labels))
                  .map(tuple))
    return ModelManifest(version=draw(nonempty), task=task, input=draw(input_specs), outputs=outputs,
                         labels=labels, parent=draw(st.none() | text), class_counts=counts,
                         metrics=draw(st.dictionaries(text, json_values, max_size=4)), created_at=draw(text))


def test_manifest_example_reads():
    m = MANIFEST
    assert m.num_classes == 3 and m.labels == ("cat", "dog", "bird")
    assert m.input.shape == (1, 3, 64, 48)
    assert m.input.mean == (0.485, 0.456, 0.406) and m.input.std == (0.229, 0.224, 0.225)
    assert m.class_counts == (10, 0, 3) and m.parent == "m-1"


def test_manifest_defaults():
    m = ModelManifest.from_dict({"version": "v1", "task": "detection", "input": {"name": "x", "height": 2, "width": 3},
                                 "outputs": {"boxes": "b"}, "labels": ["car"]})
    assert m.input == InputSpec(name="x", height=2, width=3)
    assert m.input.shape == (1, 3, 2, 3)
    assert m.parent is None and m.class_counts == () and m.metrics == {} and m.created_at == ""


@settings(max_examples=200)
@given(manifests())
def test_manifest_json_round_trip(m):
    data = m.to_json()
    assert isinstance(data, bytes)
    back = ModelManifest.from_json(data)
    assert back == m
    assert back.to_json() == data
    assert ModelManifest.from_json(data.decode()) == m
    assert ModelManifest.from_dict(json.loads(data)) == m


def test_manifest_json_is_canonical():
    shuffled = dict(reversed(list(manifest_dict().items())))
    assert ModelManifest.from_dict(shuffled).to_json() == MANIFEST.to_json()


def _without(key, where=None):
    d = manifest_dict()
    del (d if where is None else d[where])[key]
    return d


def _input(**changes):
    d = manifest_dict()
    d["input"] = {**d["input"], **changes}
    return d


BAD_MANIFESTS = [
    # (id, manifest dict, the field the error names)
    ("bad-task", manifest_dict(task="segmentation"), "manifest.task"),
    ("task-missing", _without("task"), "manifest.task"),
    ("unknown-key", manifest_dict(tags=["x"]), "manifest: unknown key(s) tags"),
    ("unknown-input-key", _input(channels=3), "manifest.input: unknown key(s) channels"),
    ("version-missing", _without("version"), "manifest.version"),
    ("version-empty", manifest_dict(version=""), "manifest.version"),
    ("version-number", manifest_dict(version=3), "manifest.version"),
    ("input-missing", _without("input"), "manifest.input"),
    ("input-list", manifest_dict(input=[1, 2]), "manifest.input"),
    ("input-name-missing", _without("name", "input"), "manifest.input.name"),
    ("outputs-missing", _without("outputs"), "manifest.outputs"),
    ("outputs-empty", manifest_dict(outputs={}), "manifest.outputs"),
    ("outputs-list", manifest_dict(outputs=["logits"]), "manifest.outputs"),
    ("output-unknown-role", manifest_dict(outputs={"logits": "l", "heatmap": "h"}), "manifest.outputs.heatmap"),
    ("output-name-empty", manifest_dict(outputs={"logits": ""}), "manifest.outputs.logits"),
    ("classifier-without-logits", manifest_dict(outputs={"embedding": "e"}), "manifest.outputs"),
    ("labels-missing", _without("labels"), "manifest.labels"),
    ("labels-empty", manifest_dict(labels=[]), "manifest.labels"),
    ("labels-not-strings", manifest_dict(labels=["a", 2], class_counts=[]), "manifest.labels"),
    ("class-counts-length", manifest_dict(class_counts=[1, 2]), "manifest.class_counts"),
    ("class-counts-negative", manifest_dict(class_counts=[1, -2, 3]), "manifest.class_counts"),
    ("class-counts-float", manifest_dict(class_counts=[1, 2.5, 3]), "manifest.class_counts"),
    ("class-counts-object", manifest_dict(class_counts={"cat": 1}), "manifest.class_counts"),
    ("parent-number", manifest_dict(parent=1), "manifest.parent"),
    ("metrics-list", manifest_dict(metrics=[0.9]), "manifest.metrics"),
    ("created-at-number", manifest_dict(created_at=1714564800), "manifest.created_at"),
    ("std-zero", _input(std=[0.2, 0, 0.2]), "manifest.input.std"),
    ("std-two-numbers", _input(std=[0.2, 0.2]), "manifest.input.std"),
    ("mean-strings", _input(mean=["0", "0", "0"]), "manifest.input.mean"),
    ("height-zero", _input(height=0), "manifest.input.height"),
    ("height-too-big", _input(height=4097), "manifest.input.height"),
    ("height-bool", _input(height=True), "manifest.input.height"),
    ("height-float", _input(height=64.0), "manifest.input.height"),
    ("width-missing", _without("width", "input"), "manifest.input.width"),
    ("scale-zero", _input(scale=0), "manifest.input.scale"),
    ("scale-negative", _input(scale=-1.0), "manifest.input.scale"),
    ("scale-string", _input(scale="1/255"), "manifest.input.scale"),
    ("layout", _input(layout="CHW"), "manifest.input.layout"),
    ("color", _input(color="YUV"), "manifest.input.color"),
    ("resize", _input(resize="crop"), "manifest.input.resize"),
]


@pytest.mark.parametrize("raw, path", [pytest.param(d, p, id=i) for i, d, p in BAD_MANIFESTS])
def test_malformed_manifest_names_the_field(raw, path):
    with pytest.raises(ManifestError) as info:
        ModelManifest.from_dict(copy.deepcopy(raw))
    assert str(info.value).startswith(path), str(info.value)
    with pytest.raises(ManifestError) as info:
        ModelManifest.from_json(json.dumps(raw).encode())
    assert str(info.value).startswith(path), str(info.value)


@pytest.mark.parametrize("data, path", [
    (b"", "manifest: not valid JSON"),
    (b"{", "manifest: not valid JSON"),
    (b"{'version': 'x'}", "manifest: not valid JSON"),
    (b"\xff\xfe\x00garbage", "manifest: not valid JSON"),
    (b"\xc3\x28", "manifest: not valid JSON"),  # invalid UTF-8
    ("not json", "manifest: not valid JSON"),
    (b"[]", "manifest: expected a JSON object"),
    (b"[1, 2]", "manifest: expected a JSON object"),
    (b"\"manifest\"", "manifest: expected a JSON object"),
    (b"42", "manifest: expected a JSON object"),
    (b"null", "manifest: expected a JSON object"),
    (b" " * (MAX_MANIFEST_BYTES + 1), "manifest: "),
], ids=lambda v: repr(v)[:24])
def test_unreadable_manifest(data, path):
    with pytest.raises(ManifestError) as info:
        ModelManifest.from_json(data)
    assert str(info.value).startswith(path)


@pytest.mark.parametrize("depth", [100_000, 400_000])
def test_deeply_nested_manifest_is_a_manifest_error(depth):
    with pytest.raises(ManifestError):
        ModelManifest.from_json(b"[" * depth + b"]" * depth)


@pytest.mark.parametrize("raw, path", [
    (_input(scale=float("nan")), "manifest.input.scale"),
    (_input(scale=float("inf")), "manifest.input.scale"),
    (_input(scale=True), "manifest.input.scale"),
    (_input(mean=[float("nan"), 0.0, 0.0]), "manifest.input.mean"),
    (_input(std=[float("inf"), 1.0, 1.0]), "manifest.input.std"),
    (_input(std=[float("nan"), 1.0, 1.0]), "manifest.input.std"),
    (manifest_dict(class_counts=[True, False, True]), "manifest.class_counts"),
], ids=["scale-nan", "scale-inf", "scale-bool", "mean-nan", "std-inf", "std-nan", "counts-bool"])
def test_non_finite_or_boolean_numbers_refused(raw, path):
    with pytest.raises(ManifestError, match="^" + path.replace(".", r"\.")):
        ModelManifest.from_json(json.dumps(raw))


# --- artifact -----------------------------------------------------------------------------------

def test_artifact_round_trip_example():
    data = artifact.pack(MANIFEST, ONNX)
    art = artifact.unpack(data)
    assert art.manifest == MANIFEST and art.onnx == ONNX
    assert art.manifest_bytes == MANIFEST.to_json()
    assert art.version == "m-2"
    mb = MANIFEST.to_json()  # digest_v 2: a tag, then each part after its 8-byte big-endian length
    assert art.digest == hashlib.sha256(b"edgeloop model v2\x00" + len(mb).to_bytes(8, "big") + mb +
                                        len(ONNX).to_bytes(8, "big") + ONNX).hexdigest()
    assert art.digest == artifact.model_digest(art.manifest_bytes, art.onnx)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(manifests(), st.binary(max_size=2000))
def test_artifact_round_trip(m, onnx):
    art = artifact.unpack(artifact.pack(m, onnx))
    assert art.manifest == m and art.onnx == onnx and art.manifest_bytes == m.to_json()
    assert art.digest == artifact.model_digest(m.to_json(), onnx) != artifact.model_digest(m.to_json(), onnx, False)


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=2000), st.data())
def test_digest_changes_when_one_onnx_byte_changes(onnx, data):
    i = data.draw(st.integers(0, len(onnx) - 1), label="index")
    flip = data.draw(st.integers(1, 255), label="xor")
    changed = onnx[:i] + bytes([onnx[i] ^ flip]) + onnx[i + 1:]
    before = artifact.unpack(artifact.pack(MANIFEST, onnx)).digest
    after = artifact.unpack(artifact.pack(MANIFEST, changed)).digest
    assert before != after


def test_digest_covers_the_manifest_too():
    other = ModelManifest.from_dict(manifest_dict(version="m-3"))
    assert artifact.unpack(artifact.pack(MANIFEST, ONNX)).digest != artifact.unpack(artifact.pack(other, ONNX)).digest


@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
@example(ONNX)
def test_truncated_artifact_is_an_integrity_error(onnx):
    data = artifact.pack(MANIFEST, onnx)
    for cut in range(len(data)):
        with pytest.raises(IntegrityError):
            artifact.unpack(data[:cut])


@settings(max_examples=300)
@given(st.binary(max_size=512))
@example(b"")
@example(b"\xc1")
@example(msgpack.packb({"v": 1, "type": "model"}))
def test_random_bytes_are_an_integrity_error(data):
    with pytest.raises(IntegrityError):
        artifact.unpack(data)


@pytest.mark.parametrize("raw", [
    [1, 2], "model", None,
    {"v": 2, "type": "model", "manifest": MANIFEST.to_json(), "onnx": ONNX},
    {"v": 1, "type": "modle", "manifest": MANIFEST.to_json(), "onnx": ONNX},
    {"type": "model", "manifest": MANIFEST.to_json(), "onnx": ONNX},
    {"v": 1, "type": "model", "manifest": MANIFEST.to_json().decode(), "onnx": ONNX},
    {"v": 1, "type": "model", "manifest": MANIFEST.to_json(), "onnx": list(ONNX[:4])},
    {"v": 1, "type": "model", "manifest": MANIFEST.to_json()},
], ids=["list", "str", "nil", "v2", "type", "no-v", "manifest-str", "onnx-list", "no-onnx"])
def test_malformed_artifact_is_an_integrity_error(raw):
    with pytest.raises(IntegrityError, match=r"^artifact: "):
        artifact.unpack(msgpack.packb(raw, use_bin_type=True))


def test_well_formed_artifact_with_bad_manifest_is_a_manifest_error():
    raw = {"v": 1, "type": "model", "manifest": json.dumps(manifest_dict(task="x")).encode(), "onnx": ONNX}
    with pytest.raises(ManifestError, match=r"^manifest\.task"):
        artifact.unpack(msgpack.packb(raw, use_bin_type=True))
    assert issubclass(ManifestError, ModelError) and issubclass(IntegrityError, ModelError)


# --- images -------------------------------------------------------------------------------------

@st.composite
def frames(draw) -> np.ndarray:
    h, w = draw(st.integers(1, 80)), draw(st.integers(1, 80))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@settings(max_examples=60)
@given(frames(), st.integers(1, 100))
def test_jpeg_round_trip_keeps_the_shape(frame, quality):
    data = images.encode_jpeg(frame, quality)
    assert data[:2] == b"\xff\xd8"
    back = images.decode_image(data)
    assert back.shape == frame.shape and back.dtype == np.uint8


def test_jpeg_round_trip_is_close_for_a_smooth_frame():
    y, x = np.mgrid[0:48, 0:64]
    frame = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)
    back = images.decode_image(images.encode_jpeg(frame, 95))
    assert np.abs(back.astype(int) - frame.astype(int)).mean() < 3


def test_png_decodes_exactly():
    import cv2

    frame = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", frame)
    assert ok
    assert np.array_equal(images.decode_image(buf.tobytes()), frame)


def test_sha256_helper():
    assert images.sha256(b"abc") == hashlib.sha256(b"abc").hexdigest()


_JPEG = images.encode_jpeg(np.zeros((16, 16, 3), np.uint8))


@pytest.mark.parametrize("data", [
    b"", b"x", b"not an image at all", bytes(100), b"\xff\xd8", _JPEG[:20], b"\x89PNG\r\n\x1a\n",
    b"\x89PNG\r\n\x1a\n" + bytes(40), b"GIF89a" + bytes(20), b"BM" + bytes(20),
], ids=lambda v: repr(v)[:20])
def test_corrupt_bytes_are_an_image_error(data):
    with pytest.raises(ImageError):
        images.decode_image(data)


@settings(max_examples=200)
@given(st.sampled_from([b"", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"RIFF"]),
       st.binary(max_size=200))
def test_decode_image_raises_only_image_error(magic, tail):
    try:
        img = images.decode_image(magic + tail)
    except ImageError:
        return
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8


def _jpeg_claiming(height: int, width: int) -> bytes:
    data = bytearray(_JPEG)
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize("data", [_jpeg_claiming(65500, 65500), b"P6\n100000 100000\n255\n" + bytes(16)],
                         ids=["jpeg-65500x65500", "pnm-100000x100000"])
def test_image_claiming_huge_dimensions_is_an_image_error(data):
    with pytest.raises(ImageError):
        images.decode_image(data)


# --- detection settings -------------------------------------------------------------------------

import dataclasses  # noqa: E402

from edgeloop.shared.manifest import DetectionSpec  # noqa: E402
from edgeloop.shared.protocol import MAX_DETECTIONS  # noqa: E402


def detector_dict(**overrides) -> dict:
    return manifest_dict(task="detection", outputs={"detections": "output0"}, **overrides)


detection_specs = st.builds(DetectionSpec, score_threshold=st.floats(0, 1), iou_threshold=st.floats(0, 1).filter(bool),
                            max_detections=st.integers(1, MAX_DETECTIONS))


@settings(max_examples=100)
@given(detection_specs)
def test_detection_settings_round_trip(spec):
    m = ModelManifest.from_dict(detector_dict(detection=dataclasses.asdict(spec)))
    assert m.detection == spec
    assert ModelManifest.from_json(m.to_json()) == m
    assert ModelManifest.from_json(m.to_json()).to_json() == m.to_json()


def test_detection_settings_defaults_and_absence():
    assert ModelManifest.from_dict(detector_dict()).detection is None  # the runtime uses DetectionSpec()
    assert ModelManifest.from_dict(detector_dict(detection={})).detection == DetectionSpec(0.25, 0.45, 100)
    partial = ModelManifest.from_dict(detector_dict(detection={"iou_threshold": 0.6}))
    assert partial.detection == DetectionSpec(iou_threshold=0.6)
    # A classifier's manifest has no "detection" key at all: its bytes (and so its digest) did not change.
    assert "detection" not in json.loads(MANIFEST.to_json())


BAD_DETECTION = [
    ("not-an-object", [0.25], "manifest.detection: expected an object"),
    ("unknown-key", {"nms": True}, "manifest.detection: unknown key(s) nms"),
    ("score-above-1", {"score_threshold": 1.5}, "manifest.detection.score_threshold"),
    ("score-negative", {"score_threshold": -0.1}, "manifest.detection.score_threshold"),
    ("score-string", {"score_threshold": "0.25"}, "manifest.detection.score_threshold"),
    ("score-nan", {"score_threshold": float("nan")}, "manifest.detection.score_threshold"),
    ("iou-zero", {"iou_threshold": 0}, "manifest.detection.iou_threshold"),
    ("iou-above-1", {"iou_threshold": 1.01}, "manifest.detection.iou_threshold"),
    ("iou-bool", {"iou_threshold": True}, "manifest.detection.iou_threshold"),
    ("max-zero", {"max_detections": 0}, "manifest.detection.max_detections"),
    ("max-beyond-the-wire", {"max_detections": MAX_DETECTIONS + 1}, "manifest.detection.max_detections"),
    ("max-float", {"max_detections": 10.0}, "manifest.detection.max_detections"),
]


@pytest.mark.parametrize("value, path", [pytest.param(v, p, id=i) for i, v, p in BAD_DETECTION])
def test_bad_detection_settings_name_the_field(value, path):
    with pytest.raises(ManifestError) as info:
        ModelManifest.from_json(json.dumps(detector_dict(detection=value)))
    assert str(info.value).startswith(path), str(info.value)


def test_a_classifier_has_no_detection_settings():
    with pytest.raises(ManifestError, match=r"^manifest\.detection: only a detection manifest"):
        ModelManifest.from_dict(manifest_dict(detection={"score_threshold": 0.5}))


@pytest.mark.parametrize("task, outputs, style", [
    ("classification", {"logits": "l"}, "classifier"),
    ("classification", {"probabilities": "p", "embedding": "e"}, "classifier"),
    ("detection", {"detections": "d"}, "detections"),
    ("detection", {"detections": "d", "embedding": "e"}, "detections"),
    ("detection", {"boxes": "b", "scores": "s", "labels": "l"}, "boxes"),
])
def test_output_style(task, outputs, style):
    m = ModelManifest.from_dict(manifest_dict(task=task, outputs=outputs))
    assert m.output_style() == style


@pytest.mark.parametrize("task, outputs", [
    ("detection", {"boxes": "b"}),
    ("detection", {"boxes": "b", "scores": "s"}),
    ("detection", {"detections": "d", "labels": "l"}),
    ("detection", {"logits": "l"}),
    ("detection", {"embedding": "e"}),
    ("classification", {"logits": "l", "boxes": "b"}),
    ("classification", {"probabilities": "p", "detections": "d"}),
])
def test_output_roles_that_do_not_fit_the_task(task, outputs):
    m = ModelManifest.from_dict(manifest_dict(task=task, outputs=outputs))
    with pytest.raises(ManifestError, match=r"^manifest\.outputs: "):
        m.output_style()
