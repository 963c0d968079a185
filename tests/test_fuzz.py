"""Hostile input: every decoder of bytes from a peer or a file, fuzzed.

The contract each decoder keeps: a value of its type, or a typed edgeloop error, and nothing else.

    protocol.decode   -> the message              | ProtocolError (TooLarge)
    config.loads/load -> Config                   | ConfigError
    ModelManifest     -> ModelManifest            | ManifestError
    artifact.unpack   -> ModelArtifact            | ModelError (IntegrityError, ManifestError)
    images.decode     -> (H, W, 3) uint8 BGR      | ImageError

The fuzzers here are hypothesis, three ways per decoder: arbitrary bytes, arbitrary structures of the
right encoding (msgpack, TOML, JSON) around the right field names, and mutations of valid seeds
(bytes flipped, inserted, deleted, cut; one node of the decoded tree replaced). The round-trip and
known-field tests live with each module (test_protocol, test_config, test_manifest_artifact); this
file adds the fuzz layer on top. Each crash fuzzing found is kept below as a named regression test
and as an @example of the fuzzer that found it. (atheris would fit the byte-level fuzzers but is not
installed; hypothesis's generation and shrinking are enough at these sizes.)
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile

import cv2
import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgeloop.shared import artifact, config, images
from edgeloop.shared.errors import (ConfigError, ImageError, IntegrityError, ManifestError, ModelError,
                                    ProtocolError, TooLarge)
from edgeloop.shared.manifest import ModelManifest
from edgeloop.shared.sampling.signals import SignalContext
from edgeloop.shared.protocol import (MAX_BATCH, Campaign, CampaignSet, DesiredModel, DeviceState, Receipt,
                                      SampleBatch, ShadowModel, decode, encode)
from edgeloop.shared.signing import generate_keypair, load_private_key

from factories import make_candidate

# A deeper run on demand: EDGELOOP_FUZZ_EXAMPLES=5000 python -m pytest tests/test_fuzz.py
_N = int(os.environ.get("EDGELOOP_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=_N, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=max(_N * 2 // 5, 1), deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- mutation engines, shared by every decoder --------------------------------------------------

@st.composite
def byte_mutations(draw, seed: bytes, max_ops: int = 6) -> bytes:
    """`seed` with a few bytes flipped, set, inserted, deleted or duplicated, and maybe cut short."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_ops), label="ops")):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "dup", "cut"]), label="op")
        i = draw(st.integers(0, max(len(data) - 1, 0)), label="at")
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[i] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xC1, 0xFF]) | st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 8))]
        elif op == "dup":
            data[i:i] = data[i:i + draw(st.integers(1, 16))]
        elif op == "cut":
            del data[i:]
    return bytes(data)


