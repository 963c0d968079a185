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
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import click
import numpy as np

from .loop_plot import plot
from .loop_scenes import ScenesLoopConfig, run_scenes_bench

ARMS = ("random", "threshold", "central", "edgeloop")
EXTRA_ARMS = ("oracle",)  # only when asked for: it reads the ground truth
# The onebox demo's signal sets (edgeloop.onebox.AGENT_SIGNALS / RELAY_SIGNALS), restated so that this
# module does not import the process-orchestration code.
AGENT_SIGNALS = {"least_confidence": 1.0, "margin": 0.5, "random": 0.1}
RELAY_SIGNALS = {"least_confidence": 1.0, "entropy": 0.5}
NUM_CLASSES = 10


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


class _Cand:
    """A candidate as the tiers see it: Candidate-like for the sampling library."""

    __slots__ = ("sample_id", "camera_id", "index", "site", "captured_at", "probs", "embedding", "predicted",
                 "value", "nbytes")

    def __init__(self, camera_id: str, index: int, site: str, captured_at: float, probs, embedding):
        self.sample_id = f"{camera_id}-{index:09d}"  # time-ordered per camera, unique in the fleet
        self.camera_id, self.index, self.site, self.captured_at = camera_id, index, site, captured_at
        self.probs, self.embedding = probs, embedding
        self.predicted = int(np.argmax(probs))
        self.value = 0.0
        self.nbytes = 0


def _signals(spec: dict[str, float], band=None):
    from edgeloop.shared.config import SignalConfig

    extra = {} if band is None else {"low": band[0], "high": band[1]}
    return tuple(SignalConfig(k, w, **(extra if k == "confidence_band" else {})) for k, w in spec.items())


def _hub_select(rows: list[dict], budget: int, strategy: str, seed: int,
                labeled_embeddings: np.ndarray | None) -> dict[str, float]:
    """The hub service's select_for_labeling; the diversity strategies see what is labeled."""
    from edgeloop.hub import selection

    kwargs = {"labeled_embeddings": labeled_embeddings} if strategy in ("hybrid", "coreset") else {}
    return selection.select_for_labeling(rows, budget, strategy=strategy, seed=seed, **kwargs)


