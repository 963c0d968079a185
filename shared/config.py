"""TOML configuration shared by every tier, validated once at start.

    [sampling]
    budget = { per_hour = 120, bytes_per_hour = "20MB", window_s = 60 }
    seed = 0
    [[sampling.signals]]
    kind = "confidence_band"; low = 0.35; high = 0.65; weight = 1.0
    [[sampling.signals]]
    kind = "metadata"; tag = "zone"; values = ["dock", "gate"]; weight = 2.0

(`;` stands for a new line here.) Signal kinds and their parameters: SIGNAL_KINDS, SIGNAL_PARAMS;
edgeloop.shared.sampling.signals documents what each one scores.

Unknown keys are refused with the path of the key and the keys that are allowed, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*((?:[KMGT]i?)?B)?\s*$", re.I)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


MAX_BYTE_SIZE = 2**63 - 1  # what SQLite and numpy hold as an integer


class ByteSize(int):
    """An int of bytes that config accepts as 20000000 or "20MB" / "16MiB"."""


def parse_size(value: Any, where: str) -> ByteSize:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_BYTE_SIZE:
        return ByteSize(value)
    if isinstance(value, str) and (m := _SIZE.match(value)):
        unit = (m.group(2) or "").upper()
        n = float(m.group(1)) * _UNITS[unit]
        if math.isfinite(n) and n <= MAX_BYTE_SIZE:
            return ByteSize(int(n))
    raise ConfigError(f"{where}: expected a byte size such as 20000000 or \"20MB\" (at most {MAX_BYTE_SIZE}), "
                      f"got {value!r:.80}")


@dataclass(frozen=True)
class Budget:
    per_hour: float | None = None  # candidates per hour of capture time; None = unlimited
    bytes_per_hour: ByteSize | None = None
    window_s: float = 60.0  # selection window on the capture clock

    def __post_init__(self):
        if self.window_s <= 0:
            raise ConfigError("budget.window_s: must be positive")
        for name in ("per_hour", "bytes_per_hour"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ConfigError(f"budget.{name}: must not be negative")

    @property
    def per_window(self) -> float:
        return float("inf") if self.per_hour is None else self.per_hour * self.window_s / 3600.0

    @property
    def bytes_per_window(self) -> float:
        return float("inf") if self.bytes_per_hour is None else self.bytes_per_hour * self.window_s / 3600.0


STRATEGIES = ("top", "diverse")
SIGNAL_KINDS = ("random", "every_nth", "interval", "least_confidence", "margin", "entropy", "confidence_band",
                "close_to_threshold", "rare_class", "detection_count", "novelty", "metadata")
AGGREGATES = ("max", "mean")  # how a detector's per-box uncertainties make one frame's score
# The parameters each kind reads. A parameter of another kind is refused unless it keeps its default,
# so that `n = 3` on a margin signal is a visible mistake, not a silently ignored line.
SIGNAL_PARAMS: dict[str, tuple[str, ...]] = {
    "least_confidence": ("aggregate",), "margin": ("aggregate",), "entropy": ("aggregate",),
    "confidence_band": ("low", "high"),
    "close_to_threshold": ("low", "high", "min_count"),
    "every_nth": ("n",),
    "interval": ("interval_s",),
    "rare_class": ("max_share",),
    "detection_count": ("min_count",),
    "novelty": ("min_distance", "memory"),
    "metadata": ("tag", "values"),
}
# Parameters with a deployment-specific scale (frames, seconds, objects, tag names) have no default.
SIGNAL_REQUIRED: dict[str, tuple[str, ...]] = {
    "every_nth": ("n",), "interval": ("interval_s",), "detection_count": ("min_count",),
    "metadata": ("tag", "values"),
}
MAX_NOVELTY_MEMORY = 1 << 16  # embeddings an agent keeps for novelty; the ring is preallocated
MAX_TAG_CHARS = 100  # so that the reason "metadata:{tag}={value}" fits the protocol's 256-character strings


@dataclass(frozen=True)
class SignalConfig:
    """One configured signal. `kind` picks the scorer; the other fields are its parameters
    (see SIGNAL_PARAMS for which kind reads which; None means "not set")."""

    kind: str
    weight: float = 1.0
    low: float = 0.35  # confidence_band, close_to_threshold
    high: float = 0.65  # confidence_band, close_to_threshold
    n: int | None = None  # every_nth: fires on frame indices divisible by n (required)
    interval_s: float | None = None  # interval: fires once per interval_s of capture time (required)
    max_share: float = 0.05  # rare_class: fires when the class's share of the training counts is at most this
    # detection_count: fires from this many detections on (required); close_to_threshold: from this many
    # boxes scoring within [low, high] on (default 1)
    min_count: int | None = None
    aggregate: str = "max"  # least_confidence, margin, entropy on a detector: the worst box, or the mean
    min_distance: float = 0.15  # novelty: cosine distance to the nearest remembered embedding
    memory: int = 256  # novelty: how many recently kept embeddings are remembered
    tag: str | None = None  # metadata: the tag to read (required)
    values: tuple[str, ...] = ()  # metadata: the tag values that fire (required)

    @property
    def name(self) -> str:
        """The key of this signal's score: its kind, or `metadata:{tag}` (several metadata signals may
        coexist, one per tag)."""
        return f"metadata:{self.tag}" if self.kind == "metadata" else self.kind

    def __post_init__(self):
        if self.kind not in SIGNAL_KINDS:
            raise ConfigError(f"signals.kind: unknown signal {self.kind!r} (known: {', '.join(SIGNAL_KINDS)})")
        where = f"signals[{self.kind}]"
        if isinstance(self.values, list):
            object.__setattr__(self, "values", tuple(self.values))
        own = SIGNAL_PARAMS.get(self.kind, ())
        for f in dataclasses.fields(self):
            if f.name in ("kind", "weight") or f.name in own:
                continue
            if getattr(self, f.name) != f.default:
                owners = " or ".join(k for k, ps in SIGNAL_PARAMS.items() if f.name in ps)
                raise ConfigError(f"{where}: {f.name} does not apply (it belongs to {owners})")
        missing = [p for p in SIGNAL_REQUIRED.get(self.kind, ()) if getattr(self, p) in (None, ())]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)} (required by {self.kind})")
        if not 0.0 <= self.low <= self.high <= 1.0:
            raise ConfigError(f"{where}: need 0 <= low <= high <= 1, got low={self.low} high={self.high}")
        if self.n is not None and (not _is_int(self.n) or self.n < 1):
            raise ConfigError(f"{where}: n must be an integer >= 1, got {self.n!r}")
        if self.interval_s is not None and not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise ConfigError(f"{where}: interval_s must be a positive number of seconds, got {self.interval_s!r}")
        if not 0.0 < self.max_share <= 1.0:
            raise ConfigError(f"{where}: max_share must be a fraction in (0, 1], got {self.max_share!r}")
        if self.min_count is not None and (not _is_int(self.min_count) or self.min_count < 1):
            raise ConfigError(f"{where}: min_count must be an integer >= 1, got {self.min_count!r}")
        if self.aggregate not in AGGREGATES:
            raise ConfigError(f"{where}: aggregate must be one of {', '.join(AGGREGATES)}, got {self.aggregate!r}")
        if not 0.0 < self.min_distance <= 2.0:
            raise ConfigError(f"{where}: min_distance must be a cosine distance in (0, 2], got {self.min_distance!r}")
        if not _is_int(self.memory) or not 1 <= self.memory <= MAX_NOVELTY_MEMORY:
            raise ConfigError(f"{where}: memory must be an integer from 1 to {MAX_NOVELTY_MEMORY}, got {self.memory!r}")
        if self.tag is not None and not (isinstance(self.tag, str) and 0 < len(self.tag) <= MAX_TAG_CHARS):
            raise ConfigError(f"{where}: tag must be a non-empty string of at most {MAX_TAG_CHARS} characters")
        if not isinstance(self.values, tuple) or not all(
                isinstance(v, str) and len(v) <= MAX_TAG_CHARS for v in self.values):
            raise ConfigError(f"{where}: values must be a list of strings of at most {MAX_TAG_CHARS} characters")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_finite_number(v: Any) -> bool:
    """An int or float (not a bool) that is finite as a float: TOML integers have no size limit."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int beyond the float range
        return False