def _paths(tree, here=()):
    """Every (path, node) of a tree of dicts and lists, the root included."""
    yield here, tree
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _paths(v, here + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _paths(v, here + (i,))


def _copy(tree):
    if isinstance(tree, dict):
        return {k: _copy(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_copy(v) for v in tree]
    return tree


# Type-aware replacements: a number is most often broken by another number at an edge (beyond the float
# range, beyond 64 bits, NaN, a bool that is an int), a string by another string.
_EDGES_64 = [2**64 - 1, 2**63, -(2**63), -1, 0, 1, math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324, True, False]
EDGE_NUMBERS = st.sampled_from(_EDGES_64 + [10**400, -(10**400), 2**64])  # JSON and TOML: no size limit
EDGE_NUMBERS_64 = st.sampled_from(_EDGES_64)  # msgpack: 64 bits at most
_EDGE_STRINGS = st.sampled_from(["", "\x00", "x" * 300, "é" * 200, " ", "-1", "NaN", "1e999"])


@st.composite
def tree_mutations(draw, seed, values, max_ops: int = 3, numbers=EDGE_NUMBERS):
    """A copy of `seed` (dicts and lists) with a few nodes replaced by `values` (or, for a number or a
    string, often by an edge value of its kind: `numbers`, edge strings), deleted, or grown."""
    tree = _copy(seed)
    for _ in range(draw(st.integers(1, max_ops), label="ops")):
        path, node = draw(st.sampled_from(list(_paths(tree))), label="node")
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"]), label="op")
        if not path:  # the root: grow it or replace it whole
            if op == "add" and isinstance(tree, dict):
                tree[draw(st.text(max_size=8))] = draw(values)
            elif op == "replace":
                tree = draw(values)
            continue
        parent = tree
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        if op == "replace":
            edge = numbers if isinstance(node, (int, float)) else _EDGE_STRINGS if isinstance(node, str) else None
            parent[key] = draw(edge if edge is not None and draw(st.booleans()) else values)
        elif op == "delete":
            del parent[key]
        elif op == "add" and isinstance(node, list):
            node.append(draw(values) if not node or draw(st.booleans()) else _copy(node[0]))
        elif op == "add" and isinstance(node, dict):
            node[draw(st.text(max_size=8))] = draw(values)
    return tree


# --- wire protocol ------------------------------------------------------------------------------

def _seed_messages():
    """One valid message of each type, with every optional field present somewhere."""
    det = np.array([[0.1, 0.1, 0.5, 0.5, 0.9, 1], [0.2, 0.3, 0.4, 0.9, 0.3, 0]], np.float32)
    batch = SampleBatch("relay-1", "site-1", (
        make_candidate(embedding=np.arange(8, dtype=np.float16), tags={"zone": "dock"}, scores={"margin": 0.2},
                       reasons=("margin", "audit")),
        make_candidate(detections=det, image_bytes=b"\xff\xd8\xff\xd9"),
    ))
    state = DeviceState("dev-1", "online", "m-1", 12.5, {"fps": 9.5, "queue": 3}, "disk full",
                        {"shadow_version": "m-2"})
    desired = DesiredModel("m-2", "ab" * 32, 1234, "http://relay:8080/models/m-2", "active",
                           ShadowModel("m-3", "cd" * 32, 99, "https://relay/models/m-3", 0.5), 250.0, "ro-1")
    campaigns = CampaignSet((
        Campaign("camp-1", np.ones((2, 4), np.float16), 0.2, 10, 1.7e9),
        Campaign("camp-2", np.full((1, 3), -0.5, np.float16), 0.0, 0, 0.0),
    ))
    receipt = Receipt("relay-1", tuple(c.sample_id for c in batch.samples))
    return {SampleBatch: batch, DeviceState: state, DesiredModel: desired, CampaignSet: campaigns, Receipt: receipt}


SEEDS = _seed_messages()
KINDS = list(SEEDS)
SEED_BYTES = {kind: encode(msg) for kind, msg in SEEDS.items()}
SEED_WIRE = {kind: msgpack.unpackb(data, raw=False) for kind, data in SEED_BYTES.items()}

# Values msgpack can carry, with the edges a decoder trips on: 64-bit extremes, NaN and infinities,
# odd-length bytes for arrays, extension types and timestamps, non-string map keys.
_mp_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
               | st.sampled_from([0, -1, 1, 2**31, 2**63 - 1, 2**64 - 1, -(2**63)])
               | st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0])
               | st.text(max_size=20) | st.sampled_from(["", "x" * 300, "online", "active", "shadow", "http://h/x"])
               | st.binary(max_size=40) | st.sampled_from([b"", b"\x00", b"\x00" * 3, b"\xff" * 24])
               | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
               | st.builds(msgpack.Timestamp, st.integers(0, 2**33), st.integers(0, 999_999_999)))
msgpack_values = st.recursive(
    _mp_scalars,
    lambda inner: (st.lists(inner, max_size=4)
                   | st.dictionaries(st.text(max_size=12) | st.binary(max_size=4), inner, max_size=4)),
    max_leaves=12)


def _pack(raw) -> bytes:
    return msgpack.packb(raw, use_bin_type=True)


def decoded_or_protocol_error(data: bytes, kind):
    """The fuzz oracle: a message of `kind` that our own encoder accepts back, or ProtocolError."""
    try:
        msg = decode(data, kind)
    except ProtocolError:
        return None
    assert isinstance(msg, kind)
    again = encode(msg)  # what we accept, we can send on: relays re-encode what agents sent
    assert encode(decode(again, kind)) == again
    return msg


