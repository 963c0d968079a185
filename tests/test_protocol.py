"""Wire protocol: round trips for every message type, and typed rejections naming the bad field."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeloop.shared import protocol as p
from edgeloop.shared.errors import ProtocolError, TooLarge
from edgeloop.shared.ids import new_sample_id
from edgeloop.shared.protocol import Candidate, DesiredModel, DeviceState, SampleBatch, ShadowModel, decode, encode

from factories import make_candidate

# --- strategies ---------------------------------------------------------------------------------

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ID_RE = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}"

# A ULID: 48-bit time + 80-bit randomness, so the first of its 26 characters is 0-7.
ulids = st.builds(lambda head, tail: head + tail,
                  st.sampled_from("01234567"), st.text(alphabet=CROCKFORD, min_size=25, max_size=25))
ids = st.from_regex(ID_RE, fullmatch=True)
short_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=24)
finite = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def prob_vectors(draw, max_classes: int = 40) -> np.ndarray:
    n = draw(st.integers(1, max_classes))
    w = np.array(draw(st.lists(st.floats(0, 1e6), min_size=n, max_size=n)), dtype=np.float64)
    if w.sum() <= 0:
        w[draw(st.integers(0, n - 1))] = 1.0
    return (w / w.sum()).astype(np.float32)


embeddings = st.none() | st.integers(1, 64).flatmap(
    lambda n: hnp.arrays(np.float16, n, elements=st.floats(width=16, allow_nan=False, allow_infinity=False)))

images = st.binary(max_size=512).map(lambda b: b"\xff\xd8\xff\xe0" + b + b"\xff\xd9")


@st.composite
def candidates(draw) -> Candidate:
    image = draw(images)
    return Candidate(
        sample_id=draw(ulids), device_id=draw(ids), camera_id=draw(ids), captured_at=draw(finite),
        model_version=draw(ids), probs=draw(prob_vectors()), embedding=draw(embeddings),
        image=image, image_sha256=hashlib.sha256(image).hexdigest(),
        tags=draw(st.dictionaries(short_text, short_text, max_size=4)),
        scores=draw(st.dictionaries(short_text, finite, max_size=4)),
        reasons=tuple(draw(st.lists(short_text, max_size=4))),
        value=draw(finite),
    )


batches = st.builds(SampleBatch, source=ids, site=ids,
                    samples=st.lists(candidates(), max_size=3).map(tuple))
states = st.builds(DeviceState, device_id=ids, status=st.sampled_from(["online", "offline"]),
                   model_version=st.none() | ids, ts=finite,
                   stats=st.dictionaries(short_text, finite, max_size=6),
                   last_error=st.text(alphabet=st.characters(codec="utf-8"), max_size=200),
                   facts=st.dictionaries(short_text, short_text, max_size=4))
shas = st.binary(max_size=32).map(lambda b: hashlib.sha256(b).hexdigest())
urls = st.builds(lambda s, rest: s + rest, st.sampled_from(["http://", "https://"]),
                 st.text(alphabet=st.characters(codec="utf-8"), max_size=100))
shadows = st.builds(ShadowModel, version=ids, sha256=shas, size=st.integers(1, 512 << 20), url=urls,
                    fraction=st.floats(0.001, 1.0))
desired = st.builds(DesiredModel, version=ids, sha256=shas, size=st.integers(1, 512 << 20), url=urls,
                    phase=st.sampled_from(["active", "shadow"]), shadow=st.none() | shadows,
                    max_latency_ms=st.none() | st.floats(0.001, 1e6), rollout_id=st.none() | ids)
messages = st.one_of(batches, states, desired)


# --- helpers ------------------------------------------------------------------------------------

def assert_same(a, b, path: str = "msg") -> None:
    """Field-by-field equality; numpy arrays by value and dtype."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype, f"{path}: dtype {a.dtype} != {b.dtype}"
        assert np.array_equal(a, b), f"{path}: {a!r} != {b!r}"
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def wire(msg) -> dict:
    """A valid message as the raw map a peer would send, for mutation."""
    return msgpack.unpackb(encode(msg), raw=False)


def pack(raw) -> bytes:
    return msgpack.packb(raw, use_bin_type=True)


