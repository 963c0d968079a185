"""The scenes world: what a fleet of fixed cameras sees as video, with boxes for a detector.

Each camera looks at a street or a depot: a crop of a photo bundled with scikit-image above the
horizon, a ground plane with a road below it, lamp posts. Objects of twelve classes (CLASSES) enter
from an edge, cross, some stop (parked for minutes), and leave; nearer ones (lower in the frame) are
larger, hide farther ones and are drawn over them; fast ones are motion-blurred. Lighting runs
through day / dusk / night every `day_seconds` of world time (night: dark, noisy, lamps and
headlights), weather comes in spells (clear / rain / fog), and the sensor adds modest noise.

Determinism: a frame is a pure function of (seed, camera, frame index). World time is
t = index / fps; objects come from spawn events, one possible per camera per world second, decided
by a splitmix64 hash of (seed, camera, second), and a frame looks back over the longest lifetime
(LOOKBACK seconds) to find the objects alive at t. Two processes, or two fps, see the same world.

Ground truth (`truth()`, also carried by `frame()`): the box of every object at least MIN_VISIBLE
visible (share of its box inside the frame and not behind a nearer object's box) and at least
MIN_BOX pixels wide and high, clipped to the frame. Less visible or smaller objects are still drawn
but left out of the boxes.

The long tail: `car` is the head class (> 30 % of instances); scooter, cart, trailer and forklift
are each under 2 %; cart is seen only at street sites (even site numbers), trailer and forklift only
at depots (odd ones). Look-alike pairs: car/van, bike/motorbike, truck/trailer.

Drift: `ScenesWorld(drift={"cam-003": ("sodium", 300.0)})` changes camera cam-003 from world second
300 on, and nothing else:

    sodium   orange low-pressure sodium lamps at night (the lighting tag then says "sodium")
    knocked  the camera was knocked: its view is shifted and rotated (boxes follow)
    sensor   a replaced sensor with another white balance
"""

from __future__ import annotations

import bisect
import math
import re
import zlib
from dataclasses import dataclass

import numpy as np

from . import scenes_render as rnd
from .scenes_data import DetectionDataset, sample
from .world import SIM_EPOCH, WEATHER

__all__ = ["ScenesWorld", "SceneFrame", "DetectionDataset", "CLASSES", "LIGHTINGS", "DRIFT_KINDS"]

LIGHTINGS = ("day", "dusk", "night")
DRIFT_KINDS = ("sodium", "knocked", "sensor")

