"""Ed25519 signatures over model digests: the hub signs, every device verifies before loading.

The hub holds the private key (`edgeloop keys init` writes hub.key and hub.pub); devices get only
hub.pub. What is signed is the raw 32 bytes of the model digest, a sha256 over the length-framed
manifest and ONNX bytes (see `artifact.model_digest`), so a signature covers the manifest and the
ONNX bytes together, and how they split.

    priv_pem, pub_pem = generate_keypair()
    sig = sign_digest(load_private_key(priv_pem), digest_hex)
    verify_digest(load_public_key(pub_pem), digest_hex, sig)   # IntegrityError if it does not verify

A key file that will not load, or holds another kind of key, is a ConfigError (fix the file);
a signature that does not verify is an IntegrityError (refuse the model).
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import ConfigError, IntegrityError

SIGNATURE_BYTES = 64
KEY_ID_CHARS = 16


def generate_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private PEM, PKCS8 unencrypted; public PEM, SubjectPublicKeyInfo)."""
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return private_pem, public_pem


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """PEM bytes -> Ed25519 private key; ConfigError if unreadable, encrypted or not Ed25519."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError as exc:  # encrypted, and we gave no password
        raise ConfigError(f"private key: cannot load an encrypted key ({exc})") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"private key: not a PEM private key ({_first_line(exc)})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"private key: expected an Ed25519 key, got {_kind(key)}")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    """PEM bytes -> Ed25519 public key; ConfigError if unreadable or not Ed25519."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"public key: not a PEM public key ({_first_line(exc)})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"public key: expected an Ed25519 key, got {_kind(key)}")
    return key


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex chars of sha256(raw public key): names the key that signed, in files and messages."""
    if isinstance(public_key, Ed25519PrivateKey):
        public_key = public_key.public_key()
    if not isinstance(public_key, Ed25519PublicKey):
        raise TypeError(f"key_id: expected an Ed25519 key, got {type(public_key).__name__}")
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_CHARS]


def sign_digest(private_key: Ed25519PrivateKey, digest_hex: str) -> bytes:
    """The 64-byte Ed25519 signature over the raw 32 bytes of a sha256 hex digest."""
    if not isinstance(private_key, Ed25519PrivateKey):
        raise TypeError(f"sign_digest: expected an Ed25519PrivateKey, got {type(private_key).__name__}")
    return private_key.sign(_digest_bytes(digest_hex))


def verify_digest(public_key: Ed25519PublicKey, digest_hex: str, signature: bytes) -> None:
    """Return if `signature` is public_key's signature of the digest; IntegrityError otherwise."""
    if not isinstance(public_key, Ed25519PublicKey):
        raise TypeError(f"verify_digest: expected an Ed25519PublicKey, got {type(public_key).__name__}")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise IntegrityError(f"signature: expected {SIGNATURE_BYTES} bytes")
    try:
        digest = _digest_bytes(digest_hex)
    except ValueError as exc:
        raise IntegrityError(f"signature: {exc}") from exc
    try:
        public_key.verify(signature, digest)
    except InvalidSignature:
        raise IntegrityError("signature does not verify: signed by another key or tampered") from None


def _digest_bytes(digest_hex: str) -> bytes:
    if not isinstance(digest_hex, str) or len(digest_hex) != 64:
        raise ValueError(f"expected a sha256 hex digest (64 hex chars), got {digest_hex!r:.80}")
    try:
        return bytes.fromhex(digest_hex)
    except ValueError:
        raise ValueError(f"expected a sha256 hex digest (64 hex chars), got {digest_hex!r:.80}") from None


def _kind(key: object) -> str:
    return type(key).__name__.lstrip("_").replace("PrivateKey", "").replace("PublicKey", "") or type(key).__name__


def _first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
