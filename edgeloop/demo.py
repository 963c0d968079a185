"""`edgeloop demo`: the whole loop on one box, round after round, measured.

Round 0 is the seed model (trained on a labeled seed set that has no night frames). Each later
round: every agent runs `--frames` frames of its simulated camera with the current model and keeps
the best under its budget; relays keep the best of their site; the hub selects `--labels` for
labeling; the simulated labeler answers; the hub fine-tunes a new model from its parent, evaluates
it on the held-out golden set, and rolls it out down the tree.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from edgeloop.onebox import OneBox, OneBoxSettings
from edgeloop.procs import sigterm_unwinds

console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def _row(round_no: int, version: str, train: dict, frames: dict, nbytes: dict) -> dict:
    """A round of report.json: a classifier's accuracy, or a detector's map50 and map (COCO mAP@0.5 and
    mAP@0.5:0.95); per_slice is the same figure (accuracy or mAP@0.5) per lighting slice."""
    m = train["metrics"]
    figures = {"map50": round(m["map50"], 4), "map": round(m["map"], 4)} if "map50" in m else {
        "accuracy": round(m["accuracy"], 4)}
    return {"round": round_no, "model_version": version, "labels_total": train["labels_total"], **figures,
            "per_slice": {k: round(v, 4) for k, v in sorted(m["per_slice"].items())},
            "promoted": train.get("promoted", True), "gate": train.get("gate") or m.get("gate"),
            "frames": frames, "bytes": nbytes}


def _table(rounds: list[dict]) -> Table:
    slices = sorted({k for r in rounds for k in r["per_slice"]})
    figures = ["map50", "map"] if "map50" in rounds[0] else ["accuracy"]
    t = Table(title="edgeloop demo")
    for col in ["round", "model", "promoted", "labels", *figures, *slices, "seen", "agent kept", "relay kept",
                "selected", "raw MB", "agent→relay KB", "relay→hub KB", "models↓ KB"]:
        t.add_column(col, justify="right")
    for r in rounds:
        f, b = r["frames"], r["bytes"]
        t.add_row(str(r["round"]), r["model_version"], "yes" if r["promoted"] else "no", str(r["labels_total"]),
                  *[f"{r[k]:.3f}" for k in figures],
                  *[f"{r['per_slice'].get(s, 0):.3f}" for s in slices], str(f["seen"]), str(f["agent_kept"]),
                  str(f["relay_kept"]), str(f["hub_selected"]), f"{b['raw'] / 1e6:.1f}", f"{b['agent_to_relay'] / 1e3:.0f}",
                  f"{b['relay_to_hub'] / 1e3:.0f}", f"{b['models_down'] / 1e3:.0f}")
    return t


def run_demo(s: OneBoxSettings, rounds: int, labels_per_round: int, strategy: str = "hybrid") -> dict:
    box = OneBox(s)
    t_start = time.monotonic()
    report = {"broker": s.broker, "task": s.task, "settings": {"agents": s.agents, "relays": s.relays, "rounds": rounds,
                                                 "frames_per_round": s.frames_per_round,
                                                 "labels_per_round": labels_per_round, "seed": s.seed,
                                                 "strategy": strategy, "fps": s.fps},
              "rounds": []}
    try:
        with console.status("[bold]starting") as status:
            box.start_services(lambda text: status.update(f"[bold]{text}"))
            status.update(f"[bold]starting {s.agents} agents")
            box.start_agents()
            hub = box.hub
        v0 = hub.get("/api/v1/stats")["desired"]
        seed_model = next(m for m in hub.get("/api/v1/models")["models"] if m["version"] == v0)
        zero = {"seen": 0, "agent_kept": 0, "relay_kept": 0, "hub_selected": 0, "labeled": 0}
        zb = {"raw": 0, "agent_to_relay": 0, "relay_to_hub": 0, "models_down": 0}
        report["rounds"].append(_row(0, v0, {"metrics": seed_model["metrics"],
                                             "labels_total": seed_model["labels_total"]}, zero, zb))
        console.print(_table(report["rounds"]))
        version, before = v0, {k: 0 for k in ("seen", "agent_kept", "relay_kept", "raw", "agent_to_relay",
                                               "relay_to_hub", "models_down")}
        for r in range(1, rounds + 1):
            with console.status(f"[bold]round {r}: model {version} going down to the agents") as status:
                box.wait(f"round {r} to finish", lambda: box.round_done(version, s.frames_per_round), timeout=600,
                         progress=lambda d: status.update(f"[bold]round {r} with {version}: {d}" if d is not True
                                                          else f"[bold]round {r}: done"))
                now = box.totals()
                status.update(f"[bold]round {r}: selecting {labels_per_round} samples for labeling")
                selected = hub.post("/api/v1/selection", {"budget": labels_per_round, "strategy": strategy,
                                                            "dedup_threshold": s.dedup_threshold})["selected"]
                from edgeloop.sim.oracle import label_queue

                labeled = label_queue(hub, box.world())
                status.update(f"[bold]round {r}: training a new model from {version} on the hub")
                train = hub.train({"epochs": s.epochs})
                if train["promoted"]:
                    hub.post("/api/v1/desired", {"version": train["version"]})
            if not train["promoted"]:  # the fleet keeps its model; the next round trains from it again
                console.print(f"round {r}: {train['version']} refused by the gate, {version} stays: "
                              + "; ".join(train["gate"]["reasons"]))
            d = {k: now[k] - before[k] for k in before}
            report["rounds"].append(_row(r, train["version"], train, {
                "seen": d["seen"], "agent_kept": d["agent_kept"], "relay_kept": d["relay_kept"],
                "hub_selected": len(selected), "labeled": labeled},
                {k: d[k] for k in ("raw", "agent_to_relay", "relay_to_hub", "models_down")}))
            before = now
            version = train["version"] if train["promoted"] else version
            console.print(_table(report["rounds"]))
        # The last model goes down too: wait until every agent runs it.
        with console.status(f"[bold]rolling {version} out to every agent"):
            box.wait(f"every agent to run {version}", lambda: all(
                box.agent_states().get(d) and box.agent_states()[d].model_version == version for d in box.agent_ids),
                timeout=120)
        report["final_model_on_agents"] = version
    finally:
        codes = box.stop()
        report["exit_codes"] = codes
    report["seconds"] = round(time.monotonic() - t_start, 1)
    return report


@click.command()
@click.option("--task", type=click.Choice(["detect", "classify"]), default="detect", show_default=True,
              help="detect: a detector on the scenes world (video-like streams, boxes); classify: the digits world.")
@click.option("--rounds", default=3, show_default=True, help="Rounds of the loop after the seed model.")
@click.option("--agents", default=4, show_default=True, help="Simulated devices (one camera each).")
@click.option("--relays", default=2, show_default=True, help="Relays, one site each; agents spread over them.")
@click.option("--broker", type=click.Choice(["embedded", "mosquitto"]), default="embedded", show_default=True,
              help="embedded: amqtt in a child process (zero set-up); mosquitto: the real thing.")
@click.option("--frames", default=600, show_default=True, help="Frames each camera shows per round.")
@click.option("--labels", default=None, type=int, help="Label budget per round at the hub [default: detect 60, classify 100].")
@click.option("--epochs", default=None, type=int,
              help="Training epochs per round [default: detect 6 (its seed model 14), classify 15].")
@click.option("--fps", default=2.0, show_default=True,
              help="detect: the cameras' frame rate (600 frames at 2 fps = 5 minutes of a 10-minute sim day).")
@click.option("--strategy", type=click.Choice(["hybrid", "uncertainty", "coreset", "random"]), default="hybrid",
              show_default=True, help="How the hub spends its label budget.")
@click.option("--seed", default=0, show_default=True, help="Seed of the simulated world.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True,
              help="Output folder: report.json, logs/, and every service's data.")
def demo(task, rounds, agents, relays, broker, frames, labels, epochs, fps, strategy, seed, out) -> None:
    """Run the whole loop on one box: broker, hub, relays and agents as separate processes.

    Prints a table per round and writes OUT/report.json.

    \b
    Examples (detection on the scenes world, what `make demo` runs; then the digits classifier):
      edgeloop demo --task detect --rounds 3 --agents 4 --relays 2 --out runs/demo
      edgeloop demo --task classify --out runs/demo-classify
    """
    sigterm_unwinds()
    marker = out / ".edgeloop-demo"
    if out.exists() and any(out.iterdir()):
        if not marker.exists():
            raise click.UsageError(f"{out} is not empty and not an earlier demo's folder; pick another --out")
        import shutil

        shutil.rmtree(out)  # an earlier demo's folder: a demo starts from nothing
    out.mkdir(parents=True, exist_ok=True)
    marker.touch()
    if task == "detect":
        # Budgets in frames, whatever the frame rate: agents keep 1 in 10, relays 1 in 12 of what their
        # cameras saw. No near-duplicate removal by embedding: a detector's embedding is mostly its
        # camera's background, so a dark car and the empty dark lot it stands in are "duplicates".
        # The seed model trains long; each round fine-tunes it briefly on every label.
        s = OneBoxSettings(out=out, task=task, fps=fps, agents=agents, relays=relays, broker=broker,
                           frames_per_round=frames, seed=seed, epochs=epochs or 6, seed_epochs=14,
                           golden_per_condition=100, agent_per_hour=fps * 3600 / 10,
                           relay_per_hour_per_agent=fps * 3600 / 12, dedup_threshold=0.0)
    else:
        s = OneBoxSettings(out=out, task=task, agents=agents, relays=relays, broker=broker,
                           frames_per_round=frames, seed=seed, epochs=epochs or 15)
    report = run_demo(s, rounds, labels if labels is not None else 60 if task == "detect" else 100, strategy)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    first = report["rounds"][0]
    last = next(r for r in reversed(report["rounds"]) if r["promoted"])  # the model the fleet ends up running
    figure = "map50" if "map50" in first else "accuracy"
    console.print(f"{figure} {first[figure]:.3f} -> {last[figure]:.3f}; "
                  f"per slice {json.dumps(first['per_slice'])} -> {json.dumps(last['per_slice'])}")
    console.print(f"report: {out / 'report.json'} ({report['seconds']}s)")