def _default_signals() -> tuple[SignalConfig, ...]:
    return (SignalConfig("least_confidence", 1.0), SignalConfig("margin", 0.5), SignalConfig("random", 0.1))


@dataclass(frozen=True)
class TemporalDedup:
    """The agent's temporal de-duplication (shared/sampling/temporal.py): a frame that shows what the
    camera kept within `horizon_s` seconds is no candidate. horizon_s = 0 (the default) turns it off."""

    horizon_s: float = 0.0
    max_change: float = 6.0  # grey levels a thumbnail cell may change and still show the same scene
    min_iou: float = 0.5  # a detector's boxes must match one to one at this IoU, with equal classes
    memory: int = 64  # frames remembered

    def __post_init__(self):
        if not (math.isfinite(self.horizon_s) and self.horizon_s >= 0):
            raise ConfigError(f"temporal_dedup.horizon_s: expected seconds >= 0, got {self.horizon_s!r}")
        if not (math.isfinite(self.max_change) and 0 <= self.max_change <= 255):
            raise ConfigError(f"temporal_dedup.max_change: expected grey levels from 0 to 255, got {self.max_change!r}")
        if not 0.0 < self.min_iou <= 1.0:
            raise ConfigError(f"temporal_dedup.min_iou: expected an IoU in (0, 1], got {self.min_iou!r}")
        if not _is_int(self.memory) or not 1 <= self.memory <= 4096:
            raise ConfigError(f"temporal_dedup.memory: expected an integer from 1 to 4096, got {self.memory!r}")

    @property
    def enabled(self) -> bool:
        return self.horizon_s > 0