def one_batch(**candidate_overrides) -> SampleBatch:
    return SampleBatch(source="dev-1", site="site-1", samples=(make_candidate(**candidate_overrides),))


GOOD_BATCH = one_batch(embedding=np.array([0.5, -1.0, 2.0], np.float16), tags={"k": "v"},
                       scores={"margin": 0.5}, reasons=("margin",))
GOOD_STATE = DeviceState(device_id="dev-1", status="online", model_version="m-1", ts=12.5,
                         stats={"fps": 9.5}, last_error="")
GOOD_DESIRED = DesiredModel(version="m-2", sha256="ab" * 32, size=1234, url="http://relay:8080/models/m-2",
                            phase="shadow")


# --- round trips --------------------------------------------------------------------------------

@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_decode_encode_round_trip_field_by_field(msg):
    data = encode(msg)
    back = decode(data, type(msg))
    assert_same(back, msg)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_encode_is_stable_through_decode(msg):
    data = encode(msg)
    assert encode(decode(data, type(msg))) == data


def test_round_trip_of_factory_candidate_with_real_ulid():
    c = make_candidate(value=0.75, sample_id=new_sample_id())
    back = decode(encode(SampleBatch("dev-1", "site-1", (c,))), SampleBatch).samples[0]
    assert_same(back, c)
    assert back.predicted == 0 and back.confidence == pytest.approx(0.7)


def test_round_trip_at_size_limits():
    big_image = bytes(p.MAX_IMAGE_BYTES)
    probs = np.full(p.MAX_CLASSES, 1.0 / p.MAX_CLASSES, np.float32)
    emb = np.ones(p.MAX_EMBEDDING, np.float16)
    c = make_candidate(image_bytes=big_image, probs=probs, embedding=emb)
    back = decode(encode(SampleBatch("dev-1", "site-1", (c,))), SampleBatch)
    assert_same(back.samples[0], c)


def test_unknown_fields_are_ignored():
    raw = wire(GOOD_BATCH)
    raw["added_in_v1_7"] = {"x": 1}
    raw["samples"][0]["new_field"] = [1, 2, 3]
    assert_same(decode(pack(raw), SampleBatch), GOOD_BATCH)


def test_current_version_accepted():
    raw = wire(GOOD_STATE)
    raw["v"] = p.VERSION
    assert decode(pack(raw), DeviceState) == GOOD_STATE


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_decode_accepts_bytes_like(kind):
    assert decode(kind(encode(GOOD_STATE)), DeviceState) == GOOD_STATE


# --- rejections: properties ---------------------------------------------------------------------

@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_every_strict_prefix_raises_protocol_error(msg):
    data = encode(msg)
    for cut in range(len(data)):
        with pytest.raises(ProtocolError):
            decode(data[:cut], type(msg))


@settings(max_examples=300)
@given(st.binary(max_size=256), st.sampled_from([SampleBatch, DeviceState, DesiredModel]))
@example(b"", SampleBatch)
@example(b"\xc1", DeviceState)  # the one byte msgpack never uses
@example(b"\x81\x01\x02", DeviceState)  # a map with an int key
@example(b"\xd4\xff\x00", DesiredModel)  # a malformed timestamp extension
@example(b"\x91" * 5000, SampleBatch)  # deep nesting
def test_random_bytes_raise_only_protocol_error(data, expect):
    try:
        decode(data, expect)
    except ProtocolError:
        pass


# Arbitrary msgpack values, used to fill known field names with junk.
junk = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | short_text | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(short_text, inner, max_size=4),
    max_leaves=12)
CANDIDATE_KEYS = [f.name for f in dataclasses.fields(Candidate)]


@st.composite
def junk_maps(draw, keys):
    """A map whose values are valid-looking or junk, keyed by the fields the decoder reads."""
    chosen = draw(st.lists(st.sampled_from(keys), unique=True))
    return {k: draw(junk) for k in chosen}


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_structured_junk_raises_only_protocol_error(data):
    msg = data.draw(messages)
    raw = wire(msg)
    if isinstance(msg, SampleBatch) and raw["samples"] and data.draw(st.booleans()):
        raw["samples"][0].update(data.draw(junk_maps(CANDIDATE_KEYS)))
    else:
        raw.update(data.draw(junk_maps([k for k in raw if k not in ("v", "type")])))
    try:
        decode(pack(raw), type(msg))
    except ProtocolError:
        pass


