"""A model artifact: one file holding the manifest and the ONNX bytes.

The model digest is sha256(manifest ‖ onnx), the bytes the hub signs. The artifact file is a
msgpack map {v, type: "model", manifest, onnx}; `unpack` checks it whole before anything loads it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgpack

from .errors import IntegrityError
from .manifest import ModelManifest

MAX_ARTIFACT_BYTES = 512 << 20


@dataclass(frozen=True, eq=False)
class ModelArtifact:
    manifest: ModelManifest
    manifest_bytes: bytes
    onnx: bytes

    @property
    def digest(self) -> str:
        return model_digest(self.manifest_bytes, self.onnx)

    @property
    def version(self) -> str:
        return self.manifest.version


def model_digest(manifest_bytes: bytes, onnx: bytes) -> str:
    return hashlib.sha256(manifest_bytes + onnx).hexdigest()


def pack(manifest: ModelManifest, onnx: bytes) -> bytes:
    return msgpack.packb({"v": 1, "type": "model", "manifest": manifest.to_json(), "onnx": onnx}, use_bin_type=True)


def unpack(data: bytes) -> ModelArtifact:
    """Artifact bytes -> ModelArtifact; IntegrityError for a truncated or malformed file."""
    if len(data) > MAX_ARTIFACT_BYTES:
        raise IntegrityError(f"artifact: {len(data)} bytes exceeds the limit of {MAX_ARTIFACT_BYTES}")
    try:
        raw = msgpack.unpackb(data, raw=False, max_bin_len=MAX_ARTIFACT_BYTES)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise IntegrityError(f"artifact: truncated or not an edgeloop model artifact ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("type") != "model" or raw.get("v") != 1:
        raise IntegrityError("artifact: not an edgeloop model artifact (v1)")
    mb, onnx = raw.get("manifest"), raw.get("onnx")
    if not isinstance(mb, bytes) or not isinstance(onnx, bytes):
        raise IntegrityError("artifact: manifest and onnx must be bytes")
    return ModelArtifact(ModelManifest.from_json(mb), mb, onnx)
