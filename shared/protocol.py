"""Wire protocol: msgpack maps with `v` (major schema version) and `type`.

Decoders validate every field and name the bad one (`samples[3].embedding: ...`); unknown
fields are ignored (a newer minor version may add some), a newer major `v` is refused.
Arrays travel as raw little-endian bytes: probabilities float32, embeddings float16, detections float32
rows of (x1, y1, x2, y2, score, class).

    encode(msg) -> bytes          decode(data, expect=Type) -> msg
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack
import numpy as np

from .errors import ProtocolError, TooLarge

VERSION = 1
MAX_MESSAGE_BYTES = 8 << 20
MAX_IMAGE_BYTES = 1 << 20
MAX_BATCH = 512
MAX_CLASSES = 1000
MAX_EMBEDDING = 2048
MAX_DETECTIONS = 300  # rows of a candidate's detections
MAX_STR = 256
MAX_ITEMS = 64  # tags, reasons, scores, facts entries
MAX_STATS = 128  # numbers in a device's state report
# Maps and arrays in one message: a full batch uses 4 per candidate (itself, tags, scores, reasons); the
# rest is room for fields a newer minor version may add.
MAX_CONTAINERS = 1 << 15
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")  # device, camera, site, version ids: MQTT-topic safe


def check_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ProtocolError(f"{where}: expected an id of letters, digits and _.:- (1-128 chars), got {value!r}")
    return value


@dataclass(frozen=True, eq=False)
class Candidate:
    """A frame an agent kept. `sample_id` never changes on the way up."""

    sample_id: str
    device_id: str
    camera_id: str
    captured_at: float
    model_version: str
    probs: np.ndarray  # (C,) float32
    embedding: np.ndarray | None  # (D,) float16
    image: bytes  # JPEG
    image_sha256: str
    tags: dict[str, str] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    reasons: tuple[str, ...] = ()
    value: float = 0.0  # selection value at the tier that last scored it
    # (N, 6) float32 x1, y1, x2, y2 (frame-normalised), score, class; None for a classifier's candidate
    detections: np.ndarray | None = None

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probs))

    @property
    def confidence(self) -> float:
        return float(np.max(self.probs))

    @property
    def nbytes(self) -> int:
        """Approximate wire size, for byte budgets and quotas."""
        emb = 0 if self.embedding is None else self.embedding.nbytes
        det = 0 if self.detections is None else self.detections.nbytes
        return len(self.image) + self.probs.nbytes + emb + det + 200

    def with_value(self, value: float, reasons: tuple[str, ...] | None = None, **scores: float) -> "Candidate":
        merged = {**self.scores, **scores}
        return Candidate(**{**self.__dict__, "value": value, "scores": merged,
                            "reasons": self.reasons if reasons is None else reasons})

    def to_wire(self) -> dict[str, Any]:
        m = {
            "sample_id": self.sample_id, "device_id": self.device_id, "camera_id": self.camera_id,
            "captured_at": self.captured_at, "model_version": self.model_version,
            "probs": np.asarray(self.probs, "<f4").tobytes(),
            "embedding": None if self.embedding is None else np.asarray(self.embedding, "<f2").tobytes(),
            "image": self.image, "image_sha256": self.image_sha256,
            "tags": dict(self.tags), "scores": dict(self.scores), "reasons": list(self.reasons), "value": self.value,
        }
        if self.detections is not None:  # absent for a classifier: its messages stay as they were
            m["detections"] = np.asarray(self.detections, "<f4").tobytes()
        return m

    @classmethod
    def from_wire(cls, raw: Any, where: str = "candidate") -> "Candidate":
        m = _map(raw, where)
        image = _bytes(m, "image", where, MAX_IMAGE_BYTES)
        sha = _str(m, "image_sha256", where)
        if hashlib.sha256(image).hexdigest() != sha:
            raise ProtocolError(f"{where}.image_sha256: does not match the image bytes")
        probs_b = _bytes(m, "probs", where, MAX_CLASSES * 4)
        if not probs_b or len(probs_b) % 4:
            raise ProtocolError(f"{where}.probs: expected a non-empty float32 vector, got {len(probs_b)} bytes")
        probs = np.frombuffer(probs_b, "<f4").astype(np.float32)
        # ndarray methods, not np.all / np.any: their Python wrappers cost more than these (C,) checks.
        if not np.isfinite(probs).all() or (probs < 0).any() or abs(float(probs.sum()) - 1.0) > 1e-2:
            raise ProtocolError(f"{where}.probs: expected finite probabilities summing to 1")
        emb = None
        if m.get("embedding") is not None:
            emb_b = _bytes(m, "embedding", where, MAX_EMBEDDING * 2)
            if not emb_b or len(emb_b) % 2:
                raise ProtocolError(f"{where}.embedding: expected a float16 vector, got {len(emb_b)} bytes")
            emb = np.frombuffer(emb_b, "<f2").astype(np.float16)
            if not np.isfinite(emb).all():
                raise ProtocolError(f"{where}.embedding: contains NaN or infinity")
        return cls(
            sample_id=_sample_id(m, where), device_id=check_id(m.get("device_id"), f"{where}.device_id"),
            camera_id=check_id(m.get("camera_id"), f"{where}.camera_id"), captured_at=_float(m, "captured_at", where),
            model_version=check_id(m.get("model_version"), f"{where}.model_version"),
            probs=probs, embedding=emb, image=image, image_sha256=sha,
            tags=_str_map(m, "tags", where), scores=_float_map(m, "scores", where),
            reasons=tuple(_str_list(m, "reasons", where)), value=_float(m, "value", where, 0.0),
            detections=_detections(m, where, len(probs)),
        )


@dataclass(frozen=True, eq=False)
class SampleBatch:
    """Candidates from one sender: agent -> relay over MQTT, relay -> hub over HTTP."""

    TYPE = "samples"
    source: str  # device id or relay id
    site: str
    samples: tuple[Candidate, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"source": self.source, "site": self.site, "samples": [c.to_wire() for c in self.samples]}

    @classmethod
    def from_wire(cls, m: dict) -> "SampleBatch":
        items = m.get("samples")
        if not isinstance(items, list):
            raise ProtocolError("samples: expected a list")
        if len(items) > MAX_BATCH:
            raise TooLarge(f"samples: {len(items)} candidates exceeds the limit of {MAX_BATCH}")
        cands = tuple(Candidate.from_wire(c, f"samples[{i}]") for i, c in enumerate(items))
        return cls(source=check_id(m.get("source"), "source"), site=check_id(m.get("site"), "site"), samples=cands)


@dataclass(frozen=True)
class DeviceState:
    """An agent's reported state, retained on its `state` topic; the last will says offline."""

    TYPE = "state"
    device_id: str
    status: str  # online | offline
    model_version: str | None = None
    ts: float = 0.0
    stats: dict[str, float] = field(default_factory=dict)
    last_error: str = ""
    facts: dict[str, str] = field(default_factory=dict)  # e.g. shadow_version, rolled_back_version

    def to_wire(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "status": self.status, "model_version": self.model_version,
                "ts": self.ts, "stats": dict(self.stats), "last_error": self.last_error, "facts": dict(self.facts)}

    @classmethod
    def from_wire(cls, m: dict) -> "DeviceState":
        status = _str(m, "status", "state")
        if status not in ("online", "offline"):
            raise ProtocolError(f"state.status: expected online or offline, got {status!r}")
        mv = m.get("model_version")
        return cls(device_id=check_id(m.get("device_id"), "state.device_id"), status=status,
                   model_version=None if mv is None else check_id(mv, "state.model_version"),
                   ts=_float(m, "ts", "state", 0.0), stats=_float_map(m, "stats", "state", MAX_STATS),
                   last_error=_str(m, "last_error", "state", "", max_len=4 * MAX_STR),
                   facts=_str_map(m, "facts", "state"))