# --- rejections: known cases, each naming the field ---------------------------------------------

def _set(path, value):
    """A mutation setting raw[path...] = value (path as a tuple of keys/indexes)."""
    def mutate(raw):
        target = raw
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value
    return mutate


def _delete(path):
    def mutate(raw):
        target = raw
        for k in path[:-1]:
            target = target[k]
        del target[path[-1]]
    return mutate


def _sample(key, value):
    return _set(("samples", 0, key), value)


F32 = lambda *xs: np.array(xs, "<f4").tobytes()  # noqa: E731
F16 = lambda *xs: np.array(xs, "<f2").tobytes()  # noqa: E731
BIG_IMAGE = bytes(p.MAX_IMAGE_BYTES + 1)


def _image(value):
    def mutate(raw):
        raw["samples"][0]["image"] = value
        raw["samples"][0]["image_sha256"] = hashlib.sha256(value).hexdigest()
    return mutate


REJECTIONS = [
    # (id, message, mutation, error type, field path the message starts with)
    ("wrong-type", GOOD_BATCH, _set(("type",), "state"), ProtocolError, "type"),
    ("missing-type", GOOD_STATE, _delete(("type",)), ProtocolError, "type"),
    ("newer-major-v", GOOD_BATCH, _set(("v",), p.VERSION + 1), ProtocolError, "v"),
    ("v-zero", GOOD_STATE, _set(("v",), 0), ProtocolError, "v"),
    ("v-string", GOOD_STATE, _set(("v",), "1"), ProtocolError, "v"),
    ("v-bool", GOOD_STATE, _set(("v",), True), ProtocolError, "v"),
    ("v-missing", GOOD_DESIRED, _delete(("v",)), ProtocolError, "v"),
    # SampleBatch
    ("missing-samples", GOOD_BATCH, _delete(("samples",)), ProtocolError, "samples"),
    ("samples-not-list", GOOD_BATCH, _set(("samples",), {"0": 1}), ProtocolError, "samples"),
    ("missing-source", GOOD_BATCH, _delete(("source",)), ProtocolError, "source"),
    ("bad-site", GOOD_BATCH, _set(("site",), "a/b"), ProtocolError, "site"),
    ("sample-not-map", GOOD_BATCH, _set(("samples", 0), [1, 2]), ProtocolError, "samples[0]"),
    ("missing-image", GOOD_BATCH, _delete(("samples", 0, "image")), ProtocolError, "samples[0].image"),
    ("image-as-str", GOOD_BATCH, _sample("image", "jpeg"), ProtocolError, "samples[0].image"),
    ("sha-mismatch", GOOD_BATCH, _sample("image_sha256", "0" * 64), ProtocolError, "samples[0].image_sha256"),
    ("missing-sha", GOOD_BATCH, _delete(("samples", 0, "image_sha256")), ProtocolError, "samples[0].image_sha256"),
    ("missing-sample-id", GOOD_BATCH, _delete(("samples", 0, "sample_id")), ProtocolError, "samples[0].sample_id"),
    ("sample-id-lowercase", GOOD_BATCH, _sample("sample_id", "01arz3ndektsv4rrffq69g5fav"), ProtocolError,
     "samples[0].sample_id"),
    ("sample-id-short", GOOD_BATCH, _sample("sample_id", "01ARZ3NDEKTSV4RRFFQ69G5FA"), ProtocolError,
     "samples[0].sample_id"),
    ("sample-id-letter-U", GOOD_BATCH, _sample("sample_id", "01ARZ3NDEKTSV4RRFFQ69G5FAU"), ProtocolError,
     "samples[0].sample_id"),
    ("missing-device-id", GOOD_BATCH, _delete(("samples", 0, "device_id")), ProtocolError, "samples[0].device_id"),
    ("device-id-slash", GOOD_BATCH, _sample("device_id", "a/b"), ProtocolError, "samples[0].device_id"),
    ("device-id-plus", GOOD_BATCH, _sample("device_id", "a+"), ProtocolError, "samples[0].device_id"),
    ("device-id-empty", GOOD_BATCH, _sample("device_id", ""), ProtocolError, "samples[0].device_id"),
    ("device-id-leading-dash", GOOD_BATCH, _sample("device_id", "-a"), ProtocolError, "samples[0].device_id"),
    ("device-id-129-chars", GOOD_BATCH, _sample("device_id", "a" * 129), ProtocolError, "samples[0].device_id"),
    ("camera-id-int", GOOD_BATCH, _sample("camera_id", 7), ProtocolError, "samples[0].camera_id"),
    ("model-version-none", GOOD_BATCH, _sample("model_version", None), ProtocolError, "samples[0].model_version"),
    ("captured-at-missing", GOOD_BATCH, _delete(("samples", 0, "captured_at")), ProtocolError,
     "samples[0].captured_at"),
    ("captured-at-nan", GOOD_BATCH, _sample("captured_at", math.nan), ProtocolError, "samples[0].captured_at"),
    ("captured-at-bool", GOOD_BATCH, _sample("captured_at", True), ProtocolError, "samples[0].captured_at"),
    ("value-inf", GOOD_BATCH, _sample("value", math.inf), ProtocolError, "samples[0].value"),
    ("missing-probs", GOOD_BATCH, _delete(("samples", 0, "probs")), ProtocolError, "samples[0].probs"),
    ("probs-empty", GOOD_BATCH, _sample("probs", b""), ProtocolError, "samples[0].probs"),
    ("probs-odd-bytes", GOOD_BATCH, _sample("probs", F32(0.5, 0.5)[:-1]), ProtocolError, "samples[0].probs"),
    ("probs-sum-0.5", GOOD_BATCH, _sample("probs", F32(0.25, 0.25)), ProtocolError, "samples[0].probs"),
    ("probs-sum-2", GOOD_BATCH, _sample("probs", F32(1.0, 1.0)), ProtocolError, "samples[0].probs"),
    ("probs-negative", GOOD_BATCH, _sample("probs", F32(1.5, -0.5)), ProtocolError, "samples[0].probs"),
    ("probs-nan", GOOD_BATCH, _sample("probs", F32(math.nan, 1.0)), ProtocolError, "samples[0].probs"),
    ("probs-list", GOOD_BATCH, _sample("probs", [0.5, 0.5]), ProtocolError, "samples[0].probs"),
    ("probs-too-many-classes", GOOD_BATCH,
     _sample("probs", F32(*([1.0 / (p.MAX_CLASSES + 1)] * (p.MAX_CLASSES + 1)))), TooLarge, "samples[0].probs"),
    ("embedding-nan", GOOD_BATCH, _sample("embedding", F16(0.5, math.nan)), ProtocolError, "samples[0].embedding"),
    ("embedding-inf", GOOD_BATCH, _sample("embedding", F16(math.inf)), ProtocolError, "samples[0].embedding"),
    ("embedding-odd-bytes", GOOD_BATCH, _sample("embedding", b"\x00\x3c\x00"), ProtocolError,
     "samples[0].embedding"),
    ("embedding-empty", GOOD_BATCH, _sample("embedding", b""), ProtocolError, "samples[0].embedding"),
    ("embedding-too-long", GOOD_BATCH, _sample("embedding", F16(*([0.0] * (p.MAX_EMBEDDING + 1)))), TooLarge,
     "samples[0].embedding"),
    ("image-too-large", GOOD_BATCH, _image(BIG_IMAGE), TooLarge, "samples[0].image"),
    ("tags-not-map", GOOD_BATCH, _sample("tags", ["a"]), ProtocolError, "samples[0].tags"),
    ("tag-value-int", GOOD_BATCH, _sample("tags", {"k": 1}), ProtocolError, "samples[0].tags.k"),
    ("too-many-tags", GOOD_BATCH, _sample("tags", {str(i): "x" for i in range(p.MAX_ITEMS + 1)}), ProtocolError,
     "samples[0].tags"),
    ("score-string", GOOD_BATCH, _sample("scores", {"margin": "high"}), ProtocolError, "samples[0].scores.margin"),
    ("score-nan", GOOD_BATCH, _sample("scores", {"margin": math.nan}), ProtocolError, "samples[0].scores.margin"),
    ("score-key-bytes", GOOD_BATCH, _sample("scores", {b"margin": 1.0}), ProtocolError, "samples[0].scores"),
    ("reasons-not-list", GOOD_BATCH, _sample("reasons", "margin"), ProtocolError, "samples[0].reasons"),
    ("reason-not-string", GOOD_BATCH, _sample("reasons", ["ok", 3]), ProtocolError, "samples[0].reasons[1]"),
    ("second-sample-bad", SampleBatch("d", "s", (make_candidate(), make_candidate())),
     _set(("samples", 1, "probs"), F32(0.1)), ProtocolError, "samples[1].probs"),
    # DeviceState
    ("state-missing-status", GOOD_STATE, _delete(("status",)), ProtocolError, "state.status"),
    ("state-bad-status", GOOD_STATE, _set(("status",), "away"), ProtocolError, "state.status"),
    ("state-missing-device", GOOD_STATE, _delete(("device_id",)), ProtocolError, "state.device_id"),
    ("state-bad-model-version", GOOD_STATE, _set(("model_version",), "m 1"), ProtocolError, "state.model_version"),
    ("state-stats-nan", GOOD_STATE, _set(("stats",), {"fps": math.nan}), ProtocolError, "state.stats.fps"),
    ("state-ts-string", GOOD_STATE, _set(("ts",), "now"), ProtocolError, "state.ts"),
    ("state-last-error-too-long", GOOD_STATE, _set(("last_error",), "x" * (4 * p.MAX_STR + 1)), TooLarge,
     "state.last_error"),
    # DesiredModel
    ("desired-sha-upper", GOOD_DESIRED, _set(("sha256",), "AB" * 32), ProtocolError, "desired.sha256"),
    ("desired-sha-short", GOOD_DESIRED, _set(("sha256",), "ab" * 31), ProtocolError, "desired.sha256"),
    ("desired-missing-sha", GOOD_DESIRED, _delete(("sha256",)), ProtocolError, "desired.sha256"),
    ("desired-size-zero", GOOD_DESIRED, _set(("size",), 0), ProtocolError, "desired.size"),
    ("desired-size-bool", GOOD_DESIRED, _set(("size",), True), ProtocolError, "desired.size"),
    ("desired-size-float", GOOD_DESIRED, _set(("size",), 12.0), ProtocolError, "desired.size"),
    ("desired-size-huge", GOOD_DESIRED, _set(("size",), (512 << 20) + 1), ProtocolError, "desired.size"),
    ("desired-missing-size", GOOD_DESIRED, _delete(("size",)), ProtocolError, "desired.size"),
    ("desired-ftp-url", GOOD_DESIRED, _set(("url",), "ftp://relay/m"), ProtocolError, "desired.url"),
    ("desired-url-too-long", GOOD_DESIRED, _set(("url",), "http://" + "a" * 1100), TooLarge, "desired.url"),
    ("desired-bad-phase", GOOD_DESIRED, _set(("phase",), "canary"), ProtocolError, "desired.phase"),
    ("desired-missing-version", GOOD_DESIRED, _delete(("version",)), ProtocolError, "desired.version"),
]