class _Round:
    """One round of one arm: tiers, labels, training, evaluation."""

    def __init__(self, cfg: LoopConfig, seed: int, round_no: int, frames: dict):
        self.cfg, self.seed, self.round_no, self.frames = cfg, seed, round_no, frames

    def infer(self, runtime, sites: dict[str, str]) -> dict[str, list[_Cand]]:
        out = {}
        for cam, frs in self.frames.items():
            preds = []
            for i in range(0, len(frs), 256):
                preds += runtime.predict_batch([f.image for f in frs[i:i + 256]])
            out[cam] = [_Cand(cam, f.index, sites[cam], f.captured_at, p.probs, p.embedding) for f, p in zip(frs, preds)]
        return out

    def agent(self, arm: str, cands: dict[str, list[_Cand]]) -> list[_Cand]:
        from edgeloop.shared.config import Budget
        from edgeloop.shared.sampling import Observation, WindowedSelector, score

        if arm in ("central", "oracle"):
            return [c for cam in cands for c in cands[cam]]
        signals = {"random": _signals({"random": 1.0}),
                   "threshold": _signals({"confidence_band": 1.0, "random": 1e-3}, self.cfg.band),
                   "edgeloop": _signals(AGENT_SIGNALS)}[arm]
        min_value = 1.0 if arm == "threshold" else -math.inf  # threshold: only frames inside the band
        kept = []
        for cam in sorted(cands):  # one selector per device
            sel = WindowedSelector(Budget(per_hour=self.cfg.agent_per_hour, window_s=self.cfg.window_s), min_value)
            for c in cands[cam]:
                c.value = score(Observation.from_candidate(c), signals, self.seed)[0]
                sel.offer(c)
            kept += sel.close_until(None)
        return kept

    def relay(self, arm: str, uplinked: list[_Cand], cams_per_site: dict[str, int]) -> list[_Cand]:
        from edgeloop.shared.config import Budget
        from edgeloop.shared.sampling import Observation, WindowedSelector, score, select_diverse

        if arm in ("central", "oracle", "threshold"):  # no relay budget / no relay stage: everything goes on
            return list(uplinked)
        kept = []
        for site in sorted(cams_per_site):
            items = [c for c in uplinked if c.site == site]
            budget = Budget(per_hour=self.cfg.relay_per_hour_per_agent * cams_per_site[site], window_s=self.cfg.window_s)
            if arm == "random":
                sel = WindowedSelector(budget)
                sig = _signals({"random": 1.0})
                for c in items:
                    c.value = score(Observation.from_candidate(c), sig, self.seed + 7919)[0]  # not the agent's draw
                    sel.offer(c)
                kept += sel.close_until(None)
                continue
            # The relay service's own selector with its diversity picker (edgeloop.onebox.RELAY_POLICY).
            sel = WindowedSelector(budget, pick=lambda pool, k, max_bytes: select_diverse(
                pool, k, max_bytes=max_bytes, dedup_threshold=self.cfg.dedup, balance_classes=True,
                num_classes=NUM_CLASSES))
            sig = _signals(RELAY_SIGNALS)
            for c in items:
                c.value = score(Observation.from_candidate(c), sig, self.seed)[0]
                sel.offer(c)
            kept += sel.close_until(None)
        return kept

    def hub(self, arm: str, pool: list[_Cand], labeled_embeddings: np.ndarray | None,
            truth: Callable[[str, int], int]) -> tuple[list[_Cand], str]:
        k = self.cfg.labels
        if arm == "oracle":  # the frames the model gets wrong, at random; then any others
            rng = np.random.default_rng([self.seed, self.round_no, 7])
            shuffled = [pool[i] for i in rng.permutation(len(pool))]
            is_wrong = [truth(c.camera_id, c.index) != c.predicted for c in shuffled]
            wrong = [c for c, w in zip(shuffled, is_wrong) if w]
            right = [c for c, w in zip(shuffled, is_wrong) if not w]
            return (wrong + right)[:k], "oracle"
        rows = [{"sample_id": c.sample_id, "probs": c.probs, "embedding": c.embedding, "captured_at": c.captured_at}
                for c in pool]
        hub_seed = self.seed * 1000 + self.round_no
        strategy = {"random": "random", "threshold": "random", "central": "uncertainty", "edgeloop": "hybrid"}[arm]
        if arm == "threshold" and len(pool) <= k:
            return list(pool), "all"
        chosen = _hub_select(rows, k, strategy, hub_seed, labeled_embeddings)
        by_id = {c.sample_id: c for c in pool}
        return [by_id[s] for s in sorted(chosen, key=lambda s: (-chosen[s], s))], strategy


def _evaluate(result, version: str, parent: str | None, golden) -> tuple:
    from edgeloop.hub.training import classifier as training
    from edgeloop.shared.runtime import ModelRuntime

    onnx, manifest = training.export_onnx(result.net, version=version, parent=parent, parity_frames=golden.images[:16])
    runtime = ModelRuntime.load(onnx, manifest, threads=2)
    return runtime, training.evaluate(runtime, golden.images, golden.labels, golden.slices)


