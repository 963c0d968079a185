"""`edgeloop bench loop`: does hierarchical selection save labels and bandwidth? Measured against the
alternatives, in one process (no broker, no HTTP), over several seeds of the simulated world.

Four arms share the world, the seed model, the label budget per round, the training recipe and the
golden set; only the way frames are thrown away differs:

- `random`: a random subset at every tier (agent and relay under their budgets, hub under the label budget);
- `threshold`: the device uploads frames whose confidence lies in [0.35, 0.65] (random among them if
  more than its budget), no relay stage, the hub labels what arrives (random among it if more than
  the label budget): how confidence-band active-learning uploads usually work;
- `central`: every frame goes up, the hub picks by uncertainty: the bandwidth-unlimited upper bound;
- `edgeloop`: the hierarchy: agent `WindowedSelector` on the agent signals, relay `select_diverse`
  per site window (near-duplicate removal, class balance on the predicted class, weight = value),
  hub `select_for_labeling(strategy="hybrid")` aware of the labeled embeddings.

One more arm runs only when asked for (`--arms random,oracle`): `oracle` sees every frame, like
`central`, and labels frames the current model gets *wrong* (ground truth, random among them):
knowledge no selector has, so it shows roughly how many labels selection could save in this world.

The agent and relay budgets default to what keeps the hierarchy under 5 % of central's bytes
(both links counted): agents keep about 1 frame in 22, relays forward 100 of the 108 they get, and
the hub labels what arrives. Wider budgets give the later tiers more choice for more bytes
(`--agent-per-hour 600 --relay-per-hour-per-agent 300`: 12.6 % of central's bytes, no better here).

The selection code is the services' own (`edgeloop.shared.sampling`, `edgeloop.hub.selection`), the
training is the hub's (`edgeloop.hub.training`: fine-tune the child from its parent on everything
labeled, export to ONNX, evaluate the ONNX artifact on `World.golden_set`). Inference is the device's
`ModelRuntime`. Everything is seeded: a run is reproducible on a given machine.

Accounting, per round: the hub's pool is what reached it this round (earlier leftovers are stale:
they were scored by an older model). Every uplinked frame is counted as its JPEG bytes
(`encode_jpeg`) on the agent -> relay link and again on the relay -> hub link if it goes on; a
device upload with no relay stage (`threshold`) still crosses both the site network and the site's
WAN link, so it is counted on both, as `central`'s are. `raw` is frames x H x W x 3.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import click
import numpy as np

from .loop_digits import AGENT_SIGNALS, NUM_CLASSES, RELAY_SIGNALS, run_seed  # noqa: F401 (constants re-exported)
from .loop_plot import plot
from .loop_scenes import ScenesLoopConfig, run_scenes_bench

ARMS = ("random", "threshold", "central", "edgeloop")
EXTRA_ARMS = ("oracle",)  # only when asked for: it reads the ground truth


@dataclass
class LoopConfig:
    seeds: int = 3
    rounds: int = 5
    labels: int = 100                      # label budget per round at the hub
    cameras: int = 4
    sites: int = 2                         # cameras spread round-robin over sites (one relay each)
    frames: int = 600                      # frames per camera per round (1 fps of capture time)
    epochs: int = 6                        # fine-tuning epochs per round (8: ~1.4x the time)
    seed_epochs: int = 15                  # epochs of the round-0 seed model (shared by every arm)
    seed_set: int = 300                    # labeled day/dusk frames behind the seed model
    golden_per_condition: int = 300
    agent_per_hour: float = 165.0          # per camera; a camera runs 3600 frames per hour
    relay_per_hour_per_agent: float = 160.0
    window_s: float = 60.0
    band: tuple[float, float] = (0.35, 0.65)
    dedup: float = 0.02                    # cosine distance for near duplicates at the relay
    target: float | None = None            # None: 0.95 x central's final mean accuracy
    base_seed: int = 0                     # world seeds are base_seed, base_seed + 1, ...
    arms: tuple[str, ...] = ARMS

    def __post_init__(self):
        bad = set(self.arms) - set(ARMS + EXTRA_ARMS)
        if bad:
            raise ValueError(f"unknown arms {sorted(bad)} (known: {', '.join(ARMS + EXTRA_ARMS)})")
        for name in ("seeds", "rounds", "labels", "cameras", "sites", "frames", "seed_set", "golden_per_condition"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("agent_per_hour", "relay_per_hour_per_agent"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        self.sites = min(self.sites, self.cameras)
        self.arms = tuple(self.arms)


def labels_to_target(labels: list[float], accuracy: list[float], target: float) -> float | None:
    """Labels needed to first reach `target` on the curve, interpolating linearly between rounds."""
    for i, (x, y) in enumerate(zip(labels, accuracy)):
        if y >= target:
            if i == 0:
                return float(x)
            x0, y0 = labels[i - 1], accuracy[i - 1]
            return float(x0 + (target - y0) / (y - y0) * (x - x0))
    return None


def _summarise(cfg: LoopConfig, per_seed: list[dict], seeds: list[int]) -> dict:
    labels = [cfg.seed_set + r * cfg.labels for r in range(cfg.rounds + 1)]
    out = {"settings": {**asdict(cfg), "world_seeds": seeds}, "labels": labels, "arms": {}}
    for arm in cfg.arms:
        runs = [s[arm] for s in per_seed]
        acc = np.array([r["accuracy"] for r in runs])
        used = np.array([r["labels_used"] for r in runs], dtype=float)
        slices = sorted(runs[0]["per_slice"][0])
        per_slice = [{s: round(float(np.mean([r["per_slice"][i][s] for r in runs])), 4) for s in slices}
                     for i in range(cfg.rounds + 1)]
        tiers = {}
        for key in ("raw", "agent_to_relay", "relay_to_hub"):
            tiers[key] = int(round(np.mean([sum(rd["bytes"][key] for rd in r["rounds"]) for r in runs])))
        rounds = []
        for i in range(cfg.rounds):
            rd = [r["rounds"][i] for r in runs]
            rounds.append({**{k: float(np.mean([x[k] for x in rd]))
                              for k in ("frames", "agent_kept", "relay_kept", "labeled", "night_labeled",
                                        "wrong_labeled", "wrong_in_pool")},
                           "budgets": rd[0]["budgets"],
                           "bytes": {k: float(np.mean([x["bytes"][k] for x in rd])) for k in rd[0]["bytes"]}})
        out["arms"][arm] = {
            "labels": labels,
            "labels_used": [float(v) for v in used.mean(axis=0)],
            "accuracy_mean": [round(float(v), 4) for v in acc.mean(axis=0)],
            "accuracy_std": [round(float(v), 4) for v in acc.std(axis=0)],
            "accuracy_per_seed": acc.round(4).tolist(),
            "per_slice": per_slice,
            "bytes_uplinked": {"total": tiers["agent_to_relay"] + tiers["relay_to_hub"], **tiers},
            "rounds": rounds,
            "hub_strategy": runs[0]["hub_strategy"],
        }
    if cfg.target is not None:
        target, rule = float(cfg.target), "--target"
    elif "central" in out["arms"]:
        target, rule = 0.95 * out["arms"]["central"]["accuracy_mean"][-1], "0.95 x central's final mean accuracy"
    else:
        target, rule = 0.95 * max(a["accuracy_mean"][-1] for a in out["arms"].values()), \
            "0.95 x the best final mean accuracy"
    out["target"], out["target_rule"] = round(target, 4), rule
    for a in out["arms"].values():
        ltt = labels_to_target(a["labels_used"], a["accuracy_mean"], target)
        a["labels_to_target"] = None if ltt is None else round(ltt, 1)
        # The seed set is the same for every arm: the loop's own labels are what selection can save.
        a["loop_labels_to_target"] = None if ltt is None else round(ltt - cfg.seed_set, 1)
    return out


def run_loop_bench(cfg: LoopConfig, out: Path | None = None,
                   progress: Callable[[str], None] | None = None) -> dict:
    """Run every arm over cfg.seeds worlds; -> the report (also written to OUT/loop.json, OUT/loop.png)."""
    import torch

    t0 = time.monotonic()
    torch.set_num_threads(2)
    step = progress or (lambda msg: None)
    seeds = [cfg.base_seed + i for i in range(cfg.seeds)]
    per_seed = [run_seed(cfg, s, step) for s in seeds]
    report = _summarise(cfg, per_seed, seeds)
    report["lines"] = summary_lines(report)
    report["seconds"] = round(time.monotonic() - t0, 1)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        report["plot"] = plot(report, out / "loop.png")
        (out / "loop.json").write_text(json.dumps(report, indent=1))
    return report


# --- the printed comparison -------------------------------------------------------------------

def _ratio(a, b) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def _labels(v) -> str:
    return "never" if v is None else f"{v:.0f}"


def summary_lines(report: dict) -> list[str]:
    arms = report["arms"]
    rnd, cen = arms.get("random"), arms.get("central")
    lines = []
    for name, a in arms.items():
        ltt, loop_ltt = a["labels_to_target"], a["loop_labels_to_target"]
        parts = [f"labels_to_target {_labels(ltt)} (loop {_labels(loop_ltt)})"]
        if rnd is not None and name != "random":
            parts[0] += (f" vs random {_labels(rnd['labels_to_target'])} (loop {_labels(rnd['loop_labels_to_target'])}:"
                         f" {_ratio(loop_ltt, rnd['loop_labels_to_target'])})")
        if cen is not None:
            pct = 100.0 * a["bytes_uplinked"]["total"] / max(1, cen["bytes_uplinked"]["total"])
            parts.append(f"bytes {pct:.1f}% of central")
            worst = min(x / y for x, y in zip(a["accuracy_mean"][1:], cen["accuracy_mean"][1:]))
            parts.append(f"accuracy at equal labels {_ratio(a['accuracy_mean'][-1], cen['accuracy_mean'][-1])} central "
                         f"(worst round {worst:.2f}x)")
        parts.append(f"final {a['accuracy_mean'][-1]:.3f}±{a['accuracy_std'][-1]:.3f}")
        lines.append(f"{name}: " + ", ".join(parts))
    return lines


# --- the command ------------------------------------------------------------------------------

@click.command("loop")
@click.option("--seeds", default=3, show_default=True, help="Simulated worlds (seeds 0..N-1) to average over.")
@click.option("--rounds", default=5, show_default=True, help="Rounds of the loop after the seed model.")
@click.option("--labels", default=100, show_default=True, help="Label budget per round (every arm).")
@click.option("--cameras", default=4, show_default=True, help="Cameras (one agent each), spread over --sites.")
@click.option("--sites", default=2, show_default=True, help="Sites, one relay each.")
@click.option("--frames", default=600, show_default=True, help="Frames per camera per round.")
@click.option("--epochs", default=LoopConfig.epochs, show_default=True, help="Fine-tuning epochs per round.")
@click.option("--seed-epochs", default=LoopConfig.seed_epochs, show_default=True,
              help="Epochs of the round-0 seed model (shared by every arm).")
@click.option("--seed-set", default=LoopConfig.seed_set, show_default=True,
              help="Labeled day/dusk frames behind the seed model (round 0 of every arm).")
@click.option("--golden", "golden_per_condition", default=300, show_default=True,
              help="Golden-set frames per lighting condition.")
@click.option("--agent-per-hour", default=LoopConfig.agent_per_hour, show_default=True,
              help="Agent budget: frames kept per camera per hour of capture (random, threshold, edgeloop).")
@click.option("--relay-per-hour-per-agent", default=LoopConfig.relay_per_hour_per_agent, show_default=True,
              help="Relay budget: frames forwarded per agent per hour (random, edgeloop).")
@click.option("--arms", default=",".join(ARMS), show_default=True,
              help=f"Comma-separated arms to run; also {', '.join(EXTRA_ARMS)} (labels what the model gets wrong).")
@click.option("--target", type=float, default=None,
              help="Accuracy target for labels_to_target [default: 0.95 x central's final mean accuracy].")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/bench"), show_default=True,
              help="Output folder: loop.json and loop.png.")
@click.option("--world", type=click.Choice(["digits", "scenes"]), default="digits", show_default=True,
              help="digits: independent frames, classification; scenes: video-like streams, detection.")
@click.option("--task", type=click.Choice(["classify", "detect"]), default=None,
              help="The world's task (digits: classify, scenes: detect) [default: the world's].")
@click.option("--fps", default="5", show_default=True,
              help="scenes: the cameras' frame rate; a comma-separated list (1,5,15) sweeps it over the same "
                   "minutes of world time.")
@click.option("--minutes", default=ScenesLoopConfig.minutes, show_default=True,
              help="scenes: world minutes per camera per round.")
def loop(seeds, rounds, labels, cameras, sites, frames, epochs, seed_epochs, seed_set, golden_per_condition,
         agent_per_hour, relay_per_hour_per_agent, arms, target, out, world, task, fps, minutes) -> None:
    """Labels and bytes saved by hierarchical selection, against random, threshold and central arms.

    Runs the whole loop in one process over several seeds of the simulated world, with the services'
    own selection, training and evaluation code, and prints per arm the labels needed to reach the
    target accuracy, the bytes uplinked and the accuracy at equal labels. Writes OUT/loop.json and
    OUT/loop.png (accuracy vs labels, mean ± std over seeds).

    On the scenes world (--world scenes --task detect) the arms are random, every_nth, threshold,
    central and edgeloop (oracle on request), the metric is mAP@0.5 and the report adds boxes labeled
    and the share of near-duplicate labels; options left at the digits defaults take the scenes ones.

    \b
    Examples:
      edgeloop bench loop --seeds 3 --rounds 5 --labels 100 --cameras 4 --frames 600 --out runs/bench
      edgeloop bench loop --world scenes --task detect --fps 5 --seeds 3 --out runs/bench-scenes
    """
    arm_list = tuple(a.strip() for a in arms.split(",") if a.strip())
    if (task or ("detect" if world == "scenes" else "classify")) != ("detect" if world == "scenes" else "classify"):
        raise click.UsageError(f"the {world} world's task is {'detect' if world == 'scenes' else 'classify'}")
    if world == "scenes":
        ctx = click.get_current_context()
        given = {k: v for k, v in dict(seeds=seeds, rounds=rounds, labels=labels, cameras=cameras, sites=sites,
                                       epochs=epochs, seed_epochs=seed_epochs, seed_set=seed_set,
                                       golden_per_condition=golden_per_condition, agent_per_hour=agent_per_hour,
                                       relay_per_hour_per_agent=relay_per_hour_per_agent, target=target).items()
                 if ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT}
        if ctx.get_parameter_source("arms") != click.core.ParameterSource.DEFAULT:
            given["arms"] = arm_list
        try:
            cfg = ScenesLoopConfig(**given, minutes=minutes, fps=tuple(float(f) for f in fps.split(",") if f.strip()))
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        _run_with_progress(cfg.seeds * len(cfg.fps) * (1 + cfg.rounds * len(cfg.arms)),
                           lambda step: run_scenes_bench(cfg, out, progress=step), out)
        return
    try:
        cfg = LoopConfig(seeds=seeds, rounds=rounds, labels=labels, cameras=cameras, sites=sites, frames=frames,
                         epochs=epochs, seed_epochs=seed_epochs, seed_set=seed_set,
                         golden_per_condition=golden_per_condition, agent_per_hour=agent_per_hour,
                         relay_per_hour_per_agent=relay_per_hour_per_agent, target=target, arms=arm_list)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    _run_with_progress(cfg.seeds * (1 + cfg.rounds * len(cfg.arms)),
                       lambda step: run_loop_bench(cfg, out, progress=step), out)


def _run_with_progress(total: int, run: Callable, out: Path) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("bench loop", total=total)

        def step(msg: str) -> None:
            bar.update(task, advance=1, description=msg)
            if not sys.stderr.isatty():  # a log file gets a line a step, not one bar at the end
                console.print(msg)
        report = run(step)
    for line in report["lines"]:
        click.echo(line)
    click.echo(f"target {report['target']:.4f} ({report['target_rule']}); "
               f"wrote {out / 'loop.json'} and {out / 'loop.png'} ({report['plot']}) in {report['seconds']}s")