@pytest.mark.parametrize("msg, mutate, error, path", [pytest.param(*r[1:], id=r[0]) for r in REJECTIONS])
def test_rejections_name_the_field(msg, mutate, error, path):
    raw = wire(msg)
    mutate(raw)
    with pytest.raises(ProtocolError) as info:
        decode(pack(raw), type(msg))
    assert type(info.value) is error
    text = str(info.value)
    assert text.startswith(path) and text[len(path)] in ":.", text


@pytest.mark.parametrize("top", [[1, 2], "samples", 7, None, 1.5, b"\x00"], ids=repr)
def test_non_map_top_level_refused(top):
    with pytest.raises(ProtocolError, match=r"^message: expected a map"):
        decode(pack(top), SampleBatch)


@pytest.mark.parametrize("data", ["a string", 123, None, [b"x"]], ids=repr)
def test_decode_of_non_bytes_refused(data):
    with pytest.raises(ProtocolError):
        decode(data, DeviceState)


def test_batch_over_the_limit_is_too_large():
    # The count is checked before the candidates are read, so cheap placeholders suffice.
    raw = {"v": 1, "type": "samples", "source": "d", "site": "s", "samples": [{}] * (p.MAX_BATCH + 1)}
    with pytest.raises(TooLarge, match=r"^samples: "):
        decode(pack(raw), SampleBatch)


