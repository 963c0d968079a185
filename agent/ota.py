"""Over-the-air model updates on the device: fetch, verify, load, keep the previous one.

    data, rt = store.get(desired)      # download, sha256 and size, Ed25519 signature, manifest, version
    store.promote(store.stage(data))   # active.model -> previous.model, the new one -> active.model
    store.roll_back()                  # previous.model -> active.model again (the bad one is dropped)
    store.install_shadow(data)         # shadow.model, beside them; never touches active or previous

The artifact is written to disk only after its sha256 matched and onnxruntime loaded it, so a
bad download never replaces the active model. Every change on disk is an atomic rename, so a crash
leaves either the old or the new file under each name.

Errors: `get` raises PeerUnavailable when the download did not complete (relay unreachable, HTTP
error, connection cut short): retrying is safe. Anything else it raises (IntegrityError,
ManifestError, ModelMismatch, ModelError, ProtocolError) means these bytes are bad for this desired
state: fetching them again would not help.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from edgeloop.shared.artifact import unpack
from edgeloop.shared.errors import IntegrityError, PeerUnavailable, ProtocolError
from edgeloop.shared.protocol import DesiredModel, ShadowModel
from edgeloop.shared.runtime import ModelRuntime

log = logging.getLogger(__name__)


class ModelStore:
    """`active.model`, `previous.model` and `shadow.model` under the agent's data folder."""

    def __init__(self, folder: Path, public_key, threads: int = 1):
        self.public_key = public_key  # the hub's, from provisioning: nothing unsigned by it loads
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.threads = threads

    @property
    def active_path(self) -> Path:
        return self.folder / "active.model"

    @property
    def previous_path(self) -> Path:
        return self.folder / "previous.model"

    @property
    def shadow_path(self) -> Path:
        return self.folder / "shadow.model"

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

    def get(self, ref: DesiredModel | ShadowModel) -> tuple[bytes, ModelRuntime]:
        """Fetch and check the artifact a desired state names, then load it: -> (bytes, runtime)."""
        data = self.fetch(ref)
        rt = self.load_bytes(data)
        if rt.version != ref.version:
            raise ProtocolError(f"artifact holds version {rt.version}, desired says {ref.version}")
        return data, rt

    def fetch(self, desired: DesiredModel | ShadowModel, timeout: float = 30) -> bytes:
        try:
            with urllib.request.urlopen(desired.url, timeout=timeout) as resp:
                data = resp.read(desired.size + 1)
                # The connection closed before the bytes the server announced: a transfer problem.
                cut_short = len(data) < desired.size and resp.length is not None and resp.length > 0
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise PeerUnavailable(f"model {desired.version}: download from {desired.url} failed ({exc})") from exc
        if cut_short:
            raise PeerUnavailable(f"model {desired.version}: the download from {desired.url} was cut short "
                                  f"after {len(data)} bytes")
        if len(data) != desired.size:
            raise IntegrityError(f"model {desired.version}: got {len(data)} bytes, expected {desired.size} (truncated?)")
        if hashlib.sha256(data).hexdigest() != desired.sha256:
            raise IntegrityError(f"model {desired.version}: sha256 does not match the desired state")
        return data

    def stage(self, data: bytes, name: str = "incoming.model") -> Path:
        """Write `data` durably beside the models, under a name nothing loads; -> its path."""
        tmp = self.folder / name
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def promote(self, staged: Path) -> None:
        """Make a staged file the active model, keeping the old one as previous (atomic renames)."""
        if self.active_path.exists():
            os.replace(self.active_path, self.previous_path)
        os.replace(staged, self.active_path)

    def install(self, data: bytes) -> None:
        """Make `data` the active model on disk, keeping the old one as previous."""
        self.promote(self.stage(data))

    def roll_back(self) -> None:
        """previous.model becomes the active model again; the active one, rolled back, is dropped."""
        if not self.previous_path.exists():
            raise FileNotFoundError(f"no previous model in {self.folder} to roll back to")
        os.replace(self.previous_path, self.active_path)

    def install_shadow(self, data: bytes) -> None:
        os.replace(self.stage(data, "incoming-shadow.model"), self.shadow_path)

    def drop_shadow(self) -> None:
        self.shadow_path.unlink(missing_ok=True)
