"""A sizing model for a fleet, from the per-item costs `bench scale` measured. Pure arithmetic.

Assumptions (written into the report beside the figures):
- every camera runs at FPS frames per second on a device of its own; the agent keeps at most the
  default budget, PER_HOUR candidates per hour (shared/config.py), and a kept candidate is a
  CANDIDATE_KB KB JPEG plus its row;
- relays forward everything they receive (no relay budget: the worst case for the hub);
- each tier is sized to run at UTILISATION of its measured rate, so that a backlog after an outage
  drains (1 / UTILISATION times live) instead of growing;
- the hub keeps every sample (the database row and the image blob) for RETENTION_DAYS days;
- the hub's ANN index holds every sample's embedding in memory (index bytes per sample measured).
"""

from __future__ import annotations

import math

FPS = 5.0
PER_HOUR = 120.0  # the default [sampling] budget, per agent (shared/config.py)
CANDIDATE_KB = 20.0
ROW_KB = 1.0  # a sample's database row: ids, probs, 128 float16 embedding, tags, scores
UTILISATION = 0.5
RETENTION_DAYS = 30.0
FLEETS = (1_000, 10_000)


def plan(cameras: int, relay_per_s: float | None, hub_per_s: dict[str, float | None],
         agent_fps: float | None, index_bytes_per_sample: float | None, index_add_us: float | None = None) -> dict:
    """-> what a fleet of `cameras` needs: candidates per second at each tier, relays, hub processes
    per engine, database and blob growth, index memory after RETENTION_DAYS."""
    cand_per_s = cameras * PER_HOUR / 3600.0
    per_day = cand_per_s * 86400.0
    kept = per_day * RETENTION_DAYS

    def count(rate: float | None) -> int | None:
        return None if not rate else max(1, math.ceil(cand_per_s / (rate * UTILISATION)))
    return {
        "cameras": cameras, "frames_per_s": cameras * FPS, "candidates_per_s": cand_per_s,
        "agent_cpu_share": None if not agent_fps else FPS / agent_fps,  # of one core per camera
        "relays": count(relay_per_s),
        "hub_processes": {engine: count(rate) for engine, rate in hub_per_s.items()},
        "db_gb_per_day": per_day * ROW_KB / 1e6, "blobs_gb_per_day": per_day * CANDIDATE_KB / 1e6,
        "disk_tb_retained": kept * (ROW_KB + CANDIDATE_KB) / 1e9,
        "samples_retained": kept,
        "index_gb_retained": None if not index_bytes_per_sample else kept * index_bytes_per_sample / 1e9,
        # Every stored sample is added to the ANN index once (HNSW insert): CPU the hub tier must have.
        "index_cores": None if not index_add_us else cand_per_s * index_add_us / 1e6,
    }


def lines(plans: list[dict]) -> list[str]:
    """One line per fleet, as the bench prints them."""
    out = []
    for p in plans:
        hubs = ", ".join(f"{n if n is not None else '?'} on {e}" for e, n in p["hub_processes"].items())
        agent = f"{p['agent_cpu_share']:.2f} core/camera" if p["agent_cpu_share"] else "agent ?"
        index = f"{p['index_gb_retained']:.0f} GB" if p["index_gb_retained"] else "?"
        if p.get("index_cores"):
            index += f" (+{p['index_cores']:.2f} core for inserts)"
        out.append(f"sizing {p['cameras']:>6} cameras @ {FPS:g} fps: {p['candidates_per_s']:.1f} candidates/s; "
                   f"relays {p['relays'] if p['relays'] is not None else '?'}; hub processes {hubs}; "
                   f"disk {p['db_gb_per_day'] + p['blobs_gb_per_day']:.1f} GB/day "
                   f"({p['disk_tb_retained']:.1f} TB/{RETENTION_DAYS:g} d); index RAM {index} after "
                   f"{p['samples_retained'] / 1e6:.0f}M samples; {agent}")
    return out


ASSUMPTIONS = " ".join(__doc__.split("Assumptions (written into the report beside the figures):\n", 1)[1].split())
for _name in ("FPS", "PER_HOUR", "CANDIDATE_KB", "UTILISATION", "RETENTION_DAYS"):
    ASSUMPTIONS = ASSUMPTIONS.replace(_name, f"{globals()[_name]:g}")
