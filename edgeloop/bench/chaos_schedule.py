"""The chaos run's seeded fault schedule (edgeloop/bench/chaos.py), pure:

    faults = draw_schedule(seed=0, seconds=600, per_kind=12, fleet=[...], small_disk=[...], ...)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

KINDS = ("agent_kill", "relay_kill", "hub_kill", "broker_kill", "hub_unreachable", "disk_full", "link_drop",
         "proxy_404", "slow_link", "relay_disk")

# --- the schedule (pure) ----------------------------------------------------------------------
@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the fault window opened
    kind: str
    target: str  # a fleet process, a relay, "hub", "broker" or "hub-link"
    duration: float  # seconds down, unreachable or lossy
    mode: str = ""  # hub_unreachable: "refuse" or "blackhole"
    seed: int = 0  # link_drop: seeds its resets and stalls


def _clamp(lo: float, x: float, hi: float) -> float:
    return max(lo, min(x, hi))


def _durations(kind: str, n: int, slot: float, rng: random.Random) -> list[float]:
    """How long each fault of a kind lasts, for n faults sharing a window of n * slot seconds."""
    if kind in ("agent_kill", "hub_kill"):
        return [rng.uniform(1.0, _clamp(2.0, 0.2 * slot, 6.0)) for _ in range(n)]
    if kind == "relay_kill":
        return [rng.uniform(1.0, _clamp(2.0, 0.2 * slot, 8.0)) for _ in range(n)]
    if kind == "broker_kill":
        return [rng.uniform(2.0, _clamp(3.0, 0.25 * slot, 10.0)) for _ in range(n)]
    if kind == "proxy_404":
        return [max(4.0, rng.uniform(0.2, 0.4) * slot) for _ in range(n)]
    if kind == "relay_disk":
        return [max(4.0, rng.uniform(0.15, 0.3) * slot) for _ in range(n)]
    if kind == "hub_unreachable":  # one long outage (relays store and forward for minutes), the rest shorter
        out = [rng.uniform(0.3, 0.6) * slot for _ in range(n)]
        out[rng.randrange(n)] = 2.5 * slot if n > 1 else 0.6 * slot
        return out
    if kind == "disk_full":
        return [max(15.0, rng.uniform(0.35, 0.6) * slot) for _ in range(n)]
    if kind in ("link_drop", "slow_link"):
        return [max(10.0, rng.uniform(0.3, 0.6) * slot) for _ in range(n)]
    raise ValueError(f"unknown fault kind {kind!r}")


def draw_schedule(seed: int, seconds: float, per_kind: int, fleet: list[str], small_disk: list[str],
                  relays: list[str]) -> list[Fault]:
    """per_kind faults of every kind within [0, seconds), in start order; the same seed, the same schedule.

    Within a kind faults never overlap: their durations (capped at 90% of the window in all) are
    laid out in a random order with random gaps between them. disk_full cuts small-disk processes'
    links; link_drop (lossy) and slow_link (throttled) act on the other processes' links, so that a
    cut never hides them."""
    big_disk = [p for p in fleet if p not in small_disk]
    if per_kind < 1 or seconds <= 0 or not small_disk or not big_disk or not relays:
        raise ValueError("a schedule needs a positive window, per_kind >= 1, fleet processes with a small "
                         "disk and without, and relays")
    rng = random.Random(seed)
    out: list[Fault] = []
    for kind in KINDS:
        durations = _durations(kind, per_kind, seconds / per_kind, rng)
        total = sum(durations)
        if total > 0.9 * seconds:
            durations = [d * 0.9 * seconds / total for d in durations]
        weights = [rng.expovariate(1.0) for _ in range(per_kind + 1)]
        slack = seconds - sum(durations)
        gaps = [slack * w / sum(weights) for w in weights]
        targets = {"agent_kill": fleet, "link_drop": big_disk, "slow_link": big_disk, "disk_full": small_disk,
                   "relay_kill": relays, "relay_disk": relays, "hub_kill": ["hub"], "broker_kill": ["broker"],
                   "hub_unreachable": ["hub-link"], "proxy_404": ["hub-link"]}[kind]
        t = 0.0
        for gap, d in zip(gaps, durations):
            t += gap
            target = rng.choice(targets)
            mode = rng.choice(("refuse", "blackhole")) if kind == "hub_unreachable" else ""
            # Whole centiseconds, start and end each rounded: rounding keeps their order, so faults of
            # one kind still never overlap and the last still ends within the window.
            start, end = round(100 * t), round(100 * (t + d))
            out.append(Fault(start / 100, kind, target, (end - start) / 100, mode, rng.randrange(2**31)))
            t += d
    return sorted(out, key=lambda f: (f.at, f.kind))
