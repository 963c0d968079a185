"""JPEG in and out, with typed errors for what will not decode.

Image bytes come from the fleet, so `decode_image` reads only JPEG and PNG (not every format OpenCV
knows) and reads the size from the header first: a few hundred bytes may claim 30000 x 30000 pixels,
which OpenCV would allocate (2.7 GB) and fill before noticing the data ends.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from .errors import ImageError

MAX_PIXELS = 1 << 25  # 33.5 Mpx, an 8K frame: about 100 MB decoded
_PNG = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers: every SOFn but DHT (C4), JPG (C8) and DAC (CC).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}  # TEM, SOI, RST0-7: no length follows


def encode_jpeg(frame: np.ndarray, quality: int = 85) -> bytes:
    """frame (H, W, 3) uint8 BGR -> JPEG bytes."""
    try:
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    except cv2.error:
        ok = False
    if not ok:
        raise ImageError(f"could not encode a frame of shape {frame.shape} as JPEG")
    return buf.tobytes()


def check_image(data: bytes) -> tuple[int, int]:
    """-> (height, width) of JPEG/PNG bytes that decode, or ImageError. Cheaper than decode_image: the
    pixels are decoded at an eighth of the size, in grey, and thrown away (the hub checks every image
    it is sent, so that nothing it stores breaks a training round later)."""
    _decode(data, cv2.IMREAD_REDUCED_GRAYSCALE_8)
    return claimed_size(data)


def decode_image(data: bytes) -> np.ndarray:
    """JPEG/PNG bytes -> (H, W, 3) uint8 BGR, or ImageError: not JPEG or PNG, corrupt, or claiming more
    than MAX_PIXELS."""
    return _decode(data, cv2.IMREAD_COLOR)


def _decode(data: bytes, flags: int) -> np.ndarray:
    if not data:
        raise ImageError("empty image")
    height, width = claimed_size(data)
    if height * width > MAX_PIXELS:
        raise ImageError(f"image claims {height}x{width} pixels, more than the limit of {MAX_PIXELS}")
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:  # e.g. a header OpenCV refuses outright
        raise ImageError(f"{len(data)} bytes do not decode as an image ({exc.msg.strip()[:200]})") from exc
    if img is None:
        raise ImageError(f"{len(data)} bytes do not decode as an image")
    return img


def image_size(data: bytes) -> tuple[int | None, int | None]:
    """(width, height) from a JPEG's or PNG's header without decoding it; (None, None) when it has
    none (a test's fake JPEG, a corrupt upload: the hub keeps those, boxes cannot be placed on them)."""
    try:
        height, width = claimed_size(data)
    except ImageError:
        return None, None
    return (width, height) if width > 0 and height > 0 else (None, None)


def claimed_size(data: bytes) -> tuple[int, int]:
    """(height, width) from a JPEG's frame header or a PNG's IHDR, before anything is allocated."""
    data = bytes(data)
    if data.startswith(_PNG):
        if data[12:16] != b"IHDR" or len(data) < 24:
            raise ImageError("PNG without its IHDR header")
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return height, width
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg_size(data)
    raise ImageError(f"{len(data)} bytes are not a JPEG or PNG image")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Walk the JPEG's marker segments as libjpeg does (skipping stray bytes and fill 0xFFs) up to the
    first start-of-frame; refuse a stream that reaches its scan data or its end without one."""
    i, n = 2, len(data)
    while i < n:
        i = data.find(b"\xff", i)
        if i < 0:
            break
        while i < n and data[i] == 0xFF:
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker == 0x00 or marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # EOI, SOS: no frame header came first
            break
        if i + 2 > n:
            break
        if marker in _SOF:
            if i + 7 > n:
                break
            return int.from_bytes(data[i + 3:i + 5], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        length = int.from_bytes(data[i:i + 2], "big")
        if length < 2:
            break
        i += length
    raise ImageError("JPEG without a frame header (SOF) before its scan data")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