@dataclass(frozen=True)
class DesiredModel:
    """The model a device should run: set retained on its `desired` topic by the relay.

    During a rollout's shadow stage `shadow` names a second model to run beside the active one on
    a fraction of frames (reporting only); `max_latency_ms` is the budget past which an agent rolls
    a newly activated model back on its own.
    """

    TYPE = "desired"
    version: str
    sha256: str  # of the artifact file
    size: int
    url: str  # where the agent fetches the artifact (the relay's HTTP cache)
    phase: str = "active"
    shadow: "ShadowModel | None" = None
    max_latency_ms: float | None = None
    rollout_id: str | None = None
    # The hub's signed statement of all the above but the URL, passed on unchanged by the relay, and
    # its Ed25519 signature (shared/statement.py): agents act on nothing else.
    statement: bytes | None = None
    signature: bytes | None = None

    def to_wire(self) -> dict[str, Any]:
        out = {"version": self.version, "sha256": self.sha256, "size": self.size, "url": self.url, "phase": self.phase}
        if self.statement is not None:
            out["statement"] = self.statement
        if self.signature is not None:
            out["signature"] = self.signature
        if self.shadow is not None:
            out["shadow"] = self.shadow.to_wire()
        if self.max_latency_ms is not None:
            out["max_latency_ms"] = self.max_latency_ms
        if self.rollout_id is not None:
            out["rollout_id"] = self.rollout_id
        return out

    @classmethod
    def from_wire(cls, m: dict) -> "DesiredModel":
        sha, size, url = _artifact_ref(m, "desired")
        phase = _str(m, "phase", "desired", "active")
        if phase not in ("active", "shadow"):
            raise ProtocolError(f"desired.phase: expected active or shadow, got {phase!r}")
        shadow = None if m.get("shadow") is None else ShadowModel.from_wire(_map(m["shadow"], "desired.shadow"))
        budget = m.get("max_latency_ms")
        if budget is not None:
            budget = _float(m, "max_latency_ms", "desired")
            if budget <= 0:
                raise ProtocolError("desired.max_latency_ms: expected a positive number of milliseconds")
        rid = m.get("rollout_id")
        statement = None if m.get("statement") is None else _bytes(m, "statement", "desired", 4096)
        signature = None if m.get("signature") is None else _bytes(m, "signature", "desired", 64)
        return cls(version=check_id(m.get("version"), "desired.version"), sha256=sha, size=size, url=url, phase=phase,
                   shadow=shadow, max_latency_ms=budget,
                   rollout_id=None if rid is None else check_id(rid, "desired.rollout_id"),
                   statement=statement, signature=signature)