# name: (height at the bottom row as a share of frame height, aspect w/h, speed range in frame widths
#        a second, walks (sidewalks, crossings) rather than drives, P(park for minutes), P(short stop))
CLASS_SPEC = {
    "car":       (0.20, 2.1, (0.08, 0.30), False, 0.22, 0.10),
    "van":       (0.27, 1.8, (0.07, 0.22), False, 0.22, 0.10),
    "truck":     (0.38, 2.4, (0.05, 0.15), False, 0.12, 0.15),
    "bus":       (0.42, 2.9, (0.05, 0.14), False, 0.00, 0.40),
    "bike":      (0.22, 1.35, (0.04, 0.10), False, 0.05, 0.05),
    "motorbike": (0.24, 1.5, (0.12, 0.35), False, 0.10, 0.05),
    "person":    (0.33, 0.4, (0.015, 0.04), True, 0.02, 0.20),
    "dog":       (0.10, 1.5, (0.03, 0.08), True, 0.00, 0.20),
    "cart":      (0.14, 1.2, (0.015, 0.04), True, 0.30, 0.10),
    "scooter":   (0.30, 0.75, (0.06, 0.15), True, 0.00, 0.10),
    "trailer":   (0.24, 2.3, (0.06, 0.15), False, 0.40, 0.10),
    "forklift":  (0.26, 1.3, (0.03, 0.08), False, 0.20, 0.50),
}
CLASSES = tuple(CLASS_SPEC)
VEHICLES = ("car", "van", "truck", "bus", "motorbike", "forklift")
# Relative frequency of each class at the two kinds of site (street: even site numbers, depot: odd).
SITE_MIX = {
    "street": (40, 11, 4, 4, 10, 6, 20, 3, 2.0, 1.5, 0, 0),
    "depot":  (34, 15, 14, 2, 5, 5, 13, 1, 0, 1.0, 2.6, 3.0),
}
PARK_SECONDS = (60.0, 300.0)
STOP_SECONDS = (5.0, 30.0)
MIN_SPEED = 0.015           # frame widths a second, after perspective
PATH_XMARGIN = 0.45         # paths start and end this far outside the frame (widths)
LOOKBACK = int(math.ceil((1 + 2 * PATH_XMARGIN) * 1.1 / MIN_SPEED + PARK_SECONDS[1])) + 2
SPAWN_RATE = {"day": 0.14, "dusk": 0.08, "night": 0.012}   # spawns a second, before the camera's busyness
DAY_SHARES = (0.5, 0.1, 0.3, 0.1)                          # day, dusk, night, dawn (tagged dusk)
BLOCK = 64                  # world seconds of spawn events computed (and cached) together
WEATHER_SECONDS = 120.0
WEATHER_P = (0.6, 0.2, 0.2)
_DAY_BOUNDS = tuple(float(x) for x in np.cumsum(DAY_SHARES)[:3])
MIN_VISIBLE = 0.3
MIN_BOX = 4.0
GOLDEN_T0 = 10_000_000.0    # golden frames come from world time after this: no run gets there (115 days)
_GRID = 6                   # visibility is sampled on a GRID x GRID lattice of each box
_GX, _GY = (g.ravel() for g in np.meshgrid((np.arange(_GRID) + 0.5) / _GRID, (np.arange(_GRID) + 0.5) / _GRID))

_M64 = (1 << 64) - 1


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64 (wraps on purpose)."""
    x = np.atleast_1d(x)  # numpy warns on scalar overflow, not on arrays'
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _hash(*keys) -> np.ndarray:
    h = np.array([0x9E3779B97F4A7C15], np.uint64)
    for k in keys:
        h = _mix(np.asarray(k, np.uint64) + h * np.uint64(0x9E3779B97F4A7C15))
    return h


def _uniform(h: np.ndarray, j: int) -> np.ndarray:
    """Field j of a hash as float64 in [0, 1)."""
    return (_mix(np.atleast_1d(h) + np.uint64(j * 0xD1B54A32D192ED03 & _M64)) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


@dataclass(frozen=True, eq=False)
class SceneFrame:
    """One frame and its ground truth (image None from `truth()`).

    image (H, W, 3) uint8 BGR; boxes (K, 4) float32 xyxy pixels clipped to the frame; classes (K,)
    int64 into ScenesWorld.classes; track_ids (K,) int64, unique per camera; visible (K,) float32 share
    of each object's box in view; tags {"lighting", "weather", "camera", "site", "frame"}."""

    camera_id: str
    index: int
    image: np.ndarray | None
    captured_at: float
    boxes: np.ndarray
    classes: np.ndarray
    track_ids: np.ndarray
    visible: np.ndarray
    tags: dict[str, str]


@dataclass(frozen=True, eq=False)
class Camera:
    """Fixed properties of one camera, derived from (seed, camera id)."""

    camera_id: str
    seed: int
    key: int
    site: str
    mix_cdf: np.ndarray      # (C,) cumulative class mix of its site
    phase: float             # seconds into the day cycle at t = 0
    horizon: float           # rows, as shares of the frame height
    road_top: float
    road_bottom: float
    busy: float              # traffic relative to the mean
    lamps: tuple[tuple[float, float], ...]
    drift: tuple[str, float] | None