@FUZZ
@given(st.sampled_from(KINDS), st.binary(max_size=300) | st.sampled_from(list(SEED_BYTES.values())))
def test_any_bytes_decode_or_protocol_error(kind, data):
    decoded_or_protocol_error(data, kind)


@FUZZ
@given(st.sampled_from(KINDS), st.data())
def test_msgpack_structures_inside_the_envelope(kind, data):
    """A right envelope (v, type) around junk under the field names the decoder reads."""
    wire = SEED_WIRE[kind]
    keys = sorted({k for path, _ in _paths(wire) for k in path if isinstance(k, str)} - {"v", "type"})
    body = data.draw(st.dictionaries(st.sampled_from(keys) | st.text(max_size=6), msgpack_values, max_size=6))
    decoded_or_protocol_error(_pack({"v": 1, "type": kind.TYPE, **body}), kind)


@FUZZ
@given(st.sampled_from(KINDS), st.data())
def test_tree_mutations_of_valid_messages(kind, data):
    raw = data.draw(tree_mutations(SEED_WIRE[kind], msgpack_values, numbers=EDGE_NUMBERS_64))
    decoded_or_protocol_error(_pack(raw), kind)


@FUZZ
@given(st.sampled_from(KINDS), st.data())
def test_byte_mutations_of_valid_messages(kind, data):
    decoded_or_protocol_error(data.draw(byte_mutations(SEED_BYTES[kind])), kind)


# --- config -------------------------------------------------------------------------------------

_SCHEMA_KEYS = ["sampling", "budget", "per_hour", "bytes_per_hour", "window_s", "signals", "kind", "weight", "low",
                "high", "n", "interval_s", "max_share", "min_count", "min_distance", "memory", "tag", "values",
                "min_value", "seed", "strategy", "dedup_threshold", "balance_classes", "audit_fraction"]
_HUGE = "9" * 400  # a TOML integer has no size limit, a float does
_TOML_VALUES = ["1", "-1", "0", "1.5", "0.5", "-0.0", "1e999", "inf", "-inf", "nan", _HUGE, "-" + _HUGE, "0x1F",
                "0o7", "0b1", "true", "false", '"20MB"', '"16MiB"', '"5iB"', '"1.5KB"', '""', '"x"', "'lit'",
                '"""multi\nline"""', "[]", '["a", "b"]', '[1, "a"]', "[[1], [2]]", "{}", "{ a = 1 }",
                '{ kind = "random" }', "1979-05-27T07:32:00Z", "1979-05-27", "07:32:00", "1979-05-27T07:32:00"]
_TOML_VALUES += [f'"{k}"' for k in config.SIGNAL_KINDS + config.STRATEGIES]
_TOML_HEADERS = ["[sampling]", "[sampling.budget]", "[[sampling.signals]]", "[budget]", "[[sampling.budget]]",
                 "[sampling.signals]", "[x]", "[sampling.budget.extra]"]


@st.composite
def toml_texts(draw) -> str:
    """TOML-shaped text: schema tables and keys with edge-case values, now and then something broken."""
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 9))
        if kind < 2:
            lines.append(draw(st.sampled_from(_TOML_HEADERS)))
        elif kind < 8:
            key = draw(st.sampled_from(_SCHEMA_KEYS) | st.text(min_size=1, max_size=6))
            key = key if key.isidentifier() else json.dumps(key)  # a quoted key when it must be
            value = draw(st.sampled_from(_TOML_VALUES) | st.integers().map(str)
                         | st.floats(allow_nan=False, allow_infinity=False).map(repr))
            lines.append(f"{key} = {value}")
        elif kind == 8:
            depth = draw(st.integers(1, 3000))
            lines.append(f"{draw(st.sampled_from(_SCHEMA_KEYS))} = " + "[" * depth + "]" * depth)
        else:
            lines.append(draw(st.text(max_size=30)))
    return "\n".join(lines)


def config_or_config_error(fn, *args):
    """The oracle: a Config whose derived budgets compute (the selectors read them), or ConfigError."""
    try:
        result = fn(*args)
    except ConfigError:
        return None
    assert isinstance(result, config.Config)
    budget = result.sampling.budget
    assert budget.per_window >= 0 and budget.bytes_per_window >= 0
    return result