def test_batch_at_the_limit_is_read():
    raw = {"v": 1, "type": "samples", "source": "d", "site": "s", "samples": [{}] * p.MAX_BATCH}
    with pytest.raises(ProtocolError) as info:  # refused for its content, not its count
        decode(pack(raw), SampleBatch)
    assert type(info.value) is ProtocolError and str(info.value).startswith("samples[0].")


def test_message_over_the_limit_is_too_large():
    with pytest.raises(TooLarge, match=r"^message: "):
        decode(bytes(p.MAX_MESSAGE_BYTES + 1), SampleBatch)


def test_encode_refuses_a_message_over_the_limit():
    image = bytes(p.MAX_IMAGE_BYTES)
    n = p.MAX_MESSAGE_BYTES // p.MAX_IMAGE_BYTES + 1
    batch = SampleBatch("d", "s", tuple(make_candidate(image_bytes=image) for _ in range(n)))
    with pytest.raises(TooLarge, match=r"^samples: "):
        encode(batch)


@pytest.mark.parametrize("good", ["a", "A9", "dev-1", "site_3.cam:2", "a" * 128])
def test_check_id_accepts(good):
    assert p.check_id(good, "x") == good


@pytest.mark.parametrize("bad", ["", "-a", "_a", "a b", "a/b", "a#", "a+", "é", "a" * 129, None, 3, b"ab"], ids=repr)
def test_check_id_refuses(bad):
    with pytest.raises(ProtocolError, match=r"^where: "):
        p.check_id(bad, "where")