class ScenesWorld:
    """The scenes world. Every output is a pure function of the constructor's arguments."""

    classes = CLASSES

    def __init__(self, seed: int = 0, fps: float = 5.0, size: tuple[int, int] = (320, 240),
                 day_seconds: float = 600.0, drift: dict[str, tuple[str, float]] | None = None,
                 sites: int = 2):
        """size: (width, height), 32x24 .. 1280x720. drift: {camera_id: (kind, start_seconds)}, kind one
        of DRIFT_KINDS. sites: how many sites the cameras spread over (by their number, modulo)."""
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if not 1.0 <= fps <= 30.0:
            raise ValueError(f"fps must be in 1..30, got {fps}")
        w, h = (int(v) for v in size)
        if not (32 <= w <= 1280 and 24 <= h <= 720):
            raise ValueError(f"size must be within 32x24 .. 1280x720, got {w}x{h}")
        if day_seconds < 60:
            raise ValueError(f"day_seconds must be >= 60, got {day_seconds}")
        if sites < 1:
            raise ValueError(f"sites must be >= 1, got {sites}")
        self.drift: dict[str, tuple[str, float]] = {}
        for cam_id, (kind, start) in (drift or {}).items():
            if kind not in DRIFT_KINDS or float(start) < 0:
                raise ValueError(f"drift[{cam_id!r}]: expected (one of {DRIFT_KINDS}, start_seconds >= 0), "
                                 f"got ({kind!r}, {start!r})")
            self.drift[cam_id] = (kind, float(start))
        self.seed, self.fps, self.size = int(seed), float(fps), (w, h)
        self.day_seconds, self.sites = float(day_seconds), int(sites)
        spec = CLASS_SPEC.values()
        self._height = np.array([s[0] for s in spec])
        self._speed = np.array([s[2] for s in spec])
        self._walks = np.array([s[3] for s in spec])
        self._park_p = np.array([s[4] for s in spec])
        self._stop_p = np.array([s[5] for s in spec])
        self._vehicle = np.array([c in VEHICLES for c in CLASSES])
        self._mips, self._aspect = rnd.sprites(CLASSES, tuple(s[1] for s in spec))
        self._cameras: dict[str, Camera] = {}
        self._views: dict[tuple[str, bool], tuple] = {}
        self._event_cache: dict[tuple[str, int], dict] = {}
        self._weather_cache: dict[tuple[str, int], str] = {}   # a pure function's memo: insertion-ordered

    # ---- cameras -------------------------------------------------------------------------------

    def camera_ids(self, n: int) -> list[str]:
        return [f"cam-{i:03d}" for i in range(n)]

    def site_of(self, camera_id: str) -> str:
        """site-{number % sites}, the camera's number being the digits its id ends with (else a hash)."""
        m = re.search(r"(\d+)$", camera_id)
        n = int(m.group(1)) if m else zlib.crc32(camera_id.encode())
        return f"site-{n % self.sites}"

    def camera(self, camera_id: str) -> Camera:
        cam = self._cameras.get(camera_id)
        if cam is None:
            key = zlib.crc32(camera_id.encode("utf-8"))
            h = _hash(self.seed, key, 0xCA)
            u = [_uniform(h, j)[0] for j in range(8)]
            site = self.site_of(camera_id)
            mix = np.asarray(SITE_MIX["street" if int(site.split("-")[1]) % 2 == 0 else "depot"], np.float64)
            hz = 0.28 + 0.14 * u[1]
            rt = hz + (0.12 + 0.1 * u[2]) * (1 - hz)
            rb = hz + (0.62 + 0.12 * u[3]) * (1 - hz)
            lamps = tuple((0.1 + 0.8 * _uniform(h, 10 + i)[0], hz - 0.12 - 0.1 * _uniform(h, 20 + i)[0])
                          for i in range(1 + int(u[4] * 3)))
            cam = Camera(camera_id, self.seed, key, site, np.cumsum(mix / mix.sum()), u[0] * self.day_seconds,
                         hz, rt, rb, 0.7 + 0.6 * u[5], lamps, self.drift.get(camera_id))
            self._cameras[camera_id] = cam
        return cam

    # ---- conditions ----------------------------------------------------------------------------

    def darkness(self, camera_id: str, t: float) -> float:
        """0 (day) .. 1 (night) at world time t, ramping through dusk and dawn."""
        ph = ((t + self.camera(camera_id).phase) % self.day_seconds) / self.day_seconds
        d, k, n = _DAY_BOUNDS
        if ph < d:
            return 0.0
        if ph < k:
            return (ph - d) / (k - d)
        return 1.0 if ph < n else 1.0 - (ph - n) / (1.0 - n)

    def lighting(self, camera_id: str, t: float) -> str:
        """"day", "dusk" or "night" at world time t (before any drift)."""
        ph = ((t + self.camera(camera_id).phase) % self.day_seconds) / self.day_seconds
        return LIGHTINGS[(0, 1, 2, 1)[bisect.bisect_right(_DAY_BOUNDS, ph)]]

    def _lighting_index(self, camera_id: str, t: np.ndarray) -> np.ndarray:
        """(N,) index into LIGHTINGS at world times t; the same boundaries as lighting()."""
        ph = np.mod(np.asarray(t, np.float64) + self.camera(camera_id).phase, self.day_seconds) / self.day_seconds
        return np.asarray([0, 1, 2, 1])[np.searchsorted(np.asarray(_DAY_BOUNDS), ph, side="right")]

    def weather(self, camera_id: str, t: float) -> str:
        """Weather at world time t: spells of WEATHER_SECONDS."""
        block = int(t // WEATHER_SECONDS)
        key = (camera_id, block)
        out = self._weather_cache.get(key)
        if out is None:
            u = _uniform(_hash(self.seed, self.camera(camera_id).key, block, 0xEA), 0)[0]
            out = WEATHER[int(np.searchsorted(np.cumsum(WEATHER_P), u, side="right"))]
            if len(self._weather_cache) >= 4096:
                self._weather_cache.clear()
            self._weather_cache[key] = out
        return out

    def _drifted(self, cam: Camera, kind: str, t: float) -> bool:
        return cam.drift is not None and cam.drift[0] == kind and t >= cam.drift[1]

    # ---- objects -------------------------------------------------------------------------------

    def _objects(self, cam: Camera, t: float) -> dict:
        """Every object alive at world time t, far to near, as arrays (hidden and tiny ones included)."""
        e = self._events(cam, int(t // BLOCK))
        age = t - e["t0"]
        t1, dwell, f_stop, speed, length = e["t1"], e["dwell"], e["f_stop"], e["speed"], e["length"]
        moving = (age < t1) | (age >= t1 + dwell)
        p = np.where(age < t1, age * speed / length,
                     np.where(age < t1 + dwell, f_stop, f_stop + (age - t1 - dwell) * speed / length))
        fy = e["y0"] + p * (e["y1"] - e["y0"])
        scale = (fy - cam.horizon) / (1 - cam.horizon)
        sel = np.flatnonzero((age >= 0) & (p <= 1.0) & (scale > 0.02))
        sel = sel[np.lexsort((e["track"][sel], fy[sel]))]       # far (small foot row) first: drawn first
        w, h = self.size
        p, fy, scale = p[sel], fy[sel], scale[sel]
        cx = (e["x0"][sel] + p * (e["x1"][sel] - e["x0"][sel])) * w
        bh = h * e["height"][sel] * scale
        bw = bh * e["aspect"][sel]
        foot = fy * h
        dark = self.darkness(cam.camera_id, t)
        exposure = min(1.0 / self.fps, 1 / 30 + dark * (1 / 8 - 1 / 30))
        return {"cls": e["cls"][sel], "track": e["track"][sel], "variant": e["variant"][sel],
                "box": np.stack([cx - bw / 2, foot - bh, cx + bw / 2, foot], axis=1),
                "flip": e["flip"][sel], "blur": np.where(moving[sel], e["xspeed"][sel] * w * exposure, 0.0),
                "color": e["color"][sel], "vehicle": e["vehicle"][sel]}

    def _events(self, cam: Camera, block: int) -> dict:
        """Static arrays of every spawn that can be alive during world-time block `block` (cached):
        spawn slots from LOOKBACK seconds before the block's start to its end."""
        key = (cam.camera_id, block)
        e = self._event_cache.get(key)
        if e is not None:
            return e
        k = np.arange(max(0, block * BLOCK - LOOKBACK), (block + 1) * BLOCK, dtype=np.int64)
        hk = _hash(self.seed, cam.key, k.astype(np.uint64))
        rate = np.asarray([SPAWN_RATE[x] for x in LIGHTINGS])[self._lighting_index(cam.camera_id, k)] * cam.busy
        keep = _uniform(hk, 0) < rate
        k, hk = k[keep], hk[keep]
        u = np.stack([_uniform(hk, j) for j in range(1, 16)]) if len(k) else np.zeros((15, 0))
        cls = np.minimum(np.searchsorted(cam.mix_cdf, u[1], side="right"), len(CLASSES) - 1)
        walks = self._walks[cls]
        rightward = u[2] < 0.5
        # Paths in normalised coordinates (x in widths, y = foot row in heights): along the road, or
        # the sidewalks; a third of walkers cross from the bottom edge towards the far side instead.
        hz, rt, rb = cam.horizon, cam.road_top, cam.road_bottom
        lane_y = np.where(u[3] < 0.12, 0.97 + 0.09 * u[4], rt + 0.03 + (rb - rt - 0.03) * u[4])
        walk_y = np.where(u[3] < 0.5, rb + 0.03 + (1.0 - rb) * u[4], hz + 0.04 + (rt - hz - 0.04) * u[4])
        crossing = walks & (u[5] < 0.35)
        y0 = np.where(walks, walk_y, lane_y)
        y1 = y0 + 0.06 * (u[6] - 0.5)
        x0 = np.where(rightward, -PATH_XMARGIN, 1 + PATH_XMARGIN)
        x1 = 1.0 - x0
        y0 = np.where(crossing, 1.35, y0)
        y1 = np.where(crossing, rt - 0.01, y1)
        x0 = np.where(crossing, 0.1 + 0.8 * u[6], x0)
        x1 = np.where(crossing, x0 + 0.4 * (u[2] - 0.5), x1)
        length = np.hypot(x1 - x0, 0.75 * (y1 - y0))
        lo, hi = self._speed[cls, 0], self._speed[cls, 1]
        s_mid = np.clip(((y0 + y1) / 2 - hz) / (1 - hz), 0.0, 1.2)
        speed = np.maximum((lo + (hi - lo) * u[7]) * np.maximum(s_mid, 0.4), MIN_SPEED)  # far ones crawl
        # Parking happens by day and ends with it (the lot empties at dusk): nights are quiet, often empty.
        t0 = k + u[0]
        day_left = _DAY_BOUNDS[0] * self.day_seconds - np.mod(t0 + cam.phase, self.day_seconds)
        parks = (u[8] < self._park_p[cls]) & (day_left >= PARK_SECONDS[0] + 30)
        stops = ~parks & (u[8] < self._park_p[cls] + self._stop_p[cls])
        dwell = np.where(parks, np.minimum(PARK_SECONDS[0] + (PARK_SECONDS[1] - PARK_SECONDS[0]) * u[9], day_left),
                         np.where(stops, STOP_SECONDS[0] + (STOP_SECONDS[1] - STOP_SECONDS[0]) * u[9], 0.0))
        f_stop = 0.3 + 0.4 * u[10]
        variant = (hk >> np.uint64(3)).astype(np.int64) % rnd.N_VARIANTS
        e = {"track": k, "t0": t0, "cls": cls, "x0": x0, "x1": x1, "y0": y0, "y1": y1, "length": length,
             "speed": speed, "dwell": dwell, "f_stop": f_stop, "t1": f_stop * length / speed, "variant": variant,
             "height": self._height[cls] * (0.85 + 0.3 * u[11]), "aspect": self._aspect[cls, variant],
             "flip": x1 < x0, "xspeed": speed * np.abs(x1 - x0) / length, "vehicle": self._vehicle[cls],
             "color": (np.stack([u[12], u[13], u[14]], axis=1) * 200 + 30).astype(np.float32)}
        if len(self._event_cache) >= 256:
            self._event_cache.pop(next(iter(self._event_cache)))
        self._event_cache[key] = e
        return e

    def _visible(self, cam: Camera, box: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(K,) share of each box in view (not behind a nearer box, inside the frame) and the (K, 4)
        boxes as the camera sees them (after a knocked camera's warp), clipped to the frame."""
        w, h = self.size
        px = box[:, None, 0] + _GX * (box[:, None, 2] - box[:, None, 0])     # (K, P)
        py = box[:, None, 1] + _GY * (box[:, None, 3] - box[:, None, 1])
        inside = ((px[..., None] >= box[:, 0]) & (px[..., None] <= box[:, 2]) &
                  (py[..., None] >= box[:, 1]) & (py[..., None] <= box[:, 3]))          # (K, P, K)
        nearer = np.arange(len(box))[None, :] > np.arange(len(box))[:, None]          # drawn later
        covered = (inside & nearer[:, None, :]).any(axis=2)
        warp = self._warp(cam) if self._drifted(cam, "knocked", t) else None
        corners = box[:, [[0, 1], [2, 1], [0, 3], [2, 3]]]                            # (K, 4, 2)
        if warp is not None:
            px, py = (warp[0, 0] * px + warp[0, 1] * py + warp[0, 2], warp[1, 0] * px + warp[1, 1] * py + warp[1, 2])
            corners = corners @ warp[:, :2].T + warp[:, 2]
        in_frame = (px >= 0) & (px < w) & (py >= 0) & (py < h)
        visible = (in_frame & ~covered).mean(axis=1) if len(box) else np.zeros(0)
        seen = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1) if len(box) else box
        return visible, np.clip(seen, 0, [w, h, w, h])

    def _warp(self, cam: Camera) -> np.ndarray:
        """2x3 affine of a knocked camera: a few degrees of roll and a shift."""
        w, h = self.size
        hh = _hash(self.seed, cam.key, 0xB0)
        angle = (3 + 4 * _uniform(hh, 0)[0]) * (1 if _uniform(hh, 1)[0] < 0.5 else -1)
        m = np.array([[1.0, 0, 0], [0, 1.0, 0]])
        a = math.radians(angle)
        m[:, :2] = [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]
        c = np.array([w / 2, h / 2])
        m[:, 2] = c - m[:, :2] @ c + np.array([0.06 * w, 0.08 * h]) * (2 * _uniform(hh, 2)[0] - 1)
        return m

    # ---- frames --------------------------------------------------------------------------------

    def truth(self, camera_id: str, index: int) -> SceneFrame:
        """The ground truth of a frame, without drawing it (image None)."""
        return self._frame(camera_id, index, render=False)

    def frame(self, camera_id: str, index: int) -> SceneFrame:
        return self._frame(camera_id, index, render=True)

    def _frame(self, camera_id: str, index: int, render: bool) -> SceneFrame:
        if index < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        cam = self.camera(camera_id)
        t = index / self.fps
        objs = self._objects(cam, t)
        visible, seen = self._visible(cam, objs["box"], t)
        bw, bh = seen[:, 2] - seen[:, 0], seen[:, 3] - seen[:, 1]
        keep = (visible >= MIN_VISIBLE) & (bw >= MIN_BOX) & (bh >= MIN_BOX)
        lighting = self.lighting(camera_id, t)
        if lighting == "night" and self._drifted(cam, "sodium", t):
            lighting = "sodium"
        weather = self.weather(camera_id, t)
        image = self._render(cam, t, index, objs, lighting, weather) if render else None
        return SceneFrame(camera_id, int(index), image, SIM_EPOCH + index / self.fps,
                          seen[keep].astype(np.float32), objs["cls"][keep].astype(np.int64),
                          objs["track"][keep].astype(np.int64), visible[keep].astype(np.float32),
                          {"lighting": lighting, "weather": weather, "camera": camera_id, "site": cam.site,
                           "frame": str(int(index))})

    def _render(self, cam: Camera, t: float, index: int, objs: dict, lighting: str, weather: str) -> np.ndarray:
        sodium = lighting == "sodium"
        bg, glow = self._view(cam, sodium)
        d = self.darkness(cam.camera_id, t)
        day_g, day_tint, day_black, day_sigma = rnd.LIGHT["day"]
        n_g, n_tint, n_black, n_sigma = rnd.LIGHT["night"]
        if sodium:  # 589 nm: red and some green, next to no blue
            n_g, n_tint = 0.3, (0.1, 0.6, 1.0)
        light = {"gain": day_g + d * (n_g - day_g), "tint": [a + d * (b - a) for a, b in zip(day_tint, n_tint)],
                 "black": day_black + d * (n_black - day_black), "sigma": day_sigma + d * (n_sigma - day_sigma),
                 "fog": 0.45 if weather == "fog" else 0.0, "rain": 70.0 if weather == "rain" else 0.0,
                 "lamps": float(np.clip((d - 0.3) / 0.4, 0, 1)), "headlights": float(np.clip((d - 0.2) / 0.5, 0, 1))}
        if weather == "rain":
            light["sigma"] += 2.0
        fh = int(_hash(self.seed, cam.key, index, 0xF0)[0])
        warp = self._warp(cam) if self._drifted(cam, "knocked", t) else None
        wb = (1.3, 1.0, 0.72) if self._drifted(cam, "sensor", t) else None
        objs = {**objs, "mips": [self._mips[c][v] for c, v in zip(objs["cls"], objs["variant"])]}
        return rnd.render(bg, objs, light, glow, fh, warp, wb)

    def _view(self, cam: Camera, sodium: bool) -> tuple[np.ndarray, np.ndarray]:
        """(background, lamp glow) of a camera, cached for a bounded number of cameras."""
        key = (cam.camera_id, sodium)
        view = self._views.get(key)
        if view is None:
            if len(self._views) >= 64:
                self._views.pop(next(iter(self._views)))
            color = (0.1, 0.55, 1.0) if sodium else (0.85, 0.95, 1.0)
            view = (rnd.background(cam, self.size), rnd.lamp_glow(cam, self.size, color))
            self._views[key] = view
        return view

    # ---- data sets ----------------------------------------------------------------------------

    def golden_set(self, per_condition: int = 100, cameras: int = 8) -> DetectionDataset:
        """Frames of cameras cam-000.. (both sites) from held-out world time (after GOLDEN_T0, which no
        run reaches), `per_condition` for each of day / dusk / night. Each frame is the one of a few
        candidates that best covers the classes seen least so far; about one in ten is an empty frame."""
        return sample(self, LIGHTINGS, per_condition * len(LIGHTINGS), self.camera_ids(cameras), GOLDEN_T0,
                      0x601D, balance=True)

    def seed_set(self, n: int = 300, conditions=("day", "dusk"), cameras: int = 16) -> DetectionDataset:
        """n frames from many cameras and far-apart times of the first 30 sim days, lit by `conditions`
        only (no night by default: the fleet has to find night data itself)."""
        bad = set(conditions) - set(LIGHTINGS)
        if bad or not conditions:
            raise ValueError(f"conditions must be a non-empty subset of {LIGHTINGS}, got {conditions}")
        return sample(self, tuple(conditions), n, self.camera_ids(cameras), 0.0, 0x5EED, balance=False)
