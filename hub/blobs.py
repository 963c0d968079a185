"""Content-addressed blob store: bytes live at sha256 paths, written once, atomically.

Several hub processes (on several hosts) may share the folder, e.g. one Kubernetes ReadWriteMany
volume: a blob is immutable and named by its content, so two writers of the same blob write the
same bytes, each to a temporary file of its own, and either rename wins.
"""

from __future__ import annotations

import ctypes
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

    def put_many(self, datas: list[bytes]) -> list[str]:
        """put() for each -> their digests, durable together: the new ones are written, the file
        system flushed once (syncfs), all renamed, and flushed once more, instead of two fsyncs for
        each (the file, then its folder). One disk serves a few hundred fsyncs a second, so those
        were three quarters of the hub's ingest (py-spy, README "Throughput and sizing"). Where
        syncfs is missing (not Linux), put() one by one."""
        if _syncfs is None:
            return [self.put(d) for d in datas]
        digests = [hashlib.sha256(d).hexdigest() for d in datas]
        todo: dict[str, tuple[Path, Path]] = {}
        try:
            for digest, data in zip(digests, datas):
                p = self.path(digest)
                if digest in todo or p.exists():
                    continue
                p.parent.mkdir(parents=True, exist_ok=True)
                tmp = p.with_name(f"{p.name}.{secrets.token_hex(8)}.tmp")
                todo[digest] = (tmp, p)
                tmp.write_bytes(data)
            if todo:
                _flush(self.root)  # every new file's bytes on disk before any name points at them
        except OSError:  # e.g. a full disk: no half-written temporary files left behind
            for tmp, _ in todo.values():
                tmp.unlink(missing_ok=True)
            raise
        for tmp, p in todo.values():
            os.replace(tmp, p)
        if todo:
            _flush(self.root)  # the names and new folders too, before the rows that point at them commit
        return digests

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


def _load_syncfs():
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


_syncfs = _load_syncfs()


def _flush(folder: Path) -> None:
    """Everything written to the file system holding `folder`, on disk (syncfs(2): Linux)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs {folder}: {os.strerror(err)}")
    finally:
        os.close(fd)