@dataclass(frozen=True)
class ShadowModel:
    """A candidate model to run beside the active one on `fraction` of the frames."""

    version: str
    sha256: str
    size: int
    url: str
    fraction: float = 0.25

    def to_wire(self) -> dict[str, Any]:
        return {"version": self.version, "sha256": self.sha256, "size": self.size, "url": self.url,
                "fraction": self.fraction}

    @classmethod
    def from_wire(cls, m: dict) -> "ShadowModel":
        sha, size, url = _artifact_ref(m, "desired.shadow")
        fraction = _float(m, "fraction", "desired.shadow", 0.25)
        if not 0 < fraction <= 1:
            raise ProtocolError(f"desired.shadow.fraction: expected a fraction above 0 and at most 1, got {fraction}")
        return cls(check_id(m.get("version"), "desired.shadow.version"), sha, size, url, fraction)


def _artifact_ref(m: dict, where: str) -> tuple[str, int, str]:
    sha = _str(m, "sha256", where)
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ProtocolError(f"{where}.sha256: expected 64 lowercase hex digits")
    size = m.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= 512 << 20:
        raise ProtocolError(f"{where}.size: expected a positive byte count, got {size!r}")
    url = _str(m, "url", where, max_len=1024)
    if not url.startswith(("http://", "https://")):
        raise ProtocolError(f"{where}.url: expected an http(s) URL")
    return sha, size, url


@dataclass(frozen=True, eq=False)
class Campaign:
    """"Find me more like this": keep frames whose embedding lies within `threshold` (cosine
    distance) of an exemplar, with the reason `campaign:<id>`, up to `quota` per device and per relay."""

    campaign_id: str
    exemplars: np.ndarray  # (E, D) float16
    threshold: float
    quota: int
    expires_at: float  # seconds since the epoch

    def to_wire(self) -> dict[str, Any]:
        ex = np.asarray(self.exemplars, "<f2")
        return {"campaign_id": self.campaign_id, "dim": int(ex.shape[1]), "exemplars": ex.tobytes(),
                "threshold": self.threshold, "quota": self.quota, "expires_at": self.expires_at}

    @classmethod
    def from_wire(cls, raw: Any, where: str = "campaign") -> "Campaign":
        m = _map(raw, where)
        dim = m.get("dim")
        if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= MAX_EMBEDDING:
            raise ProtocolError(f"{where}.dim: expected an embedding size from 1 to {MAX_EMBEDDING}")
        ex_b = _bytes(m, "exemplars", where, MAX_ITEMS * MAX_EMBEDDING * 2)
        if not ex_b or len(ex_b) % (2 * dim):
            raise ProtocolError(f"{where}.exemplars: expected float16 vectors of {dim}, got {len(ex_b)} bytes")
        ex = np.frombuffer(ex_b, "<f2").astype(np.float16).reshape(-1, dim)
        if not np.all(np.isfinite(ex)):
            raise ProtocolError(f"{where}.exemplars: contains NaN or infinity")
        threshold = _float(m, "threshold", where)
        if not 0.0 <= threshold <= 2.0:
            raise ProtocolError(f"{where}.threshold: expected a cosine distance from 0 to 2")
        quota = m.get("quota")
        if not isinstance(quota, int) or isinstance(quota, bool) or not 0 <= quota <= 1_000_000:
            raise ProtocolError(f"{where}.quota: expected a non-negative count")
        return cls(check_id(m.get("campaign_id"), f"{where}.campaign_id"), ex, threshold, quota,
                   _float(m, "expires_at", where))


