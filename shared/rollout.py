"""Staged rollout as desired-state reconciliation: pure logic, no I/O (the hub stores and drives it).

    stages = parse_stages("shadow:10%,canary:10%,full")
    members = stage_members(devices, rollout_id, stage.percent)     # who takes part in a stage
    a = assign(device_id, view, members)                             # Assignment(active, shadow)
    result = evaluate(view, gates, reports, now)                      # GateResult("wait" | "pass" | "fail", why)

Stages: *shadow* (the candidate runs beside the active model on the members, reporting agreement,
confidence and latency only), *canary* (the candidate is active on the members), *full* (active
everywhere). Members are the first ceil(percent × n) devices of the group ranked by a hash of
(rollout id, device id): deterministic, spread evenly, at least one device, and the canary members
of a rollout include its shadow members when the canary share is not smaller.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError

STAGE_NAMES = ("shadow", "canary", "full")
# Rollout states: running and paused hold a stage; the other three are final.
STATES = ("running", "paused", "done", "rolled_back", "aborted")


@dataclass(frozen=True)
class Stage:
    name: str
    percent: float  # share of the group's devices that take part (full: 100)

    def __str__(self) -> str:
        return self.name if self.name == "full" else f"{self.name}:{self.percent:g}%"


def parse_stages(text: str) -> tuple[Stage, ...]:
    """"shadow:10%,canary:10%,full" -> stages; the last must be full, shadow before canary."""
    stages = []
    for part in (p.strip() for p in str(text).split(",")):
        name, _, pct = part.partition(":")
        if name not in STAGE_NAMES:
            raise ConfigError(f"--stages: unknown stage {name!r} (use {', '.join(STAGE_NAMES)}, e.g. "
                              "shadow:10%,canary:10%,full)")
        if name == "full":
            if pct and pct.rstrip("%") not in ("100", "100.0"):
                raise ConfigError("--stages: full always means 100% of the group")
            stages.append(Stage("full", 100.0))
            continue
        try:
            value = float(pct.rstrip("%"))
        except ValueError:
            raise ConfigError(f"--stages: {part!r} needs a share, e.g. {name}:10%") from None
        if not 0 < value <= 100:
            raise ConfigError(f"--stages: {part!r}: the share must be above 0% and at most 100%")
        stages.append(Stage(name, value))
    if not stages or stages[-1].name != "full" or sum(s.name == "full" for s in stages) != 1:
        raise ConfigError("--stages: the last stage must be full, and only the last")
    order = [STAGE_NAMES.index(s.name) for s in stages]
    if order != sorted(order):
        raise ConfigError("--stages: shadow stages come before canary stages, canary before full")
    return tuple(stages)


@dataclass(frozen=True)
class Gates:
    """What a stage must show before the next one starts; a failure rolls the group back."""

    min_frames: int = 30  # frames each member ran the candidate (or its shadow) before judging
    min_agreement: float = 0.8  # shadow: share of frames where candidate and active agree
    max_latency_p95_ms: float = 250.0  # the candidate's inference latency on the members
    max_confidence_drift: float = 0.2  # |mean confidence of the candidate - of the active model|
    max_load_failures: int = 0  # members that could not load it, or rolled it back on their own
    stage_timeout_s: float = 600.0  # a stage that cannot be judged in time fails
    min_reporting: float = 1.0  # share of the members that must have reported enough frames

    def __post_init__(self):
        checks = {"min_frames": self.min_frames >= 1, "min_agreement": 0 <= self.min_agreement <= 1,
                  "max_latency_p95_ms": self.max_latency_p95_ms > 0,
                  "max_confidence_drift": 0 <= self.max_confidence_drift <= 1,
                  "max_load_failures": self.max_load_failures >= 0, "stage_timeout_s": self.stage_timeout_s > 0,
                  "min_reporting": 0 < self.min_reporting <= 1}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"gates: out of range: {', '.join(bad)}")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Gates":
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(f"gates: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(known)})")
        out = {}
        for k, v in raw.items():
            want = int if k in ("min_frames", "max_load_failures") else float
            if isinstance(v, bool) or not isinstance(v, (int, float)) or abs(v) > 1e15 \
                    or (want is int and not float(v).is_integer()):  # 1e15: float() of a bigger int may overflow
                raise ConfigError(f"gates.{k}: expected a number, got {v!r}")
            out[k] = want(v)
        return cls(**out)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _rank(rollout_id: str, device_id: str) -> str:
    return hashlib.sha256(f"{rollout_id}\x00{device_id}".encode()).hexdigest()


def stage_members(devices: Iterable[str], rollout_id: str, percent: float) -> set[str]:
    """The devices of the group that take part in a stage of `percent`: at least one."""
    ranked = sorted(set(devices), key=lambda d: _rank(rollout_id, d))
    if not ranked:
        return set()
    n = len(ranked) if percent >= 100 else max(1, math.ceil(len(ranked) * percent / 100 - 1e-9))
    return set(ranked[:n])


@dataclass(frozen=True)
class RolloutView:
    """What the pure logic needs of a rollout (the hub's row)."""

    rollout_id: str
    candidate: str  # the version being rolled out
    baseline: str | None  # what the group ran before (rollback target)
    stages: tuple[Stage, ...]
    stage_index: int
    state: str
    stage_started_at: float = 0.0

    @property
    def stage(self) -> Stage:
        return self.stages[min(self.stage_index, len(self.stages) - 1)]


@dataclass(frozen=True)
class Assignment:
    active: str | None  # the version the device should run
    shadow: str | None = None  # the version it should run beside, in shadow


def assign(device_id: str, view: RolloutView, members: set[str]) -> Assignment:
    """The desired state of one device of the rollout's group (members: of the current stage)."""
    if view.state in ("rolled_back", "aborted"):
        return Assignment(view.baseline)
    if view.state == "done":
        return Assignment(view.candidate)
    stage = view.stage
    if stage.name == "full":
        return Assignment(view.candidate)
    # Devices that were canaries in an earlier stage keep the candidate (a shadow stage never follows).
    if stage.name == "canary" and device_id in members:
        return Assignment(view.candidate)
    if stage.name == "shadow" and device_id in members:
        return Assignment(view.baseline, shadow=view.candidate)
    return Assignment(view.baseline)


@dataclass(frozen=True)
class DeviceReport:
    """A device's reported state, as relays forward it (the numbers come from the agent's stats)."""

    device_id: str
    online: bool = True
    model_version: str | None = None
    frames_on_model: int = 0  # frames since this model became active
    latency_p95_ms: float = 0.0
    mean_confidence: float | None = None  # of the active model since it became active
    shadow_version: str | None = None
    shadow_frames: int = 0
    shadow_agree: int = 0
    shadow_latency_p95_ms: float = 0.0
    shadow_mean_confidence: float | None = None
    active_mean_confidence_on_shadow_frames: float | None = None
    failed_versions: tuple[str, ...] = ()  # versions it could not load or rolled back on its own
    failure_reason: str = ""

    @classmethod
    def from_state(cls, st: Any) -> "DeviceReport":
        """From a DeviceState (stats: numbers, facts: strings) as the agent reports it."""
        stats, facts = st.stats, st.facts

        def num(key, default=0.0):
            v = stats.get(key, default)
            return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else default

        failed = tuple(v for v in (facts.get("load_failed_version"), facts.get("rolled_back_version")) if v)
        return cls(st.device_id, st.status == "online", st.model_version, int(num("frames_this_model", 0)),
                   float(num("latency_p95_ms")), num("mean_confidence", None), facts.get("shadow_version") or None,
                   int(num("shadow_frames", 0)), int(num("shadow_agree", 0)), float(num("shadow_latency_p95_ms")),
                   num("shadow_mean_confidence", None), num("active_mean_confidence_on_shadow_frames", None),
                   failed, facts.get("rollback_reason") or st.last_error or "")


@dataclass(frozen=True)
class GateResult:
    verdict: str  # "wait" | "pass" | "fail"
    reason: str = ""
    figures: dict = field(default_factory=dict)


def evaluate(view: RolloutView, gates: Gates, reports: Mapping[str, DeviceReport], members: set[str],
             now: float) -> GateResult:
    """Judge the current stage from the members' reports."""
    cand = view.candidate
    stage = view.stage
    failed = sorted(d for d in members if d in reports and cand in reports[d].failed_versions)
    if len(failed) > gates.max_load_failures:
        why = reports[failed[0]].failure_reason or "load failure"
        return GateResult("fail", f"{stage}: {len(failed)} device(s) could not run {cand} "
                                  f"(e.g. {failed[0]}: {why})", {"failed": failed})
    timed_out = now - view.stage_started_at > gates.stage_timeout_s
    online = [reports[d] for d in sorted(members) if d in reports and reports[d].online]
    if stage.name == "shadow":
        ready = [r for r in online if r.shadow_version == cand and r.shadow_frames >= gates.min_frames]
    elif stage.name == "canary":
        ready = [r for r in online if r.model_version == cand and r.frames_on_model >= gates.min_frames]
    else:  # full: done when every device that is online runs it
        ready = [r for r in online if r.model_version == cand]
    # Offline members neither block nor fail a stage (until its timeout); they follow when back.
    need = max(1, math.ceil(gates.min_reporting * len(online) - 1e-9))
    figures = {"members": len(members), "online": len(online), "ready": len(ready), "need": need}
    if len(ready) < need:
        if timed_out:
            return GateResult("fail", f"{stage}: only {len(ready)} of {len(members)} devices reported "
                                      f"{gates.min_frames} frames on {cand} within {gates.stage_timeout_s:g} s", figures)
        return GateResult("wait", f"{stage}: {len(ready)}/{need} devices ready", figures)
    if stage.name == "shadow":
        frames = sum(r.shadow_frames for r in ready)
        agreement = sum(r.shadow_agree for r in ready) / frames
        latency = max(r.shadow_latency_p95_ms for r in ready)
        drift = _drift([(r.shadow_mean_confidence, r.active_mean_confidence_on_shadow_frames, r.shadow_frames)
                        for r in ready])
        figures.update(agreement=round(agreement, 4), latency_p95_ms=round(latency, 3), confidence_drift=drift)
        if agreement < gates.min_agreement:
            return GateResult("fail", f"{stage}: agreement with the active model {agreement:.3f} < "
                                      f"{gates.min_agreement:g}", figures)
    elif stage.name == "canary":
        latency = max(r.latency_p95_ms for r in ready)
        baseline = [r for d, r in reports.items() if d not in members and r.online and r.model_version == view.baseline]
        drift = _drift([(_mean(ready), _mean(baseline), 1)]) if baseline else None
        figures.update(latency_p95_ms=round(latency, 3), confidence_drift=drift)
    else:
        latency, drift = 0.0, None
    if latency > gates.max_latency_p95_ms:
        return GateResult("fail", f"{stage}: latency p95 {latency:.1f} ms > {gates.max_latency_p95_ms:g} ms", figures)
    if drift is not None and drift > gates.max_confidence_drift:
        return GateResult("fail", f"{stage}: confidence drift {drift:.3f} > {gates.max_confidence_drift:g}", figures)
    if stage.name == "full" and len(ready) < len(online):
        return GateResult("wait", f"full: {len(ready)}/{len(online)} online devices run {cand}", figures)
    return GateResult("pass", f"{stage}: gate holds", figures)


def _mean(reports: list[DeviceReport]) -> float | None:
    vals = [r.mean_confidence for r in reports if r.mean_confidence is not None]
    return sum(vals) / len(vals) if vals else None


def _drift(pairs: list[tuple[float | None, float | None, int]]) -> float | None:
    """Weighted mean |a - b| over pairs where both are known."""
    known = [(a, b, w) for a, b, w in pairs if a is not None and b is not None and w > 0]
    if not known:
        return None
    total = sum(w for _, _, w in known)
    return round(abs(sum((a - b) * w for a, b, w in known)) / total, 4)
