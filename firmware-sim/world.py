"""A deterministic simulated world: handwritten digits seen by a fleet of cameras.

Real 8x8 digits (scikit-learn's bundled `load_digits`, 1797 instances) are drawn as ink over
crops of real photos bundled with scikit-image, then degraded by lighting (day / dusk / night),
weather (clear / rain / fog), blur and sensor noise. Every frame carries its ground truth.

Everything is a pure function of (world seed, camera id, frame index): each frame gets its own
random streams, so frames can be produced in any order, in any process, and still agree.
Nothing is downloaded: both data sources ship inside the installed packages.

Drift: `World(seed, drift={"cam-007": ("sodium", 500)})` relights camera cam-007's night frames,
from frame 500 on, with a condition of DRIFT_CONDITIONS (the city put up new street lights there):

    sodium  low-pressure sodium lamps: near-monochromatic orange light, so the blue channel holds
            little but sensor noise, plus a saturated bloom from a lamp in or near the view.

Only those frames change, and only their lighting (tag "lighting" says "sodium"); everything else,
including every output of a World built without `drift`, is identical to the undrifted world.
ClassifierNet standardises each channel of each image, so a tint or gain alone would be invisible to it;
the noise-only blue channel and the bloom are what move its embeddings and lower its confidence.
"""

from __future__ import annotations

import importlib.util
import math
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

CONDITIONS = ("day", "dusk", "night")
DRIFT_CONDITIONS = ("sodium",)  # never in golden_set / seed_set: only drift= brings them in
WEATHER = ("clear", "rain", "fog")

SIM_EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z; frame 0 of every camera is captured then
CAMERA_FPS = 1.0
DAY_LENGTH = 240             # frames per simulated day
DUSK_FRAMES = 24             # dusk before the night and again (dawn) after it: 2 x 10 % of a day
NIGHT_FRACTION = 0.30        # mean share of night; drifts by +-NIGHT_DRIFT over a season
NIGHT_DRIFT = 0.08
SEASON_DAYS = 16             # sim days per period of the night-length drift
WEATHER_BLOCK = 120          # frames per weather spell: weather changes slowly
WEATHER_P = (0.6, 0.2, 0.2)  # clear, rain, fog
_WEATHER_CDF = np.cumsum(WEATHER_P)

# Photos bundled in skimage/data (no pooch download needed); grey ones are made 3-channel.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins",
          "moon", "page", "text", "brick", "grass", "gravel")
N_BACKGROUNDS = 64
N_NOISE = 8

# Tags that separate the random streams derived from one seed, so they never collide.
_S_SPLIT, _S_BG, _S_NOISE, _S_RAIN, _S_CAMERA, _S_WEATHER = 1, 2, 3, 4, 5, 6
_S_LABEL, _S_RENDER, _S_GOLDEN, _S_SEED_SET = 7, 8, 9, 10