@pytest.mark.parametrize("bad", ["dev-1\n", "a" * 128 + "\n"], ids=repr)
def test_check_id_refuses_trailing_newline(bad):
    with pytest.raises(ProtocolError):
        p.check_id(bad, "state.device_id")


def test_decode_refuses_device_id_with_trailing_newline():
    raw = wire(GOOD_STATE)
    raw["device_id"] = "dev-1\n"
    with pytest.raises(ProtocolError, match=r"^state\.device_id"):
        decode(pack(raw), DeviceState)


@given(st.from_regex(ID_RE, fullmatch=True))
def test_generated_ids_match_the_protocol(value):
    assert p.check_id(value, "x") == value


def test_new_sample_id_is_accepted_by_the_decoder():
    ids_ = [new_sample_id() for _ in range(50)]
    assert all(re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", s) for s in ids_)
    assert len(set(ids_)) == 50


@given(st.floats(0, 4e9, allow_nan=False), st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20),
       st.integers(0, 2**40))
def test_frame_sample_ids_are_valid_deterministic_ulids(t, device, camera, index):
    from edgeloop.shared.ids import frame_sample_id

    sid = frame_sample_id(t, device, camera, index)
    assert sid == frame_sample_id(t, device, camera, index)  # a replayed frame keeps its id
    assert sid != frame_sample_id(t, device, camera, index + 1)
    assert frame_sample_id(t, device, camera, index) < frame_sample_id(t + 1, device, camera, index)  # time-ordered
    c = Candidate.from_wire({**make_candidate().to_wire(), "sample_id": sid})
    assert c.sample_id == sid


# --- detections (a detector's candidates) -------------------------------------------------------

@st.composite
def detection_rows(draw, num_classes: int, max_rows: int = 20) -> np.ndarray:
    n = draw(st.integers(0, max_rows))
    coords = hnp.arrays(np.float32, (n, 4), elements=st.floats(-2, 2, width=32))
    scores = hnp.arrays(np.float32, (n, 1), elements=st.floats(0, 1, width=32))
    classes = hnp.arrays(np.float32, (n, 1), elements=st.integers(0, num_classes - 1).map(float))
    return np.concatenate([draw(coords), draw(scores), draw(classes)], axis=1)


