"""Drawing for the scenes world: object sprites, camera backgrounds, and the frame pipeline.

Private to `scenes`: `ScenesWorld.frame()` calls `render()` with the ground truth it computed, so the
pixels and the boxes come from the same numbers. Nothing here draws random numbers of its own: every
per-frame choice arrives as a hash value from the caller.

Sprites are drawn once per process with cv2 primitives at a canonical height, as premultiplied
(h, w, 5) float32 layers: B, G, R of the fixed parts, a "paint" mask that takes the instance colour,
and alpha. Each is cropped to its alpha, so a sprite resized to a box fills exactly that box.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from .world import _photos

CANON = 96           # sprite height in pixels before mipmapping
N_VARIANTS = 6       # drawn variants per class (shape details, pose, tilt)
NOISE_PAD = 32       # the sensor-noise field is this much larger than the frame: windows of it vary

_GLASS = (70, 60, 50)
_TYRE = (25, 25, 28)
_DARK = (45, 45, 50)
_SKIN = (120, 150, 200)
_METAL = (150, 150, 155)


class _Canvas:
    """Three layers drawn together: fixed colour, paint mask (instance colour), alpha."""

    def __init__(self, w: int, h: int):
        self.w, self.h = w, h
        self.base = np.zeros((h, w, 3), np.float32)
        self.paint = np.zeros((h, w), np.float32)
        self.alpha = np.zeros((h, w), np.float32)

    def _apply(self, draw, color) -> None:
        draw(self.alpha, 1.0)
        draw(self.paint, 1.0 if color is None else 0.0)
        draw(self.base, (0.0, 0.0, 0.0) if color is None else tuple(float(c) for c in color))

    def poly(self, pts, color=None) -> None:
        p = [np.asarray(pts, np.float32).round().astype(np.int32)]
        self._apply(lambda img, v: cv2.fillPoly(img, p, v), color)

    def rect(self, x1, y1, x2, y2, color=None) -> None:
        self.poly([(x1, y1), (x2, y1), (x2, y2), (x1, y2)], color)

    def circle(self, x, y, r, color=None, thickness=-1) -> None:
        self._apply(lambda img, v: cv2.circle(img, (round(x), round(y)), max(1, round(r)), v, thickness), color)

    def line(self, p1, p2, thickness, color=None) -> None:
        a, b = tuple(round(v) for v in p1), tuple(round(v) for v in p2)
        self._apply(lambda img, v: cv2.line(img, a, b, v, max(1, round(thickness))), color)

    def ellipse(self, x, y, rx, ry, color=None) -> None:
        self._apply(lambda img, v: cv2.ellipse(img, (round(x), round(y)), (max(1, round(rx)), max(1, round(ry))),
                                               0, 0, 360, v, -1), color)


# ---- the twelve classes, each drawn facing right -------------------------------------------------
# Look-alike pairs on purpose: car/van (a van is taller, boxier, with a sliding-door seam), bike/
# motorbike (thin rings and frame vs thick tyres and an engine block), truck/trailer (a trailer has
# no cab), scooter/bike. Aspect ratios (w/h) are chosen per class in CLASS_SPEC of scenes.py.

def _wheels(c, xs, y, r, hub=True):
    for x in xs:
        c.circle(x, y, r, _TYRE)
        if hub:
            c.circle(x, y, r * 0.45, _METAL)


def _car(c, rng, w, h):
    roof = rng.uniform(0.25, 0.4)                       # sedan .. hatchback
    c.poly([(0, 0.45 * h), (0.22 * w, 0.42 * h), (0.32 * w, 0.05 * h), ((0.72 + roof * 0.3) * w, 0.05 * h),
            (0.86 * w, 0.4 * h), (w, 0.5 * h), (w, 0.82 * h), (0, 0.82 * h)])
    c.poly([(0.36 * w, 0.14 * h), (0.55 * w, 0.14 * h), (0.55 * w, 0.4 * h), (0.27 * w, 0.4 * h)], _GLASS)
    c.poly([(0.59 * w, 0.14 * h), ((0.68 + roof * 0.3) * w, 0.14 * h), (0.8 * w, 0.4 * h), (0.59 * w, 0.4 * h)],
           _GLASS)
    _wheels(c, (0.2 * w, 0.8 * w), 0.8 * h, 0.2 * h)


def _van(c, rng, w, h):
    c.poly([(0, 0.02 * h), (0.72 * w, 0.02 * h), (0.9 * w, 0.3 * h), (w, 0.45 * h), (w, 0.85 * h),
            (0, 0.85 * h)])
    c.poly([(0.74 * w, 0.1 * h), (0.86 * w, 0.32 * h), (0.74 * w, 0.32 * h)], _GLASS)
    if rng.random() < 0.6:
        c.rect(0.08 * w, 0.1 * h, 0.3 * w, 0.3 * h, _GLASS)
    c.line((0.5 * w, 0.08 * h), (0.5 * w, 0.8 * h), 0.02 * h + 1, _DARK)  # sliding-door seam
    _wheels(c, (0.18 * w, 0.82 * w), 0.84 * h, 0.15 * h)


def _truck(c, rng, w, h):
    c.rect(0, 0, 0.7 * w, 0.78 * h)                      # cargo box, painted
    c.poly([(0.73 * w, 0.25 * h), (0.9 * w, 0.25 * h), (w, 0.5 * h), (w, 0.85 * h), (0.73 * w, 0.85 * h)],
           tuple(rng.uniform(60, 220, 3)))
    c.poly([(0.78 * w, 0.3 * h), (0.88 * w, 0.3 * h), (0.95 * w, 0.5 * h), (0.78 * w, 0.5 * h)], _GLASS)
    c.rect(0, 0.78 * h, w, 0.86 * h, _DARK)
    _wheels(c, (0.14 * w, 0.3 * w, 0.86 * w), 0.88 * h, 0.12 * h)


def _bus(c, rng, w, h):
    c.rect(0, 0.02 * h, w, 0.86 * h)
    n = int(rng.integers(5, 8))
    for i in range(n):
        x = (0.04 + 0.9 * i / n) * w
        c.rect(x, 0.14 * h, x + 0.7 * 0.9 * w / n, 0.45 * h, _GLASS)
    c.rect(0.93 * w, 0.12 * h, w, 0.6 * h, _GLASS)
    c.line((0, 0.58 * h), (w, 0.58 * h), 0.03 * h + 1, tuple(rng.uniform(200, 255, 3)))
    _wheels(c, (0.15 * w, 0.82 * w), 0.88 * h, 0.11 * h)


def _rider(c, x, top, h, helmet: bool):
    c.circle(x, top + 0.09 * h, 0.08 * h, _DARK if helmet else _SKIN)
    c.line((x, top + 0.18 * h), (x - 0.05 * h, top + 0.5 * h), 0.12 * h)   # torso, painted (clothes)


def _bike(c, rng, w, h):
    r = 0.2 * h
    for x in (r + 1, w - r - 1):  # thin rings, not the motorbike's thick discs
        c.circle(x, h - r - 1, r, _TYRE, thickness=max(1, round(0.15 * r)))
    frame = (30, 30, 30)
    y = h - r - 1
    for a, b in (((r, y), (0.45 * w, y)), ((0.45 * w, y), (0.35 * w, 0.45 * h)), ((0.35 * w, 0.45 * h), (w - r, y)),
                 ((w - r, y), (0.75 * w, 0.42 * h))):
        c.line(a, b, 0.025 * h + 1, frame)
    _rider(c, 0.45 * w, 0.0, h, helmet=False)
    c.line((0.42 * w, 0.5 * h), (0.47 * w, y), 0.05 * h + 1)


def _motorbike(c, rng, w, h):
    r = 0.22 * h
    _wheels(c, (r + 1, w - r - 1), h - r - 1, r)
    c.ellipse(0.5 * w, 0.6 * h, 0.28 * w, 0.14 * h)                    # tank and body
    c.rect(0.35 * w, 0.62 * h, 0.62 * w, 0.8 * h, _METAL)               # engine block
    c.line((0.82 * w, 0.3 * h), (w - r, h - r), 0.05 * h + 1, _DARK)    # fork
    _rider(c, 0.42 * w, 0.0, h, helmet=True)


def _person(c, rng, w, h):
    cx = 0.5 * w
    stride = rng.uniform(0.0, 0.35) * w
    c.circle(cx, 0.07 * h, 0.065 * h, _SKIN)
    c.poly([(cx - 0.3 * w, 0.15 * h), (cx + 0.3 * w, 0.15 * h), (cx + 0.26 * w, 0.55 * h), (cx - 0.26 * w, 0.55 * h)])
    trousers = tuple(rng.uniform(30, 110, 3))
    c.line((cx - 0.12 * w, 0.55 * h), (cx - stride, h - 2), 0.22 * w, trousers)
    c.line((cx + 0.12 * w, 0.55 * h), (cx + stride, h - 2), 0.22 * w, trousers)


def _dog(c, rng, w, h):
    c.ellipse(0.45 * w, 0.45 * h, 0.33 * w, 0.2 * h)
    c.circle(0.82 * w, 0.28 * h, 0.17 * h)
    c.poly([(0.86 * w, 0.2 * h), (w, 0.3 * h), (0.86 * w, 0.4 * h)])
    for x in (0.2, 0.3, 0.6, 0.7):
        c.line((x * w, 0.55 * h), (x * w, h - 2), 0.06 * w + 1)
    c.line((0.12 * w, 0.4 * h), (0.0, 0.15 * h), 0.04 * w + 1)


def _cart(c, rng, w, h):  # a shopping cart: wire basket (drawn as a grid), handle, small casters
    wire = (170, 170, 175)
    for i in range(6):
        x = 0.1 * w + i * 0.14 * w
        c.line((x, 0.15 * h), (x + 0.05 * w, 0.7 * h), 0.02 * w + 1, wire)
    for y in (0.15, 0.42, 0.7):
        c.line((0.08 * w, y * h), (0.9 * w, y * h), 0.03 * h + 1)
    c.line((0.0, 0.05 * h), (0.1 * w, 0.15 * h), 0.04 * h + 1, _DARK)
    c.line((0.15 * w, 0.7 * h), (0.2 * w, 0.88 * h), 0.03 * h + 1, wire)
    c.line((0.85 * w, 0.7 * h), (0.8 * w, 0.88 * h), 0.03 * h + 1, wire)
    _wheels(c, (0.2 * w, 0.8 * w), 0.9 * h, 0.09 * h, hub=False)


def _scooter(c, rng, w, h):  # a kick scooter and its standing rider
    c.rect(0.15 * w, 0.9 * h, 0.8 * w, 0.94 * h, _DARK)
    c.line((0.82 * w, 0.93 * h), (0.75 * w, 0.2 * h), 0.05 * w + 1, _METAL)
    c.line((0.62 * w, 0.2 * h), (0.88 * w, 0.2 * h), 0.04 * w + 1, _DARK)
    _wheels(c, (0.12 * w, 0.85 * w), 0.95 * h, 0.05 * h, hub=False)
    c.circle(0.45 * w, 0.07 * h, 0.065 * h, _SKIN)
    c.poly([(0.3 * w, 0.15 * h), (0.6 * w, 0.15 * h), (0.58 * w, 0.55 * h), (0.32 * w, 0.55 * h)])
    c.line((0.4 * w, 0.55 * h), (0.42 * w, 0.9 * h), 0.1 * w + 1, _DARK)
    c.line((0.55 * w, 0.3 * h), (0.72 * w, 0.22 * h), 0.05 * w + 1, _SKIN)


def _trailer(c, rng, w, h):  # a truck's box without a cab: drawbar in front, one axle
    c.rect(0.0, 0.0, 0.85 * w, 0.75 * h)
    c.line((0.85 * w, 0.7 * h), (w, 0.8 * h), 0.04 * h + 1, _DARK)
    c.rect(0.0, 0.75 * h, 0.85 * w, 0.82 * h, _DARK)
    _wheels(c, (0.45 * w, 0.6 * w), 0.86 * h, 0.13 * h)


def _forklift(c, rng, w, h):
    c.rect(0.05 * w, 0.45 * h, 0.7 * w, 0.85 * h)                         # body, painted
    for x in (0.1, 0.6):                                                     # overhead guard
        c.line((x * w, 0.45 * h), (x * w, 0.05 * h), 0.04 * w + 1, _DARK)
    c.line((0.1 * w, 0.05 * h), (0.6 * w, 0.05 * h), 0.04 * w + 1, _DARK)
    c.rect(0.74 * w, 0.0, 0.8 * w, 0.9 * h, _METAL)                         # mast
    lift = rng.uniform(0.55, 0.9)
    c.rect(0.8 * w, lift * h, w, (lift + 0.05) * h, _METAL)               # forks
    _wheels(c, (0.2 * w, 0.58 * w), 0.85 * h, 0.14 * h)


DRAW = {"car": _car, "van": _van, "truck": _truck, "bus": _bus, "bike": _bike, "motorbike": _motorbike,
        "person": _person, "dog": _dog, "cart": _cart, "scooter": _scooter, "trailer": _trailer,
        "forklift": _forklift}


@lru_cache(maxsize=4)
def sprites(classes: tuple[str, ...], aspects: tuple[float, ...]) -> tuple[tuple[tuple[np.ndarray, ...], ...], np.ndarray]:
    """-> (mips[class][variant] = (level0, level1, ...) of (h, w, 5) float32, aspect (C, V) float64).

    Same for every world (fixed seed): a sprite's aspect ratio is part of the ground truth, and truth()
    must not need to draw. Level k of a mip chain is level 0 halved k times, for clean downscaling."""
    rng = np.random.default_rng(20260101)
    out, aspect = [], np.zeros((len(classes), N_VARIANTS))
    for ci, (name, asp) in enumerate(zip(classes, aspects)):
        row = []
        for v in range(N_VARIANTS):
            w = int(round(CANON * asp * rng.uniform(0.92, 1.08)))
            pad = CANON // 4
            c = _Canvas(w + 2 * pad, CANON + 2 * pad)
            inner = _Canvas(w, CANON)
            DRAW[name](inner, rng, w, CANON)
            for layer, src in ((c.base, inner.base), (c.paint, inner.paint), (c.alpha, inner.alpha)):
                layer[pad:pad + CANON, pad:pad + w] = src
            # Per-variant pose: a small tilt and shear (the view is never quite square-on).
            angle, shear = rng.uniform(-4, 4), rng.uniform(-0.08, 0.08)
            m = cv2.getRotationMatrix2D((c.w / 2, c.h / 2), angle, 1.0)
            m[0, 1] += shear
            m[0, 2] -= shear * c.h / 2
            stack = np.dstack([c.base * c.alpha[..., None], c.paint * c.alpha, c.alpha])
            stack = cv2.warpAffine(stack, m, (c.w, c.h), flags=cv2.INTER_LINEAR)
            ys, xs = np.nonzero(stack[..., 4] > 0.05)
            stack = np.ascontiguousarray(stack[ys.min():ys.max() + 1, xs.min():xs.max() + 1])
            aspect[ci, v] = stack.shape[1] / stack.shape[0]
            mips = [stack]
            while mips[-1].shape[0] > 8:
                mips.append(cv2.resize(mips[-1], (max(1, mips[-1].shape[1] // 2), max(1, mips[-1].shape[0] // 2)),
                                       interpolation=cv2.INTER_AREA if mips[-1].shape[2] <= 4 else cv2.INTER_LINEAR))
            row.append(tuple(mips))
        out.append(tuple(row))
    return tuple(out), aspect


# ---- cameras' fixed views ------------------------------------------------------------------------

def background(cam, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 BGR: the camera's fixed view: a crop of a photo above the horizon, a ground plane
    with a road band, lane marks and lamp posts below and across it."""
    w, h = size
    rng = np.random.default_rng([cam.seed, cam.key, 11])
    photos = _photos()
    photo = photos[cam.key % len(photos)]
    ph, pw = photo.shape[:2]
    cw = int(rng.integers(pw // 3, pw + 1))
    ch = min(ph, int(cw * h / w))
    y0, x0 = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    img = cv2.resize(photo[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    mean = img.mean(axis=(0, 1), keepdims=True)
    img = mean + rng.uniform(0.5, 0.8) * (img - mean)

    hz = int(cam.horizon * h)
    ground = np.asarray(rng.uniform(70, 140, 3), np.float32) * np.linspace(0.8, 1.1, h - hz, dtype=np.float32)[:, None, None]
    img[hz:] = 0.35 * img[hz:] + 0.65 * ground
    rt, rb = int(cam.road_top * h), int(cam.road_bottom * h)
    asphalt = float(rng.uniform(55, 85))
    img[rt:rb] = 0.15 * img[rt:rb] + 0.85 * np.float32(asphalt)
    mid = (rt + rb) // 2
    dash = int(rng.integers(12, 30))
    for x in range(int(rng.integers(0, dash)), w, 2 * dash):
        cv2.line(img, (x, mid), (x + dash, mid), (200, 200, 200), max(1, (rb - rt) // 40))
    cv2.line(img, (0, rt), (w, rt), (150, 150, 150), 1)
    for (lx, ly) in cam.lamps:                                   # lamp posts: their heads glow at night
        px, py = int(lx * w), int(ly * h)
        cv2.line(img, (px, py), (px, rt), (40, 40, 45), max(1, w // 160))
        cv2.circle(img, (px, py), max(2, w // 100), (200, 210, 210), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def lamp_glow(cam, size: tuple[int, int], color) -> np.ndarray:
    """(H, W, 3) float32 additive glow of the camera's lamps (and the pools of light they cast)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    glow = np.zeros((h, w), np.float32)
    for (lx, ly) in cam.lamps:
        for cy, sigma, amp in ((ly * h, 0.02 * w, 170.0), (cam.road_top * h + 0.1 * h, 0.1 * w, 30.0)):
            glow += amp * np.exp(-((yy - cy) ** 2 + (xx - lx * w) ** 2) / np.float32(2 * sigma * sigma))
    return glow[..., None] * np.asarray(color, np.float32)


@lru_cache(maxsize=4)
def noise_field(size: tuple[int, int]) -> np.ndarray:
    """(2, H + pad, W + pad, 3) float32 standard normals: each frame reads a window of one."""
    w, h = size
    rng = np.random.default_rng(7)
    return rng.standard_normal((2, h + NOISE_PAD, w + NOISE_PAD, 3), dtype=np.float32)


@lru_cache(maxsize=4)
def rain_masks(size: tuple[int, int]) -> np.ndarray:
    """(4, H, W) float32 slanted streaks in 0..1."""
    w, h = size
    rng = np.random.default_rng(8)
    masks = np.zeros((4, h, w), np.float32)
    for m in masks:
        slant = rng.uniform(-0.3, 0.3)
        for _ in range(w * h // 1500):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            length = rng.uniform(0.03, 0.08) * h
            cv2.line(m, (int(x), int(y)), (int(x + slant * length), int(y + length)), float(rng.uniform(0.4, 1.0)), 1)
    return masks


# ---- one frame ----------------------------------------------------------------------------------

LIGHT = {  # gain, tint (B, G, R), black level, noise sigma
    "day": (1.0, (1.0, 1.0, 1.0), 0.0, 2.0),
    "night": (0.2, (1.2, 0.95, 0.75), 8.0, 6.0),
}


def render(bg: np.ndarray, objs: dict, light: dict, glow: np.ndarray | None, frame_hash: int,
           warp: np.ndarray | None, white_balance) -> np.ndarray:
    """Compose one frame. Physics order: scene (background, objects far to near) -> atmosphere ->
    light -> lamps and headlights -> sensor (white balance, noise) -> a knocked camera's warp.

    objs: arrays from ScenesWorld._objects (all live objects, depth-sorted, including hidden ones).
    light: {"gain", "tint", "black", "sigma", "fog", "rain", "headlights"}."""
    h, w = bg.shape[:2]
    img = bg.astype(np.float32)
    for i in range(len(objs["cls"])):
        _composite(img, objs, i)
    if light["fog"] > 0:
        f = np.float32(light["fog"])
        img *= 1 - f
        img += f * np.float32(180.0)
    if light["rain"] > 0:
        masks = rain_masks((w, h))
        img += np.float32(light["rain"]) * masks[frame_hash % len(masks)][..., None]
    img *= np.asarray(light["tint"], np.float32) * np.float32(light["gain"])
    img += np.float32(light["black"])
    if glow is not None:
        img += glow * np.float32(light["lamps"])
    if light["headlights"] > 0:
        _headlights(img, objs, light["headlights"])
    if white_balance is not None:
        img *= np.asarray(white_balance, np.float32)
    field = noise_field((w, h))
    oy, ox = (frame_hash >> 8) % NOISE_PAD, (frame_hash >> 16) % NOISE_PAD
    img += np.float32(light["sigma"]) * field[(frame_hash >> 24) & 1, oy:oy + h, ox:ox + w]
    np.clip(img, 0, 255, out=img)
    out = img.astype(np.uint8)
    if warp is not None:
        out = cv2.warpAffine(out, warp, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out


def _composite(img: np.ndarray, objs: dict, i: int) -> None:
    h, w = img.shape[:2]
    x1f, y1f, x2f, y2f = objs["box"][i]
    bw, bh = int(round(x2f - x1f)), int(round(y2f - y1f))
    if bw < 1 or bh < 1:
        return
    x1, y1 = int(round(x1f)), int(round(y1f))
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x1 + bw, w), min(y1 + bh, h)
    if cx1 >= cx2 or cy1 >= cy2:
        return
    mips = objs["mips"][i]
    level = 0
    while level + 1 < len(mips) and mips[level + 1].shape[0] >= bh:
        level += 1
    tpl = mips[level]
    if objs["flip"][i]:
        tpl = tpl[:, ::-1]
    patch = cv2.resize(tpl, (bw, bh), interpolation=cv2.INTER_LINEAR)
    blur = int(objs["blur"][i])
    if blur >= 2:  # motion blur along the (horizontal-ish) motion, within the box
        patch = cv2.blur(patch, (min(blur, bw), 1))
    patch = patch[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
    color = patch[..., :3] + patch[..., 3:4] * objs["color"][i]
    region = img[cy1:cy2, cx1:cx2]
    region *= 1.0 - patch[..., 4:5]
    region += color


def _headlights(img: np.ndarray, objs: dict, strength: float) -> None:
    """Vehicles light up at dusk and night: white in front, red behind (after the scene is dimmed)."""
    for i in np.flatnonzero(objs["vehicle"]):
        x1, y1, x2, y2 = objs["box"][i]
        bh = y2 - y1
        r = max(1, int(round(0.06 * bh)))
        y = int(round(y1 + 0.62 * bh))
        front, back = (x2 - r, x1 + r) if not objs["flip"][i] else (x1 + r, x2 - r)
        cv2.circle(img, (int(front), y), r, (230 * strength, 240 * strength, 250 * strength), -1)
        cv2.circle(img, (int(back), y), r, (20 * strength, 20 * strength, 200 * strength), -1)
