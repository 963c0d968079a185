"""A model artifact: one file holding the manifest, the ONNX bytes and, once the hub signs it, a signature.

The model digest is what the hub signs (Ed25519, see `signing`). The artifact file is a msgpack map
{v, type: "model", manifest, onnx, digest_v[, signature, key_id]}; `unpack` checks it whole before anything
loads it, and `ModelArtifact.verify(public_key)` checks the signature.

Digest versions (`digest_v`): 2, written since the OTA hardening, frames the two parts with their
lengths, sha256("edgeloop model v2\0" ‖ len(manifest) ‖ manifest ‖ len(onnx) ‖ onnx) with 8-byte
big-endian lengths, so that the signed bytes cannot be re-split into another manifest and ONNX;
1 (the key absent: artifacts signed before) is sha256(manifest ‖ onnx), still verified as it was. The
field is not signed, and need not be: a signature over one digest does not verify over the other.

    data = sign_artifact(pack(manifest, onnx), private_key)
    art = unpack(data)          # IntegrityError / ManifestError for a malformed or truncated file
    art.verify(public_key)      # IntegrityError: unsigned, tampered, or signed by another key

`key_id` only names the signing key (first 16 hex of sha256 of the raw public key); it is not signed,
so `verify` checks it matches the key the signature verifies with.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import msgpack

from .errors import IntegrityError, TooLarge
from .manifest import ModelManifest
from .protocol import unpack_bounded
from .signing import SIGNATURE_BYTES, key_id as _key_id, sign_digest, verify_digest

MAX_ARTIFACT_BYTES = 512 << 20
_KEYS = {"v", "type", "manifest", "onnx", "signature", "key_id", "digest_v"}
DIGEST_V = 2  # what `pack` writes
_FRAME_TAG = b"edgeloop model v2\x00"
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_MAX_CONTAINERS = 16  # maps and arrays in an artifact file, and entries in each: it holds one map of six keys


@dataclass(frozen=True, eq=False)
class ModelArtifact:
    manifest: ModelManifest
    manifest_bytes: bytes
    onnx: bytes
    signature: bytes | None = None
    key_id: str | None = None
    digest_v: int = DIGEST_V

    @property
    def digest(self) -> str:
        return model_digest(self.manifest_bytes, self.onnx, framed=self.digest_v == 2)

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def signed(self) -> bool:
        return self.signature is not None

    def verify(self, public_key) -> None:
        """Return if the artifact is signed by `public_key` and untouched since; IntegrityError otherwise."""
        if self.signature is None:
            raise IntegrityError("artifact is unsigned")
        expected = _key_id(public_key)
        try:
            verify_digest(public_key, self.digest, self.signature)
        except IntegrityError:
            if self.key_id is not None and self.key_id != expected:
                raise IntegrityError(f"signature does not verify: signed by another key (key id {self.key_id}), "
                                     f"not by the given public key (key id {expected})") from None
            raise
        if self.key_id is not None and self.key_id != expected:
            raise IntegrityError(f"artifact: key_id {self.key_id} does not match the key that signed it "
                                 f"({expected}): tampered")


def model_digest(manifest_bytes: bytes, onnx: bytes, framed: bool = True) -> str:
    """The sha256 hex digest the hub signs: framed (digest_v 2), or the legacy plain concatenation."""
    if not framed:
        return hashlib.sha256(manifest_bytes + onnx).hexdigest()
    h = hashlib.sha256(_FRAME_TAG)
    for part in (manifest_bytes, onnx):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def pack(manifest: ModelManifest, onnx: bytes, signature: bytes | None = None, key_id: str | None = None) -> bytes:
    """Manifest and ONNX bytes (and optionally the signature over their digest) -> artifact bytes."""
    return _pack(manifest.to_json(), onnx, signature, key_id)


def _pack(manifest_bytes: bytes, onnx: bytes, signature: bytes | None, key_id: str | None) -> bytes:
    if signature is not None and (not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES):
        raise ValueError(f"pack: signature must be {SIGNATURE_BYTES} bytes")
    if key_id is not None and (not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id)):
        raise ValueError(f"pack: key_id must be 16 lowercase hex chars, got {key_id!r}")
    if key_id is not None and signature is None:
        raise ValueError("pack: key_id without a signature")
    raw = {"v": 1, "type": "model", "manifest": manifest_bytes, "onnx": onnx, "digest_v": DIGEST_V}
    if signature is not None:
        raw["signature"] = signature
    if key_id is not None:
        raw["key_id"] = key_id
    return msgpack.packb(raw, use_bin_type=True)


def sign_artifact(data: bytes, private_key) -> bytes:
    """Artifact bytes -> the same artifact signed by `private_key` (any earlier signature is replaced).

    The manifest bytes are kept as they are; the digest is the framed one (an artifact of digest_v 1
    signed again becomes digest_v 2)."""
    art = unpack(data)
    signature = sign_digest(private_key, model_digest(art.manifest_bytes, art.onnx))
    return _pack(art.manifest_bytes, art.onnx, signature, _key_id(private_key.public_key()))


def unpack(data: bytes) -> ModelArtifact:
    """Artifact bytes -> ModelArtifact; IntegrityError for a truncated or malformed file, ManifestError for a
    well-formed file whose manifest is bad. Does not check the signature: call `.verify(public_key)`."""
    if len(data) > MAX_ARTIFACT_BYTES:
        raise IntegrityError(f"artifact: {len(data)} bytes exceeds the limit of {MAX_ARTIFACT_BYTES}")
    try:
        # One map of a few keys, no arrays: anything more is refused before it can take memory.
        raw = unpack_bounded(data, _MAX_CONTAINERS, "artifact", raw=False, max_bin_len=MAX_ARTIFACT_BYTES,
                             max_array_len=_MAX_CONTAINERS, max_map_len=_MAX_CONTAINERS)
    except TooLarge as exc:
        raise IntegrityError(str(exc)) from exc
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise IntegrityError(f"artifact: truncated or not an edgeloop model artifact ({exc})") from exc
    # `type(...) is int`: msgpack's True would otherwise pass for 1.
    if not isinstance(raw, dict) or raw.get("type") != "model" or type(raw.get("v")) is not int or raw["v"] != 1:
        raise IntegrityError("artifact: not an edgeloop model artifact (v1)")
    unknown = sorted(map(str, set(raw) - _KEYS))
    if unknown:
        raise IntegrityError(f"artifact: unknown key(s) {', '.join(unknown)[:200]}")
    mb, onnx = raw.get("manifest"), raw.get("onnx")
    if not isinstance(mb, bytes) or not isinstance(onnx, bytes):
        raise IntegrityError("artifact: manifest and onnx must be bytes")
    signature, kid = raw.get("signature"), raw.get("key_id")
    if signature is not None and (not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES):
        raise IntegrityError(f"artifact: signature must be {SIGNATURE_BYTES} bytes")
    if kid is not None and (not isinstance(kid, str) or not _KEY_ID.fullmatch(kid)):
        raise IntegrityError("artifact: key_id must be 16 lowercase hex chars")
    if kid is not None and signature is None:
        raise IntegrityError("artifact: key_id without a signature")
    digest_v = raw.get("digest_v", 1)
    if type(digest_v) is not int or digest_v not in (1, 2):
        raise IntegrityError(f"artifact: digest_v must be 1 or 2, got {digest_v!r:.40}")
    return ModelArtifact(ModelManifest.from_json(mb), mb, onnx, signature, kid, digest_v)