@FUZZ
@given(st.text(max_size=200) | toml_texts())
@example("a = " + "[" * 5000 + "]" * 5000)  # regression: RecursionError from tomllib
@example("a = " + "{b = " * 2000 + "1" + "}" * 2000)  # regression: RecursionError from tomllib
@example(f"[sampling]\nmin_value = {_HUGE}")  # regression: OverflowError
def test_any_text_loads_config_or_config_error(text):
    config_or_config_error(config.loads, text)


_toml_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from([10**400, -(10**400), 2**64])
    | st.floats() | st.text(max_size=12)
    | st.datetimes() | st.dates() | st.times(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_SCHEMA_KEYS), inner, max_size=4),
    max_leaves=12)
_SEED_CONFIG = {"sampling": {
    "budget": {"per_hour": 120, "bytes_per_hour": "20MB", "window_s": 60},
    "signals": [{"kind": "confidence_band", "low": 0.3, "high": 0.7, "weight": 1.0},
                {"kind": "every_nth", "n": 3}, {"kind": "interval", "interval_s": 5.0},
                {"kind": "metadata", "tag": "zone", "values": ["dock"]}, {"kind": "novelty", "memory": 8}],
    "min_value": 0.1, "seed": 3, "strategy": "diverse", "dedup_threshold": 0.1, "balance_classes": True,
    "audit_fraction": 0.01}}


@FUZZ
@given(tree_mutations(_SEED_CONFIG, _toml_like))
@example({"sampling": {"budget": {"per_hour": 10**400}}})  # regression: OverflowError
@example({"sampling": {"budget": {"bytes_per_hour": 10**400}}})  # regression: accepted, then OverflowError
def test_tree_mutations_of_a_valid_config(raw):
    config_or_config_error(config.parse, raw, config.Config)


@FEW
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
@example(b"\xff\xfe[sampling]\n")  # regression: UnicodeDecodeError
def test_any_file_loads_config_or_config_error(data):
    fd, path = tempfile.mkstemp(suffix=".toml")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        config_or_config_error(config.load, path)
    finally:
        os.unlink(path)


# --- model manifest -----------------------------------------------------------------------------

