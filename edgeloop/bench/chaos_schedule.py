"""The chaos run's pure parts (edgeloop/bench/chaos.py): the seeded fault schedule, and the
reconciliation of every committed sample id against the hub's rows.

    faults = draw_schedule(seed=0, seconds=600, per_kind=12, fleet=[...], small_disk=[...], ...)
    figures = reconcile(journals, *hub_rows(hub_db, devices))
"""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edgeloop.shared.outbox import Journal

KINDS = ("agent_kill", "relay_kill", "hub_kill", "broker_restart", "hub_unreachable", "disk_full", "link_drop")

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
    if kind == "broker_restart":
        return [rng.uniform(2.0, _clamp(3.0, 0.25 * slot, 10.0)) for _ in range(n)]
    if kind == "hub_unreachable":  # one long outage (relays store and forward for minutes), the rest shorter
        out = [rng.uniform(0.3, 0.6) * slot for _ in range(n)]
        out[rng.randrange(n)] = 2.5 * slot if n > 1 else 0.6 * slot
        return out
    if kind == "disk_full":
        return [max(15.0, rng.uniform(0.35, 0.6) * slot) for _ in range(n)]
    if kind == "link_drop":
        return [max(10.0, rng.uniform(0.3, 0.6) * slot) for _ in range(n)]
    raise ValueError(f"unknown fault kind {kind!r}")


def draw_schedule(seed: int, seconds: float, per_kind: int, fleet: list[str], small_disk: list[str],
                  relays: list[str]) -> list[Fault]:
    """per_kind faults of every kind within [0, seconds), in start order; the same seed, the same schedule.

    Within a kind faults never overlap: their durations (capped at 90% of the window in all) are
    laid out in a random order with random gaps between them. disk_full cuts small-disk processes'
    links and link_drop makes the other processes' links lossy, so that one never hides the other."""
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
        targets = {"agent_kill": fleet, "link_drop": big_disk, "disk_full": small_disk, "relay_kill": relays,
                   "hub_kill": ["hub"], "broker_restart": ["broker"], "hub_unreachable": ["hub-link"]}[kind]
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


# --- reconciliation (pure) ----------------------------------------------------------------------
def reconcile(journals: Iterable[Journal], hub_rows: Counter[str], fleet_rows: set[str]) -> dict:
    """Account for every committed sample id.

    journals: each agent's outbox journal; hub_rows: sample_id -> rows stored at the hub (every row of
    its samples table); fleet_rows: the hub's ids that came from this fleet's devices.
    A committed id is at_hub if the hub holds it, else evicted if its outbox evicted it, else lost.
    An id both evicted and at the hub (sent, its PUBACK lost with the link, then evicted) counts at_hub.
    """
    committed: set[str] = set()
    evicted_ids: set[str] = set()
    queued: set[str] = set()
    for j in journals:
        committed |= j.committed
        evicted_ids |= j.evicted
        queued |= j.queued
    at_hub = committed & hub_rows.keys()
    evicted = (committed & evicted_ids) - at_hub
    lost = committed - at_hub - evicted
    return {
        "committed": len(committed), "evicted": len(evicted), "at_hub": len(at_hub),
        "duplicates_at_hub": sum(n - 1 for n in hub_rows.values()),
        "lost": len(lost),
        "evicted_after_delivery": len(evicted_ids & at_hub),
        "still_queued": len(queued - at_hub),
        "at_hub_never_committed": len(fleet_rows - committed),
        "lost_ids": sorted(lost)[:20],
    }


def hub_rows(hub_db: Path, devices: set[str]) -> tuple[Counter[str], set[str]]:
    """-> (sample_id -> rows, for every row of the hub's samples table; the ids from `devices`).

    Read-only, straight from the file: the API cannot show a row stored twice, this can."""
    db = sqlite3.connect(f"file:{hub_db}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT sample_id, device_id FROM samples").fetchall()
    finally:
        db.close()
    return Counter(sid for sid, _ in rows), {sid for sid, dev in rows if dev in devices}