@dataclass(frozen=True, eq=False)
class CampaignSet:
    """The active campaigns of a site, retained on `edgeloop/{site}/campaigns`."""

    TYPE = "campaigns"
    campaigns: tuple[Campaign, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"campaigns": [c.to_wire() for c in self.campaigns]}

    @classmethod
    def from_wire(cls, m: dict) -> "CampaignSet":
        items = m.get("campaigns")
        if not isinstance(items, list) or len(items) > MAX_ITEMS:
            raise ProtocolError(f"campaigns: expected a list of at most {MAX_ITEMS}")
        return cls(tuple(Campaign.from_wire(c, f"campaigns[{i}]") for i, c in enumerate(items)))


@dataclass(frozen=True)
class Receipt:
    """Relay -> agent on `edgeloop/{site}/{device}/received`: these samples are on the relay's disk.
    The agent deletes a sample on this, not on the broker's PUBACK, which a power cut at the broker
    can undo (mosquitto acknowledges before it saves)."""

    TYPE = "received"
    relay_id: str
    sample_ids: tuple[str, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"relay_id": self.relay_id, "sample_ids": list(self.sample_ids)}

    @classmethod
    def from_wire(cls, m: dict) -> "Receipt":
        ids = m.get("sample_ids")
        if not isinstance(ids, list) or len(ids) > MAX_BATCH:
            raise ProtocolError(f"received.sample_ids: expected a list of at most {MAX_BATCH}")
        return cls(check_id(m.get("relay_id"), "received.relay_id"),
                   tuple(_sample_id({"sample_id": s}, f"received[{i}]") for i, s in enumerate(ids)))


Message = SampleBatch | DeviceState | DesiredModel | CampaignSet | Receipt
_TYPES: dict[str, type] = {t.TYPE: t for t in (SampleBatch, DeviceState, DesiredModel, CampaignSet, Receipt)}
M = TypeVar("M", SampleBatch, DeviceState, DesiredModel, CampaignSet, Receipt)


def encode(msg: Message) -> bytes:
    data = msgpack.packb({"v": VERSION, "type": msg.TYPE, **msg.to_wire()}, use_bin_type=True)
    if len(data) > MAX_MESSAGE_BYTES:
        raise TooLarge(f"{msg.TYPE}: {len(data)} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")
    return data


