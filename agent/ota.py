"""Over-the-air model updates on the device: fetch, verify, load, keep the previous one.

The artifact is written to disk only after its sha256 matched and onnxruntime loaded it, so a
bad download never replaces the active model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from edgeloop.shared.artifact import unpack
from edgeloop.shared.errors import IntegrityError, PeerUnavailable
from edgeloop.shared.protocol import DesiredModel
from edgeloop.shared.runtime import ModelRuntime

log = logging.getLogger(__name__)


class ModelStore:
    """`active.model` and `previous.model` under the agent's data folder."""

    def __init__(self, folder: Path, public_key, threads: int = 1):
        self.public_key = public_key  # the hub's, from provisioning: nothing unsigned by it loads
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.threads = threads

    @property
    def active_path(self) -> Path:
        return self.folder / "active.model"

    def load_active(self) -> ModelRuntime | None:
        """The model that ran before a restart, if any; a damaged file is set aside, not fatal."""
        if not self.active_path.exists():
            return None
        try:
            return self.load_bytes(self.active_path.read_bytes())
        except Exception as exc:  # noqa: BLE001 - any failure means: start without it
            log.error("the stored active model does not load (%s); waiting for a desired model", exc)
            return None

    def load_bytes(self, data: bytes) -> ModelRuntime:
        """Verify the signature, then load: a tampered, truncated or foreign model never reaches onnxruntime."""
        art = unpack(data)
        art.verify(self.public_key)
        return ModelRuntime.load(art.onnx, art.manifest, threads=self.threads)

    def fetch(self, desired: DesiredModel, timeout: float = 30) -> bytes:
        try:
            with urllib.request.urlopen(desired.url, timeout=timeout) as resp:
                data = resp.read(desired.size + 1)
        except (urllib.error.URLError, OSError) as exc:
            raise PeerUnavailable(f"model {desired.version}: download from {desired.url} failed ({exc})") from exc
        if len(data) != desired.size:
            raise IntegrityError(f"model {desired.version}: got {len(data)} bytes, expected {desired.size} (truncated?)")
        if hashlib.sha256(data).hexdigest() != desired.sha256:
            raise IntegrityError(f"model {desired.version}: sha256 does not match the desired state")
        return data

    def install(self, data: bytes) -> None:
        """Make `data` the active model on disk, keeping the old one as previous (atomic renames)."""
        tmp = self.folder / "incoming.model"
        tmp.write_bytes(data)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if self.active_path.exists():
            os.replace(self.active_path, self.folder / "previous.model")
        os.replace(tmp, self.active_path)
