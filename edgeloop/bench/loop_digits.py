"""The digits world's arms for `edgeloop bench loop` (loop.py): one seed's run of every arm, round by
round: the device's inference, the agent's and relay's selection under their budgets, the hub's pick
of what to label, fine-tuning and evaluation on the golden set. loop.py holds the settings, the
summary over seeds and the command; what each arm does is in loop.py's docstring.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from .loop import LoopConfig

# The onebox demo's signal sets (edgeloop.onebox.AGENT_SIGNALS / RELAY_SIGNALS), restated so that this
# module does not import the process-orchestration code.
AGENT_SIGNALS = {"least_confidence": 1.0, "margin": 0.5, "random": 0.1}
RELAY_SIGNALS = {"least_confidence": 1.0, "entropy": 0.5}
NUM_CLASSES = 10


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


def run_seed(cfg: LoopConfig, seed: int, step: Callable[[str], None]) -> dict:
    """One world: the seed model, then cfg.rounds rounds of every arm in cfg.arms -> per arm its curve
    (accuracy, per_slice, labels_used) and per round its counts, budgets and bytes."""
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