@st.composite
def detector_candidates(draw) -> Candidate:
    c = draw(candidates())
    return dataclasses.replace(c, detections=draw(detection_rows(len(c.probs))))


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(detector_candidates(), min_size=1, max_size=3))
def test_detections_round_trip(cands):
    batch = SampleBatch(source="dev-1", site="site-1", samples=tuple(cands))
    assert_same(decode(encode(batch), SampleBatch), batch)


def test_detections_absent_for_a_classifier_and_in_old_messages():
    c = make_candidate()
    assert c.detections is None and "detections" not in c.to_wire()
    assert Candidate.from_wire(c.to_wire()).detections is None  # an old sender: no key at all
    assert Candidate.from_wire({**c.to_wire(), "detections": None}).detections is None


def test_detections_count_in_nbytes():
    c = make_candidate()
    d = dataclasses.replace(c, detections=np.zeros((10, 6), np.float32))
    assert d.nbytes == c.nbytes + 240


def test_detections_at_the_limit_decode():
    rows = np.tile(np.array([[0.1, 0.1, 0.5, 0.5, 0.9, 2]], np.float32), (p.MAX_DETECTIONS, 1))
    raw = wire(one_batch())
    raw["samples"][0]["detections"] = rows.tobytes()
    assert decode(pack(raw), SampleBatch).samples[0].detections.shape == (p.MAX_DETECTIONS, 6)


def _row(x1=0.1, y1=0.1, x2=0.5, y2=0.5, score=0.9, cls=1.0) -> bytes:
    return F32(x1, y1, x2, y2, score, cls)


DETECTION_REJECTIONS = [
    ("not-bytes", [0.1, 0.1, 0.5, 0.5, 0.9, 1], ProtocolError),
    ("partial-row", _row()[:-4], ProtocolError),
    ("row-and-a-bit", _row() + b"\x00", ProtocolError),
    ("too-many-rows", _row() * (p.MAX_DETECTIONS + 1), TooLarge),
    ("nan-coordinate", _row(x1=math.nan), ProtocolError),
    ("inf-score", _row(score=math.inf), ProtocolError),
    ("score-above-1", _row(score=1.5), ProtocolError),
    ("score-negative", _row(score=-0.1), ProtocolError),
    ("class-negative", _row(cls=-1.0), ProtocolError),
    ("class-fraction", _row(cls=1.5), ProtocolError),
    ("class-beyond-probs", _row(cls=3.0), ProtocolError),  # GOOD_BATCH has 3 probabilities
    ("second-row-bad", _row() + _row(score=2.0), ProtocolError),
]


@pytest.mark.parametrize("value, error", [pytest.param(v, e, id=i) for i, v, e in DETECTION_REJECTIONS])
def test_bad_detections_name_the_field(value, error):
    raw = wire(GOOD_BATCH)
    raw["samples"][0]["detections"] = value
    with pytest.raises(ProtocolError) as info:
        decode(pack(raw), SampleBatch)
    assert type(info.value) is error
    assert str(info.value).startswith("samples[0].detections"), str(info.value)


@pytest.mark.parametrize("shadow, says", [
    ({"version": "v2", "sha256": "ab" * 32, "size": 10, "url": "http://r/m", "fraction": 0}, "fraction"),
    ({"version": "v2", "sha256": "zz", "size": 10, "url": "http://r/m"}, "desired.shadow.sha256"),
    ({"version": "v 2", "sha256": "ab" * 32, "size": 10, "url": "http://r/m"}, "desired.shadow.version"),
    ("not a map", "desired.shadow"),
])
def test_a_bad_shadow_in_desired_is_refused_naming_the_field(shadow, says):
    raw = {**GOOD_DESIRED.to_wire(), "v": 1, "type": "desired", "shadow": shadow}
    with pytest.raises(ProtocolError, match=says):
        decode(msgpack.packb(raw), DesiredModel)


def test_a_desired_message_without_the_new_fields_still_decodes():
    old = {"v": 1, "type": "desired", "version": "m-2", "sha256": "ab" * 32, "size": 5, "url": "http://r/m"}
    d = decode(msgpack.packb(old), DesiredModel)
    assert d.shadow is None and d.max_latency_ms is None and d.rollout_id is None