def decode(data: bytes, expect: type[M]) -> M:
    """bytes -> a validated message of type `expect`, or ProtocolError naming the bad field."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise TooLarge(f"message: {len(data)} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")
    try:
        raw = unpack_bounded(data, MAX_CONTAINERS, raw=False, strict_map_key=True, max_bin_len=MAX_MESSAGE_BYTES,
                             max_str_len=MAX_MESSAGE_BYTES, max_array_len=1 << 16, max_map_len=1 << 16)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise ProtocolError(f"message: not valid msgpack ({exc})") from exc
    if not isinstance(raw, dict):
        raise ProtocolError("message: expected a map")
    v = raw.get("v")
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ProtocolError(f"v: expected a positive integer schema version, got {v!r}")
    if v > VERSION:
        raise ProtocolError(f"v: schema version {v} is newer than this build understands ({VERSION}); upgrade")
    kind = raw.get("type")
    if kind != expect.TYPE:
        raise ProtocolError(f"type: expected {expect.TYPE!r}, got {kind!r}")
    return expect.from_wire(raw)


def unpack_bounded(data: bytes, max_containers: int, where: str = "message", **limits: Any) -> Any:
    """msgpack.unpackb(data, **limits) that refuses, with TooLarge, more than `max_containers` maps and
    arrays in all.

    msgpack's own limits bound each map and array, not how many there are: a one-byte empty map becomes
    a Python dict of some 60 bytes, so 8 MB of them (within MAX_MESSAGE_BYTES) would take half a gigabyte."""
    count = 0

    def counted(container):
        nonlocal count
        count += 1
        if count > max_containers:
            raise TooLarge(f"{where}: more than {max_containers} maps and arrays")
        return container

    return msgpack.unpackb(data, object_hook=counted, list_hook=counted, **limits)


# --- field readers: each names the path of what it refuses -------------------------------------

def _map(raw: Any, where: str) -> dict:
    if not isinstance(raw, dict):
        raise ProtocolError(f"{where}: expected a map")
    return raw


def _str(m: dict, key: str, where: str, default: str | None = None, max_len: int = MAX_STR) -> str:
    v = m.get(key, default)
    if not isinstance(v, str):
        raise ProtocolError(f"{where}.{key}: expected a string, got {type(v).__name__}")
    if len(v) > max_len:
        raise TooLarge(f"{where}.{key}: {len(v)} characters exceeds the limit of {max_len}")
    return v


def _bytes(m: dict, key: str, where: str, max_len: int) -> bytes:
    v = m.get(key)
    if not isinstance(v, bytes):
        raise ProtocolError(f"{where}.{key}: expected bytes, got {type(v).__name__}")
    if len(v) > max_len:
        raise TooLarge(f"{where}.{key}: {len(v)} bytes exceeds the limit of {max_len}")
    return v


def _float(m: dict, key: str, where: str, default: float | None = None) -> float:
    v = m.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ProtocolError(f"{where}.{key}: expected a finite number, got {v!r}")
    return float(v)


def _detections(m: dict, where: str, num_classes: int) -> np.ndarray | None:
    """Absent or None (a classifier, or an older sender) -> None; else (N, 6) float32 rows, checked."""
    if m.get("detections") is None:
        return None
    b = _bytes(m, "detections", where, MAX_DETECTIONS * 24)
    if len(b) % 24:
        raise ProtocolError(f"{where}.detections: expected rows of 6 float32 (24 bytes), got {len(b)} bytes")
    det = np.frombuffer(b, "<f4").astype(np.float32).reshape(-1, 6)
    if not np.all(np.isfinite(det)):
        raise ProtocolError(f"{where}.detections: contains NaN or infinity")
    score, cls = det[:, 4], det[:, 5]
    if np.any((score < 0) | (score > 1)):
        raise ProtocolError(f"{where}.detections: scores must lie in [0, 1]")
    if np.any((cls < 0) | (cls >= num_classes) | (cls != np.round(cls))):
        raise ProtocolError(f"{where}.detections: classes must be integers from 0 to {num_classes - 1} "
                            "(one per probability)")
    return det


def _sample_id(m: dict, where: str) -> str:
    v = m.get("sample_id")
    if not isinstance(v, str) or not re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", v):
        raise ProtocolError(f"{where}.sample_id: expected a 26-character ULID, got {v!r}")
    return v


def _str_map(m: dict, key: str, where: str) -> dict[str, str]:
    v = m.get(key, {})
    if not isinstance(v, dict) or len(v) > MAX_ITEMS:
        raise ProtocolError(f"{where}.{key}: expected a map of at most {MAX_ITEMS} strings")
    for k, x in v.items():
        if not isinstance(k, str) or not isinstance(x, str) or len(k) > MAX_STR or len(x) > MAX_STR:
            raise ProtocolError(f"{where}.{key}.{k}: expected a string of at most {MAX_STR} characters")
    return dict(v)


def _float_map(m: dict, key: str, where: str, limit: int = MAX_ITEMS) -> dict[str, float]:
    v = m.get(key, {})
    if not isinstance(v, dict) or len(v) > limit:
        raise ProtocolError(f"{where}.{key}: expected a map of at most {limit} numbers")
    return {_key(k, f"{where}.{key}"): _float(v, k, f"{where}.{key}") for k in v}


def _key(k: Any, where: str) -> str:
    if not isinstance(k, str) or len(k) > MAX_STR:
        raise ProtocolError(f"{where}: keys must be strings of at most {MAX_STR} characters")
    return k


def _str_list(m: dict, key: str, where: str) -> list[str]:
    v = m.get(key, [])
    if not isinstance(v, list) or len(v) > MAX_ITEMS:
        raise ProtocolError(f"{where}.{key}: expected a list of at most {MAX_ITEMS} strings")
    for i, x in enumerate(v):
        if not isinstance(x, str) or len(x) > MAX_STR:
            raise ProtocolError(f"{where}.{key}[{i}]: expected a string of at most {MAX_STR} characters")
    return v
