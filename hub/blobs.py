"""Content-addressed blob store: bytes live at sha256 paths, written once, atomically.

Several hub processes (on several hosts) may share the folder, e.g. one Kubernetes ReadWriteMany
volume: a blob is immutable and named by its content, so two writers of the same blob write the
same bytes, each to a temporary file of its own, and either rename wins.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest[2:4] / digest

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        p = self.path(digest)
        if not p.exists():
            made = [d for d in (p.parent.parent, p.parent) if not d.exists()]
            p.parent.mkdir(parents=True, exist_ok=True)
            # Random, not pid + thread: processes on other hosts (or in other containers) share the folder.
            tmp = p.with_name(f"{p.name}.{secrets.token_hex(8)}.tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                # On disk before the database row that points at it commits (synchronous=FULL there).
                os.fsync(f.fileno())
            os.replace(tmp, p)
            # The rename, and any folder made for it, must be on disk too before the row that points at
            # the blob commits: a power cut could otherwise leave the row and lose the name.
            for folder in {p.parent, *(d.parent for d in made)}:
                _fsync_dir(folder)
        return digest

    def get(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
