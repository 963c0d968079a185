"""The relay's model cache: each artifact downloaded once from the hub, by content (sha256).

Downloads resume where they stopped (HTTP Range on a `.part` file), are never written past the
size the hub announced, are verified against the sha256 it announced before they count, and the
cache is bounded: the least recently used artifacts that no device needs go first.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from pathlib import Path

import aiohttp

from edgeloop.shared.errors import IntegrityError

log = logging.getLogger("edgeloop.relay")
CHUNK = 1 << 20


class ModelCache:
    def __init__(self, folder: Path, max_bytes: int = 2 << 30):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.bytes_in = 0  # downloaded from the hub (resumed downloads count only the new bytes)

    def path(self, sha256: str) -> Path:
        return self.folder / f"{sha256}.model"

    def has(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    async def fetch(self, http: aiohttp.ClientSession, url: str, sha256: str, size: int, headers: dict) -> None:
        """Download url into the cache unless present; resume a partial download; verify."""
        if self.has(sha256):
            return
        part = self.folder / f"{sha256}.part"
        have = part.stat().st_size if part.exists() else 0
        if have > size:  # not ours to resume
            part.unlink()
            have = 0
        req = dict(headers)
        if have:
            req["Range"] = f"bytes={have}-"
        async with http.get(url, headers=req) as resp:
            resp.raise_for_status()
            if have and resp.status != 206:  # the server ignored the range: start over
                have = 0
            with open(part, "ab" if have else "wb") as f:
                got = have
                async for chunk in resp.content.iter_chunked(CHUNK):
                    got += len(chunk)
                    if got > size:  # never more than announced on the disk: a hub (or a proxy) gone wrong
                        f.close()
                        part.unlink()
                        raise IntegrityError(f"model artifact from {url}: more than the announced {size} bytes; "
                                             "download abandoned")
                    f.write(chunk)
                    self.bytes_in += len(chunk)
                f.flush()
                os.fsync(f.fileno())
        digest = await asyncio.to_thread(_sha256_file, part)
        if digest != sha256:
            part.unlink()
            raise IntegrityError(f"model artifact from {url}: sha256 {digest[:12]}… is not the announced {sha256[:12]}…")
        part.replace(self.path(sha256))
        log.info("cached model artifact %s… (%d bytes%s)", sha256[:12], size, ", resumed" if have else "")

    def touch(self, sha256: str) -> None:
        p = self.path(sha256)
        if p.exists():
            os.utime(p, (time.time(), time.time()))

    def prune(self, keep: set[str]) -> list[str]:
        """Evict least recently used artifacts not in `keep` until the cache fits max_bytes."""
        files = sorted(self.folder.glob("*.model"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        gone = []
        for p in files:
            if total <= self.max_bytes:
                break
            if p.stem in keep:
                continue
            total -= p.stat().st_size
            p.unlink()
            gone.append(p.stem)
        if gone:
            log.info("model cache: evicted %d artifact(s) no device needs", len(gone))
        return gone


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()
