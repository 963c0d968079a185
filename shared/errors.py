"""The error tree of edgeloop. Catch `EdgeloopError` only at process boundaries.

    EdgeloopError
    ├── ConfigError          a config file or option is wrong; fix it and restart
    ├── ProtocolError        a peer sent bytes we refuse; retrying won't help
    │   └── TooLarge         ... because they exceed an explicit size limit
    ├── ModelError           a model or its manifest is unusable
    │   ├── ManifestError    the manifest is malformed
    │   ├── ModelMismatch    the ONNX file does not match its manifest
    │   └── IntegrityError   a digest or signature does not verify
    │       └── StaleStatement   a signed desired statement older than one accepted, or expired
    ├── ImageError           an image would not decode
    ├── StorageError         the local database refused a write (disk full, corrupt)
    └── PeerUnavailable      broker or hub unreachable; retrying is safe

Foreign errors (sqlite3, onnxruntime, msgpack, aiohttp, paho) are mapped to these where they enter.
"""


class EdgeloopError(Exception):
    """Root of every error edgeloop raises on purpose."""

    hint: str = ""


class ConfigError(EdgeloopError):
    """A config file or command-line option is wrong."""

    hint = "check the config file against the README's configuration section"


class ProtocolError(EdgeloopError):
    """A peer sent something we refuse; retrying the same bytes won't help."""


class TooLarge(ProtocolError):
    """A message or field exceeds an explicit size limit."""


class ModelError(EdgeloopError):
    """A model or its manifest cannot be used."""


class ManifestError(ModelError):
    """The model manifest is malformed."""


class ModelMismatch(ModelError):
    """The ONNX model's inputs or outputs do not match its manifest."""


class IntegrityError(ModelError):
    """A digest or signature does not verify: the artifact is tampered or truncated."""


class StaleStatement(IntegrityError):
    """A validly signed desired statement that must not be acted on: a lower sequence number than
    one already accepted (a replay: downgrade) or past its expiry (a relay holding updates back)."""


class ImageError(EdgeloopError):
    """Image bytes would not decode (corrupt or not an image)."""


class StorageError(EdgeloopError):
    """The local database refused a write."""


class PeerUnavailable(EdgeloopError):
    """The broker or hub cannot be reached now; retrying later is safe."""
