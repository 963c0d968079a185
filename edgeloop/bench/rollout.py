"""`edgeloop bench rollout`: what a staged rollout costs the uplinks and how long it takes.

Real processes on loopback: mosquitto, the hub, R relays (one site each) and N agents in
firmware-sim's fleet mode (real agents, several per process). The fleet starts on v0; the hub
trains v1; then `rollout start --stages shadow:10%,canary:10%,full` runs to the end. Measured:
the artifact's size, the hub's and relays' model egress during the rollout (the hub should send
one artifact per relay, the relays one per device and shadow), and the seconds from the rollout's
start to every agent running v1.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import click

from edgeloop.procs import sigterm_unwinds

from .scratch import fresh_box

STAGES = "shadow:10%,canary:10%,full"
# Gates for a benchmark: judge on few frames (agents run at --fps), agreement a trained sibling meets.
# Latency is not what this benchmark judges: a thousand agents on a 2-core box run slowly.
GATES = {"min_frames": 10, "min_agreement": 0.35, "max_latency_p95_ms": 60_000.0, "max_confidence_drift": 0.5,
         "stage_timeout_s": 900.0}


def model_egress(box) -> tuple[int, int]:
    """(hub -> relays, relays -> agents) model bytes so far."""
    hub = box.hub.get("/api/v1/stats").get("model_bytes_out", 0)
    relays = sum(r["counts"]["model_bytes_out"] for r in box.relay_status())
    return int(hub), int(relays)


def running(box, version: str) -> int:
    states = box.agent_states()
    return sum(1 for d in box.agent_ids if (st := states.get(d)) is not None and st.model_version == version)


def run_rollout_bench(agents: int, relays: int, out: Path, fps: float, procs_per_site: int, state_interval: float,
                      status) -> dict:
    from edgeloop.onebox import OneBox, OneBoxSettings

    per_site = math.ceil(agents / relays)
    s = OneBoxSettings(out=fresh_box(out), agents=0, relays=relays, broker="mosquitto", frames_per_round=10**9,
                       agent_per_hour=60, relay_per_hour_per_agent=None, seed_set=300, golden_per_condition=50)
    box = OneBox(s)
    try:
        box.start_services(status)
        status(f"starting {per_site * relays} agents in fleet mode ({relays} sites)")
        box.start_fleet(per_site, max_fps=fps, state_interval=state_interval, procs_per_site=procs_per_site)
        n = len(box.agent_ids)
        box.wait("every agent on v0", lambda: running(box, "v0") == n or f"{running(box, 'v0')}/{n} on v0",
                 timeout=600)
        status("training v1 at the hub")
        trained = box.hub.train({"epochs": 2})
        v1 = trained["version"]
        artifact = next(m for m in box.hub.get("/api/v1/models")["models"] if m["version"] == v1)
        # This measures distribution, not model quality: a quick sibling of v0 is what rolls out, and
        # the training gate may well refuse it, so the operator's override is used (and recorded).
        gate = trained.get("gate") or {}
        hub0, relays0 = model_egress(box)
        status(f"rolling {v1} out: {STAGES}")
        t0 = time.monotonic()
        r = box.hub.post("/api/v1/rollouts", {"model": v1, "group": "all", "stages": STAGES, "gates": GATES,
                                              "force": True})
        rid = r["rollout_id"]
        stage_times: dict[str, float] = {}

        def progress():
            ro = box.hub.get(f"/api/v1/rollouts/{rid}")
            stage_times.setdefault(ro["stage"], round(time.monotonic() - t0, 2))
            if ro["state"] in ("rolled_back", "aborted"):
                raise click.ClickException(f"the rollout was {ro['state']}: {ro.get('reason')}")
            done = running(box, v1)
            return (ro["state"] == "done" and done == n) or f"{ro['state']} {ro['stage']}: {done}/{n} on {v1}"

        box.wait("every agent on the new model", progress, timeout=1800)
        seconds = time.monotonic() - t0
        hub1, relays1 = model_egress(box)
        return {"agents": n, "relays": relays, "artifact_bytes": int(artifact["artifact_size"]),
                "hub_egress_bytes": hub1 - hub0, "relay_egress_bytes": relays1 - relays0,
                "seconds_to_full": round(seconds, 2), "stages": STAGES, "gates": GATES, "stage_started_at_s": stage_times,
                "fps_per_agent": fps, "state_interval_s": state_interval, "model": v1,
                "training_gate": {"passed": gate.get("passed"), "reasons": gate.get("reasons", [])}}
    finally:
        box.stop()


@click.command("rollout")
@click.option("--agents", default=200, show_default=True, help="Simulated agents (fleet mode, real agent code).")
@click.option("--relays", default=4, show_default=True, help="Relays, one site each.")
@click.option("--fps", default=2.0, show_default=True, help="Frames a second per agent.")
@click.option("--procs-per-site", default=1, show_default=True, help="Fleet processes per site.")
@click.option("--state-interval", default=2.0, show_default=True, help="Seconds between each agent's state reports.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/bench"), show_default=True)
def rollout(agents, relays, fps, procs_per_site, state_interval, out) -> None:
    """Roll a new model through shadow, canary and full over a simulated fleet; measure egress and time.

    Writes OUT/rollout.json with agents, relays, artifact_bytes, hub_egress_bytes, relay_egress_bytes
    and seconds_to_full (from `rollout start` to every agent running the new model).

    \b
    Example (1,000 agents need a lighter pace on a small box):
      edgeloop bench rollout --agents 200 --relays 4 --out runs/bench
      edgeloop bench rollout --agents 1000 --procs-per-site 3 --fps 0.25 --state-interval 5 --out runs/bench
    """
    from rich.console import Console

    sigterm_unwinds()
    console = Console(stderr=True)
    out.mkdir(parents=True, exist_ok=True)
    with console.status("starting") as spinner:
        fig = run_rollout_bench(agents, relays, out, fps, procs_per_site, state_interval,
                                lambda text: spinner.update(text))
    per_relay = fig["hub_egress_bytes"] / max(1, fig["artifact_bytes"] * fig["relays"])
    click.echo(f"agents {fig['agents']}, relays {fig['relays']}, artifact {fig['artifact_bytes']} bytes")
    click.echo(f"hub egress {fig['hub_egress_bytes']} bytes = {per_relay:.2f} artifact(s) per relay; "
               f"relay egress {fig['relay_egress_bytes']} bytes = "
               f"{fig['relay_egress_bytes'] / max(1, fig['artifact_bytes'] * fig['agents']):.2f} per agent")
    click.echo(f"seconds to full: {fig['seconds_to_full']} (stages started at {fig['stage_started_at_s']})")
    (out / "rollout.json").write_text(json.dumps(fig, indent=1))
    click.echo(f"wrote {out / 'rollout.json'}")