@dataclass(frozen=True)
class TrackGate:
    """The agent's track-aware selection (shared/sampling/tracks.py): a detector's frame whose every box
    belongs to a track that already has a candidate is no candidate. max_age_s = 0 (the default) turns
    it off; else a track unseen that long ends."""

    max_age_s: float = 0.0
    min_iou: float = 0.3  # a box continues a track of its class from this IoU with the track's last box

    def __post_init__(self):
        if not (math.isfinite(self.max_age_s) and self.max_age_s >= 0):
            raise ConfigError(f"tracks.max_age_s: expected seconds >= 0, got {self.max_age_s!r}")
        if not 0.0 < self.min_iou <= 1.0:
            raise ConfigError(f"tracks.min_iou: expected an IoU in (0, 1], got {self.min_iou!r}")

    @property
    def enabled(self) -> bool:
        return self.max_age_s > 0


@dataclass(frozen=True)
class SamplingConfig:
    budget: Budget = field(default_factory=Budget)
    signals: tuple[SignalConfig, ...] = field(default_factory=_default_signals)
    min_value: float = 0.0  # candidates scoring below this are never kept
    seed: int = 0
    # How a window's budget is spent: "top" (highest value first) or "diverse" (weighted k-center on
    # embeddings, optionally without near-duplicates and balanced over predicted classes).
    strategy: str = "top"
    dedup_threshold: float = 0.0  # cosine distance under which two candidates count as one
    balance_classes: bool = False
    audit_fraction: float = 0.0  # kept outside every budget with the reason "audit": the unbiased sample
    # What a relay lets one device send past the budgets (shared/sampling/privileges.py): audit claims
    # (in the draw, too) and application feedback, per hour; the rest competes like any candidate.
    audit_per_device_hour: float = 600.0
    feedback_per_device_hour: float = 60.0
    # The agent's: frames showing what the camera recently kept are no candidates (off by default).
    temporal_dedup: TemporalDedup = field(default_factory=TemporalDedup)
    tracks: TrackGate = field(default_factory=TrackGate)  # the agent's: one candidate per track episode

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if not 0.0 <= self.audit_fraction <= 1.0:
            raise ConfigError(f"audit_fraction: expected a fraction from 0 to 1, got {self.audit_fraction}")
        for name in ("audit_per_device_hour", "feedback_per_device_hour"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name}: expected a rate of 0 or more per hour, got {getattr(self, name)}")
        if not 0.0 <= self.dedup_threshold <= 2.0:
            raise ConfigError(f"dedup_threshold: expected a cosine distance from 0 to 2, got {self.dedup_threshold}")
        names = [s.name for s in self.signals]
        if len(set(names)) != len(names):
            raise ConfigError(f"signals: each kind may appear once (metadata once per tag), got {', '.join(names)}")


@dataclass(frozen=True)
class Config:
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


def load(path: str | Path | None) -> Config:
    """Read and validate a TOML file; None gives the defaults."""
    if path is None:
        return Config()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:  # a directory, no permission, an I/O error
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    return parse(_toml(text, f"{path}: "), Config)


def loads(text: str) -> Config:
    return parse(_toml(text), Config)


def _toml(text: str, where: str = "") -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}not valid TOML ({exc})") from exc
    except RecursionError as exc:  # tomllib recurses into nested arrays and inline tables
        raise ConfigError(f"{where}not valid TOML (arrays or inline tables nested too deeply)") from exc


def parse(raw: Any, cls: type, where: str = "") -> Any:
    """A dict from TOML -> a frozen dataclass `cls`, refusing unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(fields)})")
    missing = sorted(f.name for f in fields.values() if f.name not in raw
                     and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if missing:
        raise ConfigError(f"{where or 'config'}: missing required key(s) {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _value(value, hints[name], f"{where}.{name}" if where else name) for name, value in raw.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None


def _value(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _value(value, inner[0], where)
    if dataclasses.is_dataclass(hint):
        return parse(value, hint, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        return tuple(_value(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if hint is ByteSize:
        return parse_size(value, where)
    if hint is float:
        if not _is_finite_number(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r:.80}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported setting type {hint!r}")  # a bug in the schema, not the file