@dataclass(frozen=True, eq=False)  # eq=False: comparing frames field-wise would compare arrays
class Frame:
    """One camera frame and its ground truth.

    image: (S, S, 3) uint8 BGR. tags: {"lighting", "weather", "camera"}.
    """

    camera_id: str
    index: int
    image: np.ndarray
    label: int
    captured_at: float
    tags: dict[str, str]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled set of frames.

    images: (N, S, S, 3) uint8 BGR; labels: (N,) int64; slices: N lighting conditions.
    digits: (N,) int64 index of the load_digits instance behind each image, kept for leakage
    checks; None for data that did not come straight from a World.
    """

    images: np.ndarray
    labels: np.ndarray
    slices: list[str]
    digits: np.ndarray | None = None

    def save(self, path) -> None:
        """Write a compressed .npz at exactly `path` (numpy would otherwise append '.npz')."""
        extra = {} if self.digits is None else {"digits": np.asarray(self.digits, np.int64)}
        with open(path, "wb") as f:
            np.savez_compressed(f, images=self.images, labels=self.labels,
                                slices=np.asarray(self.slices, dtype=str), **extra)

    @classmethod
    def load(cls, path) -> "Dataset":
        with np.load(Path(path), allow_pickle=False) as z:
            return cls(images=z["images"], labels=z["labels"].astype(np.int64),
                       slices=[str(s) for s in z["slices"]],
                       digits=z["digits"] if "digits" in z.files else None)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True, eq=False)
class Camera:
    """Fixed per-camera properties, derived from (world seed, camera id)."""

    camera_id: str
    key: int                 # zlib.crc32 of the id: stable across processes, unlike hash()
    fps: float
    phase: int               # offset into the day cycle, 0..DAY_LENGTH-1
    season_phase: float      # offset into the night-length drift, 0..1
    mix: np.ndarray          # (10,) probability of each digit at this camera
    cdf: np.ndarray          # (10,) cumulative mix, for a cheap inverse-CDF draw


class World:
    """The simulated world. All outputs are deterministic given `seed`."""

    epoch = SIM_EPOCH  # when frame 0 of every camera is captured

    def __init__(self, seed: int = 0, frame_size: int = 64, holdout_fraction: float = 0.3,
                 drift: dict[str, tuple[str, int]] | None = None):
        """drift: {camera_id: (condition, start_index)}: that camera's night frames from
        start_index on are lit by `condition` (one of DRIFT_CONDITIONS) instead; see the module doc."""
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if frame_size < 16:
            raise ValueError(f"frame_size must be >= 16, got {frame_size}")
        if not 0.0 < holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
        self.seed = int(seed)
        self.frame_size = int(frame_size)
        self.holdout_fraction = float(holdout_fraction)
        self.drift: dict[str, tuple[str, int]] = {}
        for cam_id, (cond, start) in (drift or {}).items():
            if cond not in DRIFT_CONDITIONS or int(start) < 0:
                raise ValueError(f"drift[{cam_id!r}]: expected (one of {DRIFT_CONDITIONS}, start >= 0), "
                                 f"got ({cond!r}, {start!r})")
            self.drift[cam_id] = (cond, int(start))

        glyphs, targets = _digits()
        self._glyphs = glyphs          # (1797, 8, 8) float32 in 0..1
        self._targets = targets        # (1797,) int64
        self._split()
        self._backgrounds = self._make_backgrounds()
        rng = np.random.default_rng([self.seed, _S_NOISE])
        # Sensor noise is read as a random window of a precomputed field: far cheaper per frame
        # than drawing S*S*3 normals.
        self._noise = rng.standard_normal(
            (N_NOISE, 2 * self.frame_size, 2 * self.frame_size, 3), dtype=np.float32)
        self._rain = self._make_rain()
        self._cameras: dict[str, Camera] = {}

    # ---- setup -------------------------------------------------------------------------

    def _split(self) -> None:
        """Hold out `holdout_fraction` of each class; only golden_set may use those."""
        rng = np.random.default_rng([self.seed, _S_SPLIT])
        held, kept = [], []
        for c in range(10):
            idx = rng.permutation(np.flatnonzero(self._targets == c))
            k = int(round(self.holdout_fraction * len(idx)))
            held.append(idx[:k])
            kept.append(idx[k:])
        self.holdout_indices = np.sort(np.concatenate(held))
        self.train_indices = np.sort(np.concatenate(kept))
        self._train_by_class = [np.sort(k) for k in kept]
        self._holdout_by_class = [np.sort(h) for h in held]

    def _make_backgrounds(self) -> np.ndarray:
        """(N_BACKGROUNDS, S, S, 3) uint8 BGR: random square crops of the photos, resized to S."""
        rng = np.random.default_rng([self.seed, _S_BG])
        photos = _photos()
        s = self.frame_size
        out = np.empty((N_BACKGROUNDS, s, s, 3), np.uint8)
        for i in range(N_BACKGROUNDS):
            photo = photos[i % len(photos)]  # every photo gets used, equally often
            h, w = photo.shape[:2]
            # Zoomed-in crops (1/8 .. 1/2 of the photo) look like a camera's view of a scene
            # rather than a thumbnail of a whole photo, whose detail would swamp the digit.
            side = int(rng.integers(max(s, min(h, w) // 8), max(s, min(h, w) // 2) + 1))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crop = cv2.resize(photo[y:y + side, x:x + side], (s, s), interpolation=cv2.INTER_AREA)
            # Flatten the scene a little towards its mean: ink stays the most contrasted thing.
            mean = crop.mean(axis=(0, 1), keepdims=True)
            out[i] = np.clip(mean + rng.uniform(0.5, 0.8) * (crop - mean), 0, 255).astype(np.uint8)
        return out

    def _make_rain(self) -> np.ndarray:
        """(8, S, S) float32 in 0..1: masks of thin slanted streaks."""
        rng = np.random.default_rng([self.seed, _S_RAIN])
        s = self.frame_size
        masks = np.zeros((8, s, s), np.float32)
        for m in masks:
            slant = rng.uniform(-0.4, 0.4)
            for _ in range(s // 3):
                x, y = rng.uniform(0, s, 2)
                length = rng.uniform(0.08, 0.25) * s
                end = (int(x + slant * length), int(y + length))
                cv2.line(m, (int(x), int(y)), end, float(rng.uniform(0.5, 1.0)), 1, cv2.LINE_AA)
        return masks

    # ---- cameras -----------------------------------------------------------------------

    def camera_ids(self, n: int) -> list[str]:
        return [f"cam-{i:03d}" for i in range(n)]

    def camera(self, camera_id: str) -> Camera:
        """The fixed properties of a camera (cached)."""
        cam = self._cameras.get(camera_id)
        if cam is None:
            key = zlib.crc32(camera_id.encode("utf-8"))
            rng = np.random.default_rng([self.seed, key, _S_CAMERA])
            # Zipf-like over a camera-specific order of the digits: the rarest digit is
            # 10**s times less likely than the most common one (s >= 1 so the ratio >= 10).
            order = rng.permutation(10)
            s = rng.uniform(1.0, 1.5)
            mix = np.empty(10)
            mix[order] = 1.0 / np.arange(1, 11) ** s
            mix /= mix.sum()
            cam = Camera(camera_id, key, CAMERA_FPS, int(rng.integers(DAY_LENGTH)),
                         float(rng.random()), mix, np.cumsum(mix))
            self._cameras[camera_id] = cam
        return cam

    def class_mix(self, camera_id: str) -> np.ndarray:
        """(10,) probability of each digit at this camera; long-tailed."""
        return self.camera(camera_id).mix.copy()

    def condition(self, camera_id: str, index: int) -> str:
        """Lighting at a frame. A sim day is [day | dusk | night | dusk]; the night's length
        drifts over a season, so the mix a camera sees changes slowly over time."""
        cam = self.camera(camera_id)
        day_no, t = divmod(index + cam.phase, DAY_LENGTH)
        night_frac = NIGHT_FRACTION + NIGHT_DRIFT * math.sin(
            2 * math.pi * (day_no / SEASON_DAYS + cam.season_phase))
        n_night = int(round(night_frac * DAY_LENGTH))
        n_day = DAY_LENGTH - n_night - 2 * DUSK_FRAMES
        if t < n_day:
            return "day"
        if t < n_day + DUSK_FRAMES or t >= n_day + DUSK_FRAMES + n_night:
            return "dusk"
        cond, start = self.drift.get(camera_id, ("night", 0))
        return cond if index >= start else "night"

    def weather(self, camera_id: str, index: int) -> str:
        """Weather at a frame: constant over blocks of WEATHER_BLOCK frames."""
        cam = self.camera(camera_id)
        rng = np.random.default_rng([self.seed, cam.key, index // WEATHER_BLOCK, _S_WEATHER])
        return _draw_weather(rng)

    # ---- frames ------------------------------------------------------------------------

    def _pick(self, camera_id: str, index: int) -> tuple[int, int]:
        """(label, digit instance) from the frame's own label stream, so truth() needn't render."""
        if index < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        cam = self.camera(camera_id)
        rng = np.random.default_rng([self.seed, cam.key, index, _S_LABEL])
        label = min(int(np.searchsorted(cam.cdf, rng.random(), side="right")), 9)
        pool = self._train_by_class[label]
        return label, int(pool[rng.integers(len(pool))])

    def truth(self, camera_id: str, index: int) -> int:
        """The digit in frame `index` of the camera, without rendering it."""
        return self._pick(camera_id, index)[0]

    def digit_index(self, camera_id: str, index: int) -> int:
        """Which of the 1797 digit instances frame `index` shows (always in train_indices)."""
        return self._pick(camera_id, index)[1]

    def frame(self, camera_id: str, index: int) -> Frame:
        label, digit = self._pick(camera_id, index)
        cam = self.camera(camera_id)
        lighting, weather = self.condition(camera_id, index), self.weather(camera_id, index)
        rng = np.random.default_rng([self.seed, cam.key, index, _S_RENDER])
        image = self._render(rng, digit, lighting, weather)
        return Frame(camera_id, int(index), image, label, SIM_EPOCH + index / cam.fps,
                     {"lighting": lighting, "weather": weather, "camera": camera_id})

    def frames(self, camera_id: str, start: int = 0) -> Iterator[Frame]:
        """Frames `start`, `start + 1`, ... of a camera, forever."""
        index = start
        while True:
            yield self.frame(camera_id, index)
            index += 1

    # ---- datasets ----------------------------------------------------------------------

    def golden_set(self, per_condition: int = 300) -> Dataset:
        """Held-out digits only; every condition (and, within it, every class) equally often."""
        images, labels, slices, digits = [], [], [], []
        for ci, lighting in enumerate(CONDITIONS):
            order = np.random.default_rng([self.seed, _S_GOLDEN, ci])
            perms = [order.permutation(h) for h in self._holdout_by_class]
            for k in range(per_condition):
                label = k % 10
                perm = perms[label]
                rng = np.random.default_rng([self.seed, _S_GOLDEN, ci, k])
                digit = int(perm[(k // 10) % len(perm)])
                images.append(self._render(rng, digit, lighting, _draw_weather(rng)))
                labels.append(label)
                slices.append(lighting)
                digits.append(digit)
        return _dataset(images, labels, slices, digits, self.frame_size)

    def seed_set(self, n: int = 300, conditions=("day", "dusk")) -> Dataset:
        """Training digits only, classes and the given conditions balanced. By default there
        is no night: the fleet has to find night data itself."""
        bad = set(conditions) - set(CONDITIONS)
        if bad or not conditions:
            raise ValueError(f"conditions must be a non-empty subset of {CONDITIONS}, got {conditions}")
        images, labels, slices, digits = [], [], [], []
        for k in range(n):
            lighting = conditions[k % len(conditions)]
            label = (k // len(conditions)) % 10  # independent of the condition
            rng = np.random.default_rng([self.seed, _S_SEED_SET, k])
            pool = self._train_by_class[label]
            digit = int(pool[rng.integers(len(pool))])
            images.append(self._render(rng, digit, lighting, _draw_weather(rng)))
            labels.append(label)
            slices.append(lighting)
            digits.append(digit)
        return _dataset(images, labels, slices, digits, self.frame_size)

    # ---- rendering ---------------------------------------------------------------------

    def _render(self, rng: np.random.Generator, digit: int, lighting: str, weather: str) -> np.ndarray:
        """One (S, S, 3) uint8 BGR frame of digit instance `digit`. Order of operations follows
        the physics: scene (background, ink, clutter) -> atmosphere -> light -> optics -> sensor."""
        s = self.frame_size
        bg = self._backgrounds[rng.integers(N_BACKGROUNDS)]
        flip = int(rng.integers(4))  # 4 orientations: 4x the background variety for free
        if flip & 1:
            bg = bg[:, ::-1]
        if flip & 2:
            bg = bg[::-1]
        img = bg.astype(np.float32)

        # Digit: upscaled glyph as alpha, stretched so strokes are solid rather than 8x8 mush;
        # ink polarity opposite to the patch under it so it stays legible.
        size = int(rng.integers(round(0.45 * s), round(0.8 * s) + 1))
        y, x = (int(v) for v in rng.integers(0, s - size + 1, 2))
        alpha = cv2.resize(self._glyphs[digit], (size, size), interpolation=cv2.INTER_LINEAR)
        alpha = np.clip((alpha - 0.15) * 2.0, 0.0, 1.0) * np.float32(rng.uniform(0.85, 1.0))
        patch = img[y:y + size, x:x + size]
        if patch.mean() > 128:
            ink = rng.uniform(0, 40, 3).astype(np.float32)
        else:
            ink = rng.uniform(215, 255, 3).astype(np.float32)
        a = alpha[..., None]
        patch *= 1.0 - a
        patch += a * ink

        # Clutter: a few thin lines / rectangle outlines, i.e. edges that are not the digit.
        for _ in range(int(rng.integers(0, 3))):
            p1 = tuple(int(v) for v in rng.integers(0, s, 2))
            p2 = tuple(int(v) for v in rng.integers(0, s, 2))
            color = tuple(float(v) for v in rng.uniform(0, 255, 3))
            if rng.random() < 0.5:
                cv2.line(img, p1, p2, color, 1)
            else:
                cv2.rectangle(img, p1, p2, color, 1)

        # Atmosphere.
        noise_sigma = 0.0
        if weather == "fog":
            f = rng.uniform(0.35, 0.6)
            img *= 1.0 - f
            img += f * rng.uniform(150, 210)
        elif weather == "rain":
            streaks = self._rain[rng.integers(len(self._rain))]
            img += (rng.uniform(50, 110) * streaks)[..., None]
            noise_sigma += 4.0

        # Light: overall gain, colour tint (B, G, R), black level, and the sensor noise it implies.
        if lighting == "day":
            gain, tint, black = rng.uniform(0.85, 1.15), (1.0, 1.0, 1.0), 0.0
            noise_sigma += 2.0
        elif lighting == "dusk":
            gain, tint, black = rng.uniform(0.45, 0.65), (0.75, 0.9, 1.1), 4.0
            noise_sigma += 4.0
        elif lighting == "sodium":  # 589 nm: red and some green, next to no blue
            gain, tint, black = rng.uniform(0.3, 0.45), (0.04, 0.55, 1.0), rng.uniform(4, 10)
            noise_sigma += rng.uniform(5.0, 8.0)
        else:  # night: a few grey levels of signal under a noisy, blue-ish black level
            gain, tint, black = rng.uniform(0.12, 0.2), (1.25, 0.95, 0.7), rng.uniform(10, 20)
            noise_sigma += rng.uniform(6.0, 10.0)
        img *= np.asarray(tint, np.float32) * np.float32(gain)
        img += np.float32(black)
        if lighting == "sodium":
            img += self._bloom(rng)

        # Optics: out-of-focus / motion-ish softness on some frames.
        if rng.random() < 0.3:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.6))

        # Sensor: a random window of a precomputed noise field.
        ny, nx = (int(v) for v in rng.integers(0, s, 2))
        img += np.float32(noise_sigma) * self._noise[rng.integers(N_NOISE), ny:ny + s, nx:nx + s]
        np.clip(img, 0, 255, out=img)
        return img.astype(np.uint8)

    def _bloom(self, rng: np.random.Generator) -> np.ndarray:
        """(S, S, 3) float32: glare of a sodium lamp centred in or just outside the view, bright
        enough to saturate red and green near its core (the sensor clips it afterwards)."""
        s = self.frame_size
        cy, cx = rng.uniform(-0.2 * s, 1.2 * s, 2)
        sigma = rng.uniform(0.15, 0.35) * s
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        glow = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / np.float32(2 * sigma * sigma))
        return (np.float32(rng.uniform(200, 400)) * glow)[..., None] * np.asarray((0.08, 0.6, 1.0), np.float32)


# ---- data sources (cached per process: loaded once, shared by every World) ---------------

@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 8, 8) float32 in 0..1 and (1797,) int64 labels."""
    # Read the CSV that load_digits() reads, without importing sklearn (~0.8 s of imports);
    # fall back to the official loader if the file ever moves. Same values either way (tested).
    path = _package_file("sklearn", "datasets", "data", "digits.csv.gz")
    if path is not None:
        data = np.loadtxt(path, delimiter=",")
        images, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1]
    else:
        from sklearn.datasets import load_digits

        d = load_digits()
        images, target = d.images, d.target
    glyphs = (images / 16.0).astype(np.float32)
    glyphs.setflags(write=False)
    return glyphs, target.astype(np.int64)


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """The bundled photos as (H, W, 3) uint8 BGR."""
    # The files in skimage/data are read with PIL directly: skimage.data.<name>() goes through
    # imageio (~0.5 s to import) to decode the very same files. Fallback: the official API.
    from PIL import Image

    out = []
    for name in PHOTOS:
        path = next((p for ext in (".png", ".jpg")
                     if (p := _package_file("skimage", "data", name + ext)) is not None), None)
        if path is not None:
            with Image.open(path) as im:
                img = np.asarray(im)
        else:
            import skimage.data

            img = np.asarray(getattr(skimage.data, name)())
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        else:
            img = cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2BGR)
        out.append(img)
    return tuple(out)


def _package_file(package: str, *parts: str) -> Path | None:
    """Path of a data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root, *parts)
        if path.is_file():
            return path
    return None


def _draw_weather(rng: np.random.Generator) -> str:
    return WEATHER[min(int(np.searchsorted(_WEATHER_CDF, rng.random(), side="right")), 2)]


def _dataset(images: list[np.ndarray], labels: list[int], slices: list[str],
             digits: list[int], s: int) -> Dataset:
    arr = np.stack(images) if images else np.empty((0, s, s, 3), np.uint8)
    return Dataset(arr, np.asarray(labels, dtype=np.int64), list(slices),
                   np.asarray(digits, dtype=np.int64))
