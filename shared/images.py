"""JPEG in and out, with typed errors for what will not decode."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from .errors import ImageError


def encode_jpeg(frame: np.ndarray, quality: int = 85) -> bytes:
    """frame (H, W, 3) uint8 BGR -> JPEG bytes."""
    try:
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    except cv2.error:
        ok = False
    if not ok:
        raise ImageError(f"could not encode a frame of shape {frame.shape} as JPEG")
    return buf.tobytes()


def decode_image(data: bytes) -> np.ndarray:
    """JPEG/PNG bytes -> (H, W, 3) uint8 BGR, or ImageError."""
    if not data:
        raise ImageError("empty image")
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. a header that claims a gigantic image
        raise ImageError(f"{len(data)} bytes do not decode as an image ({exc.msg.strip()[:200]})") from exc
    if img is None:
        raise ImageError(f"{len(data)} bytes do not decode as an image")
    return img


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
