"""Time-ordered, globally unique sample ids (ULID): sortable by capture time, safe to dedup on."""

from __future__ import annotations

import hashlib

from ulid import ULID


def new_sample_id() -> str:
    return str(ULID())


def frame_sample_id(captured_at: float, device_id: str, camera_id: str, index: int) -> str:
    """The id of one frame of one camera: the capture time in milliseconds, then 80 bits of
    sha256(device, camera, index). A frame replayed after a crash gets the same id, so every tier
    deduplicates it instead of storing it twice."""
    ms = max(0, int(captured_at * 1000)).to_bytes(6, "big")
    rand = hashlib.sha256(f"{device_id}\x00{camera_id}\x00{index}".encode()).digest()[:10]
    return str(ULID.from_bytes(ms + rand))