_SEED_MANIFEST = {
    "version": "m-2", "task": "detection",
    "input": {"name": "images", "height": 64, "width": 48, "layout": "NHWC", "color": "BGR", "scale": 0.5,
              "mean": [0.1, 0.2, 0.3], "std": [1, 2, 3], "resize": "letterbox"},
    "outputs": {"detections": "output0", "embedding": "emb"}, "labels": ["cat", "dog"], "parent": "m-1",
    "class_counts": [3, 4], "metrics": {"map50": 0.5}, "created_at": "2024-05-01T12:00:00Z",
    "detection": {"score_threshold": 0.3, "iou_threshold": 0.5, "max_detections": 50},
}
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from([10**400, -(10**400), 0, -1, 4097, 2**63])
    | st.floats() | st.text(max_size=12) | st.sampled_from(["", "NCHW", "RGB", "stretch", "logits"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10)


def manifest_or_manifest_error(data):
    try:
        m = ModelManifest.from_json(data)
    except ManifestError:
        return None
    assert isinstance(m, ModelManifest)
    ModelManifest.from_json(m.to_json())  # what we read, we can write and read back
    SignalContext.from_manifest(m).shares  # and an agent can score with it (class shares as floats)
    return m


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300))
@example(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
@example("1" * 5000)  # over Python's int-string limit
@example(json.dumps({**_SEED_MANIFEST, "input": {**_SEED_MANIFEST["input"], "scale": 10**400}}))  # regression
@example(json.dumps({**_SEED_MANIFEST, "class_counts": [10**400, 1]}))  # regression: accepted, then unusable
def test_any_bytes_read_as_manifest_or_manifest_error(data):
    manifest_or_manifest_error(data)


@FUZZ
@given(st.data())
def test_tree_mutations_of_a_valid_manifest(data):
    raw = data.draw(tree_mutations(_SEED_MANIFEST, _json_values))
    manifest_or_manifest_error(json.dumps(raw))


@FUZZ
@given(st.data())
def test_byte_mutations_of_a_valid_manifest(data):
    manifest_or_manifest_error(data.draw(byte_mutations(json.dumps(_SEED_MANIFEST).encode())))


@pytest.mark.parametrize("field, value", [
    ("scale", 10**400), ("mean", [10**400, 0, 0]), ("std", [1, -(10**400), 1]),
], ids=["scale", "mean", "std"])
def test_regression_manifest_huge_integer_is_a_manifest_error(field, value):
    """Found by fuzzing: `_finite` called math.isfinite on a 400-digit int -> OverflowError."""
    raw = json.loads(json.dumps(_SEED_MANIFEST))
    raw["input"][field] = value
    with pytest.raises(ModelError, match=rf"^manifest\.input\.{field}"):
        ModelManifest.from_json(json.dumps(raw))


def test_regression_class_count_huge_integer_is_a_manifest_error():
    """Found probing edge values under the fuzz oracle (an accepted manifest must be usable): accepted,
    then the agent's class shares (SignalContext.shares, for rare_class) raised OverflowError."""
    raw = json.loads(json.dumps(_SEED_MANIFEST))
    raw["class_counts"] = [10**400, 1]
    with pytest.raises(ManifestError, match=r"^manifest\.class_counts"):
        ModelManifest.from_json(json.dumps(raw))


def test_regression_detection_threshold_huge_integer_is_a_manifest_error():
    raw = json.loads(json.dumps(_SEED_MANIFEST))
    raw["detection"]["score_threshold"] = 10**400
    with pytest.raises(ModelError, match=r"^manifest\.detection\.score_threshold"):
        ModelManifest.from_json(json.dumps(raw))


# --- model artifact -----------------------------------------------------------------------------

_KEY = load_private_key(generate_keypair()[0])
_MANIFEST = ModelManifest.from_dict(_SEED_MANIFEST)
_ONNX = b"\x08\x07\x12\x07pytorch" + bytes(range(64))
_SIGNED = artifact.sign_artifact(artifact.pack(_MANIFEST, _ONNX), _KEY)
_ARTIFACT_WIRE = msgpack.unpackb(_SIGNED, raw=False)


def artifact_or_model_error(data: bytes):
    """The oracle: an artifact whose signature either verifies or is an IntegrityError, or a ModelError."""
    try:
        art = artifact.unpack(data)
    except ModelError:
        return None
    assert isinstance(art, artifact.ModelArtifact) and isinstance(art.manifest, ModelManifest)
    try:
        art.verify(_KEY.public_key())
    except IntegrityError:
        return art
    # It verifies: then it must be the artifact that was signed, whatever else changed around it.
    assert (art.manifest_bytes, art.onnx) == (_ARTIFACT_WIRE["manifest"], _ARTIFACT_WIRE["onnx"])
    return art


@FUZZ
@given(st.data())
def test_byte_mutations_of_a_signed_artifact(data):
    artifact_or_model_error(data.draw(byte_mutations(_SIGNED)))


_artifact_values = (msgpack_values | st.sampled_from([_SIGNED[:40], b"\x00" * 64, "0123456789abcdef", b"{}"])
                    | st.builds(lambda d: json.dumps(d).encode(), tree_mutations(_SEED_MANIFEST, _json_values)))


@FUZZ
@given(st.data())
def test_tree_mutations_of_a_signed_artifact(data):
    raw = data.draw(tree_mutations(_ARTIFACT_WIRE, _artifact_values, numbers=EDGE_NUMBERS_64))
    artifact_or_model_error(_pack(raw))


def test_regression_artifact_whose_manifest_holds_a_huge_integer_is_a_model_error():
    raw = dict(_ARTIFACT_WIRE, manifest=json.dumps({**_SEED_MANIFEST, "input": {
        **_SEED_MANIFEST["input"], "scale": 10**400}}).encode())
    with pytest.raises(ModelError):
        artifact.unpack(_pack(raw))


# --- images -------------------------------------------------------------------------------------

def _smooth(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 7 % 256, y * 5 % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def _progressive_jpeg() -> bytes:
    ok, buf = cv2.imencode(".jpg", _smooth(24, 40), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    return buf.tobytes()


def _png() -> bytes:
    ok, buf = cv2.imencode(".png", _smooth(20, 12))
    assert ok
    return buf.tobytes()


IMAGE_SEEDS = [images.encode_jpeg(_smooth(32, 48), 90), _progressive_jpeg(), _png(),
               cv2.imencode(".jpg", _smooth(16, 16)[:, :, 0])[1].tobytes()]  # baseline, progressive, PNG, grey


def _jpeg_claiming(height: int, width: int) -> bytes:
    data = bytearray(IMAGE_SEEDS[0])
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _png_claiming(height: int, width: int) -> bytes:
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: (struct.pack(">I", len(body)) + kind + body  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + body)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def image_or_image_error(data: bytes):
    try:
        img = images.decode_image(data)
    except ImageError:
        return None
    assert isinstance(img, np.ndarray) and img.dtype == np.uint8
    assert img.ndim == 3 and img.shape[2] == 3 and img.shape[0] > 0 and img.shape[1] > 0
    assert img.shape[0] * img.shape[1] <= images.MAX_PIXELS
    return img


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_decode_as_image_or_image_error(data):
    image_or_image_error(data)


@FUZZ
@given(st.sampled_from(IMAGE_SEEDS), st.data())
def test_byte_mutations_of_valid_images(seed, data):
    image_or_image_error(data.draw(byte_mutations(seed, max_ops=4)))


@FEW
@given(st.sampled_from(IMAGE_SEEDS), st.data())
def test_truncated_images(seed, data):
    image_or_image_error(seed[:data.draw(st.integers(0, len(seed) - 1))])


@FEW
@given(st.integers(1, 65535), st.integers(1, 65535), st.booleans())
@example(30000, 30000, False)  # regression: decoded to 2.7 GB from 600 bytes
@example(20000, 20000, True)
def test_images_claiming_any_size_decode_within_the_pixel_limit(height, width, png):
    image_or_image_error(_png_claiming(height, width) if png else _jpeg_claiming(height, width))


@pytest.mark.parametrize("data", [_jpeg_claiming(30000, 30000), _jpeg_claiming(8193, 8193),
                                  _png_claiming(20000, 20000)], ids=["jpeg-30000", "jpeg-8193", "png-20000"])
def test_regression_decompression_bomb_is_an_image_error(data):
    """Found by fuzzing: 600 bytes of JPEG claiming 30000x30000 decoded to 2.7 GB (6 GB peak, 7 s)."""
    with pytest.raises(ImageError, match="pixels"):
        images.decode_image(data)


@pytest.mark.parametrize("data", [
    cv2.imencode(".bmp", _smooth(4, 4))[1].tobytes(), cv2.imencode(".tiff", _smooth(4, 4))[1].tobytes(),
    cv2.imencode(".ppm", _smooth(4, 4))[1].tobytes(),
], ids=["bmp", "tiff", "ppm"])
def test_only_jpeg_and_png_are_decoded(data):
    with pytest.raises(ImageError, match="JPEG or PNG"):
        images.decode_image(data)


@pytest.mark.parametrize("shape", [(1, 1), (8192, 4096 - 1)])
def test_images_within_the_limit_still_decode(shape):
    img = images.decode_image(images.encode_jpeg(np.zeros((*shape, 3), np.uint8)))
    assert img.shape == (*shape, 3)


# --- regressions in config, each found by the fuzzers above -------------------------------------

@pytest.mark.parametrize("text, path", [
    ("a = " + "[" * 5000 + "]" * 5000, "not valid TOML"),
    ("a = " + "{b = " * 2000 + "1" + "}" * 2000, "not valid TOML"),
    (f"[sampling]\nmin_value = {_HUGE}", "sampling.min_value"),
    (f"[sampling.budget]\nper_hour = -{_HUGE}", "sampling.budget.per_hour"),
    (f"[[sampling.signals]]\nkind = \"margin\"\nweight = {_HUGE}", "sampling.signals[0].weight"),
], ids=["deep-array", "deep-inline-table", "huge-min-value", "huge-per-hour", "huge-weight"])
def test_regression_config_text_gives_config_error(text, path):
    with pytest.raises(ConfigError, match=path.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")):
        config.loads(text)


@pytest.mark.parametrize("data", [b"\xff\xfe[sampling]\n", b"seed = 1\n\x80", "[sampling]".encode("utf-16")],
                         ids=["bom", "latin1-byte", "utf16"])
def test_regression_config_file_not_utf8_is_a_config_error(tmp_path, data):
    path = tmp_path / "edgeloop.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match="UTF-8"):
        config.load(path)


@pytest.mark.parametrize("value", [10**400, 2**63, f'"{_HUGE}"'], ids=["int-400-digits", "int-2**63", "str"])
def test_regression_bytes_per_hour_beyond_64_bits_is_a_config_error(value):
    """Found by fuzzing: a 400-digit bytes_per_hour was accepted, then Budget.bytes_per_window raised
    OverflowError in the selector."""
    with pytest.raises(ConfigError, match=r"^sampling\.budget\.bytes_per_hour: "):
        config.loads(f"[sampling.budget]\nbytes_per_hour = {value}")


def test_regression_config_path_that_is_a_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path)


def test_fuzz_seeds_are_valid():
    """The mutation fuzzers start from valid inputs, or they test only the first check."""
    for kind, data in SEED_BYTES.items():
        assert decoded_or_protocol_error(data, kind) is not None
    assert config_or_config_error(config.parse, _SEED_CONFIG, config.Config) is not None
    assert manifest_or_manifest_error(json.dumps(_SEED_MANIFEST)) is not None
    assert artifact_or_model_error(_SIGNED) is not None
    for seed in IMAGE_SEEDS:
        assert image_or_image_error(seed) is not None


# --- regressions in msgpack decoding: memory, not exceptions ------------------------------------

def _envelope_with(kind, junk: bytes) -> bytes:
    """A valid message of `kind` with one extra field whose packed value is `junk` (raw msgpack)."""
    head = msgpack.packb(SEED_WIRE[kind], use_bin_type=True)
    assert 0x80 <= head[0] <= 0x8E  # a fixmap: one more entry is one more in its header
    return bytes([head[0] + 1]) + head[1:] + msgpack.packb("junk") + junk


@pytest.mark.parametrize("junk", [
    b"\xdc\xff\xff" + b"\x90" * 65535,  # an array of 65535 empty arrays: 64 KB on the wire, ~4 MB in Python
    b"\xdc\xff\xff" + b"\x80" * 65535,  # ... of empty maps
], ids=["empty-arrays", "empty-maps"])
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.TYPE)
def test_regression_a_flood_of_empty_containers_is_too_large(kind, junk):
    """Found measuring the decoder while fuzzing it (not a crash: a memory blow-up): 8 MB, within
    MAX_MESSAGE_BYTES, of one-byte empty maps or arrays in an ignored field decoded into ~570 MB of Python
    objects (2.6 s) before the decoder looked at a field."""
    with pytest.raises(TooLarge, match="maps and arrays"):
        decode(_envelope_with(kind, junk), kind)


def test_a_full_batch_with_every_container_decodes():
    """The container budget leaves room: MAX_BATCH candidates, each with tags, scores and reasons."""
    c = make_candidate(tags={"a": "b"}, scores={"s": 1.0}, reasons=("r",))
    batch = SampleBatch("relay-1", "site-1", (c,) * MAX_BATCH)
    assert len(decode(encode(batch), SampleBatch).samples) == MAX_BATCH


@pytest.mark.parametrize("extra", [
    {"x": [None] * 1000},  # an array of scalars: eight bytes of pointer each
    {"x": [{}] * 17},  # more maps than an artifact holds
    {f"k{i}": {} for i in range(20)},  # a top-level map larger than an artifact's
], ids=["array", "maps", "wide-map"])
def test_regression_artifact_with_containers_it_never_holds_is_an_integrity_error(extra):
    with pytest.raises(IntegrityError, match=r"^artifact: "):
        artifact.unpack(_pack({**_ARTIFACT_WIRE, **extra}))