def _run_seed(cfg: LoopConfig, seed: int, step: Callable[[str], None]) -> dict:
    from edgeloop.hub.training import classifier as training
    from edgeloop.shared.images import encode_jpeg
    from edgeloop.sim import World

    world = World(seed=seed)
    golden = world.golden_set(per_condition=cfg.golden_per_condition)
    seed_set = world.seed_set(n=cfg.seed_set)
    cams = world.camera_ids(cfg.cameras)
    sites = {cam: f"site-{i % cfg.sites}" for i, cam in enumerate(cams)}
    cams_per_site = {s: sum(1 for c in cams if sites[c] == s) for s in sorted(set(sites.values()))}
    h, w = golden.images.shape[1:3]

    r0 = training.train(seed_set.images, seed_set.labels, epochs=cfg.seed_epochs, seed=seed)
    rt0, m0 = _evaluate(r0, "v0", None, golden)
    step(f"seed {seed}: seed model {m0['accuracy']:.3f}")
    arms = {}
    for arm in cfg.arms:
        arms[arm] = {"state": r0.state, "runtime": rt0, "images": [seed_set.images], "labels": [seed_set.labels],
                     "n_labeled": len(seed_set), "accuracy": [m0["accuracy"]], "per_slice": [m0["per_slice"]],
                     "labels_used": [len(seed_set)], "rounds": [], "hub_strategy": None}
    for r in range(1, cfg.rounds + 1):
        start = (r - 1) * cfg.frames
        frames = {cam: [world.frame(cam, i) for i in range(start, start + cfg.frames)] for cam in cams}
        images = {(f.camera_id, f.index): f.image for frs in frames.values() for f in frs}
        sizes: dict[tuple[str, int], int] = {}

        def jpeg_size(cam: str, index: int) -> int:  # encoded only when something uplinks it, once per round
            key = (cam, index)
            if key not in sizes:
                sizes[key] = len(encode_jpeg(images[key]))
            return sizes[key]

        rnd = _Round(cfg, seed, r, frames)
        n_frames = cfg.cameras * cfg.frames
        # windows of the capture clock this round touches (every camera shares the clock)
        n_windows = len({math.floor(f.captured_at / cfg.window_s) for f in frames[cams[0]]})
        for arm in cfg.arms:
            a = arms[arm]
            cands = rnd.infer(a["runtime"], sites)
            up = rnd.agent(arm, cands)
            for c in up:
                c.nbytes = jpeg_size(c.camera_id, c.index)
            fwd = rnd.relay(arm, up, cams_per_site)
            labeled_emb = None
            if arm == "edgeloop":  # what is labeled, seen through the current model
                imgs = np.concatenate(a["images"])
                labeled_emb = np.concatenate([np.stack([p.embedding for p in a["runtime"].predict_batch(imgs[i:i + 256])])
                                              for i in range(0, len(imgs), 256)])
            chosen, used = rnd.hub(arm, fwd, labeled_emb, world.truth)
            if used != "all" or a["hub_strategy"] is None:
                a["hub_strategy"] = used
            new_labels = np.asarray([world.truth(c.camera_id, c.index) for c in chosen], np.int64)
            if chosen:
                a["images"].append(np.stack([images[(c.camera_id, c.index)] for c in chosen]))
                a["labels"].append(new_labels)
            a["n_labeled"] += len(chosen)
            res = training.train(np.concatenate(a["images"]), np.concatenate(a["labels"]), parent_state=a["state"],
                                 epochs=cfg.epochs, seed=seed * 1000 + r)
            a["runtime"], m = _evaluate(res, f"v{r}", f"v{r - 1}", golden)
            a["state"] = res.state
            a["accuracy"].append(m["accuracy"])
            a["per_slice"].append(m["per_slice"])
            a["labels_used"].append(a["n_labeled"])
            agent_budget = math.floor(cfg.agent_per_hour * cfg.window_s / 3600.0 * n_windows + 1e-9) * cfg.cameras \
                if arm not in ("central", "oracle") else None
            relay_budget = sum(math.floor(cfg.relay_per_hour_per_agent * n * cfg.window_s / 3600.0 * n_windows + 1e-9)
                               for n in cams_per_site.values()) if arm in ("random", "edgeloop") else None
            a["rounds"].append({
                "frames": n_frames, "agent_kept": len(up), "relay_kept": len(fwd), "labeled": len(chosen),
                "budgets": {"agent": agent_budget, "relay": relay_budget, "labels": cfg.labels},
                "night_labeled": sum(1 for c in chosen if world.condition(c.camera_id, c.index) == "night"),
                # how many of the labeled frames (and of the hub's pool) the labeling model got wrong
                "wrong_labeled": sum(1 for c in chosen if world.truth(c.camera_id, c.index) != c.predicted),
                "wrong_in_pool": sum(1 for c in fwd if world.truth(c.camera_id, c.index) != c.predicted),
                "bytes": {"raw": n_frames * h * w * 3, "agent_to_relay": sum(c.nbytes for c in up),
                          "relay_to_hub": sum(c.nbytes for c in fwd)}})
            step(f"seed {seed} round {r} {arm}: {m['accuracy']:.3f} ({a['n_labeled']} labels)")
    return {arm: {k: v for k, v in a.items() if k not in ("state", "runtime", "images", "labels")}
            for arm, a in arms.items()}


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
    per_seed = [_run_seed(cfg, s, step) for s in seeds]
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
        report = run(lambda msg: bar.update(task, advance=1, description=msg))
    for line in report["lines"]:
        click.echo(line)
    click.echo(f"target {report['target']:.4f} ({report['target_rule']}); "
               f"wrote {out / 'loop.json'} and {out / 'loop.png'} ({report['plot']}) in {report['seconds']}s")
