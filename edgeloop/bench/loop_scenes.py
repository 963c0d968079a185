"""`edgeloop bench loop --world scenes --task detect`: label savings on video-like camera streams.

The scenes world's cameras see the same parked car for minutes, empty nights and rare classes that
pass a few times a day: the redundancy that selection exists to exploit. Every arm shares the world,
the seed detector, the label budget per round (frames), the training recipe and the golden set; only
the way frames are thrown away differs. Each arm runs the services' own code:

- the agent stage is the agent's `FrameSampler` (signals, window selector, JPEG encoding of what it
  keeps), fed the device runtime's predictions, one sampler per camera and round;
- the relay stage is what `relay.service.Relay` runs: rescoring with the relay's signals and a
  `WindowedSelector` per site with `window_picker` of the relay's policy;
- the hub stage is `hub.selection.select_for_labeling`; training is `train_detector` from the parent,
  exported to ONNX and judged by `evaluate_detector` (pycocotools mAP@0.5) on the golden set.

Arms:
- `random`: a uniform share of frames at every tier (agent, relay, hub);
- `every_nth`: the agent keeps every n-th frame, no relay stage, the hub labels at random; n is set
  per round so that it uplinks as many frames as `edgeloop`'s agents did (which run first);
- `threshold`: the agent uploads frames with at least one box scoring within `band` (Roboflow
  inference's close_to_threshold), under `threshold_per_hour` per camera; no relay stage; the hub
  labels at random;
- `central`: every frame goes up, the hub picks by uncertainty (the unlimited-bandwidth bound);
- `edgeloop`: the defaults a user gets (`edgeloop demo --task detect`'s agent signals and temporal
  de-duplication, relay signals and policy without embedding dedup, the hub's `hybrid` strategy);
- `edgeloop_plain` (opt-in): edgeloop without the agent's temporal de-duplication (an ablation);
- `edgeloop_tracks` (opt-in): edgeloop with track-aware selection on the agent (one candidate per
  track episode, `TrackGate(max_age_s=TRACK_MAX_AGE_S)`): not a default until it is measured to pay;
- `edgeloop_pseudo` (opt-in): edgeloop whose human labels also label, where the frames agree, the
  frames of the same camera within seconds that the hub holds unlabeled (hub/training/pseudo.py);
  trained on, counted apart (`pseudo_labels` a round, and how many were right by ground truth);
- `oracle` (opt-in): sees every frame and labels those the current model gets wrong (a missed or a
  false box at IoU 0.5, by ground truth), at random among them.

Accounting: an uplinked frame is its JPEG bytes on the agent -> relay link and again on relay -> hub
when it goes on; an arm with no relay stage still crosses both links. `boxes` counts ground-truth
boxes of the labeled frames (a labeler's time goes by boxes). A labeled frame is a near duplicate
when, by ground truth, another loop-labeled frame of its camera shows the same objects (track ids)
in nearly the same places (IoU >= 0.5 each) under the same light and weather (empty frames: the same
empty view).

World time: round r covers minutes [(r - 1) m, r m) of every camera, whatever the fps, so `--fps
1,5,15` sweeps the same minutes with more and more redundant frames.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from .loop_scenes_report import plottable, summarise
from .loop_scenes_truth import gets_wrong, near_duplicate

SCENES_ARMS = ("random", "every_nth", "threshold", "central", "edgeloop")
# opt-in: oracle reads the ground truth; edgeloop_plain is edgeloop without temporal de-duplication
# (the ablation)
SCENES_EXTRA_ARMS = ("oracle", "edgeloop_plain", "edgeloop_tracks", "edgeloop_pseudo")
# edgeloop's agents run before every_nth's, which matches their uplink count.
_ORDER = ("edgeloop", "random", "every_nth", "threshold", "central", "oracle", "edgeloop_plain", "edgeloop_tracks",
          "edgeloop_pseudo")
_EDGELOOP = ("edgeloop", "edgeloop_plain", "edgeloop_tracks", "edgeloop_pseudo")
TRACK_MAX_AGE_S = 2.0  # edgeloop_tracks: a track unseen this long ends (its object left, or was lost)


@dataclass
class ScenesLoopConfig:
    seeds: int = 3
    rounds: int = 3
    labels: int = 40                       # label budget per round at the hub (frames), every arm
    cameras: int = 4
    sites: int = 2
    minutes: float = 2.0                   # world minutes per camera per round (whatever the fps)
    fps: tuple[float, ...] = (5.0,)
    # Trained to a plateau, so that a round's mAP says what its labels taught, not how long it trained:
    # with 200 seed frames and 20 + 6 epochs a round, mAP rose as much with no new labels at all
    # (the seed set alone: 12 epochs 0.12, 24: 0.21, 36: 0.24, 48: 0.26 on world seed 0).
    epochs: int = 10                       # fine-tuning epochs per round, from the parent
    seed_epochs: int = 48
    seed_set: int = 60                     # small, so that 40 labels a round matter (60 frames, 48 epochs:
                                           # 0.08; then 12 epochs with no new labels 0.07, with 40: 0.12, 120: 0.17)
    golden_per_condition: int = 40
    agent_per_hour: float = 1000.0         # per camera (random, edgeloop): 1 frame in 18 at 5 fps
    relay_per_hour_per_agent: float = 600.0  # (random, edgeloop): about 5 % of central's bytes (5.5 % measured)
    threshold_per_hour: float = 1000.0     # threshold arm's per-camera upload limit
    band: tuple[float, float] = (0.25, 0.45)  # threshold arm: box scores just over the serving threshold
    window_s: float = 60.0
    dedup: float = 0.0                     # relay's and hub's embedding near-duplicate distance (the detection
                                           # demo's: none)
    target: float | None = None            # None: 0.95 x central's final mAP@0.5
    base_seed: int = 0
    arms: tuple[str, ...] = SCENES_ARMS
    size: tuple[int, int] = (320, 240)     # frame width, height

    def __post_init__(self):
        bad = set(self.arms) - set(SCENES_ARMS + SCENES_EXTRA_ARMS)
        if bad:
            raise ValueError(f"unknown arms {sorted(bad)} (known: {', '.join(SCENES_ARMS + SCENES_EXTRA_ARMS)})")
        for name in ("seeds", "rounds", "labels", "cameras", "sites", "seed_set", "golden_per_condition"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("agent_per_hour", "relay_per_hour_per_agent", "threshold_per_hour", "minutes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        self.fps = tuple(float(f) for f in self.fps)
        if not self.fps or any(not 1.0 <= f <= 30.0 for f in self.fps):
            raise ValueError(f"fps must be one or more frame rates in 1..30, got {self.fps}")
        self.sites = min(self.sites, self.cameras)
        self.arms = tuple(a for a in _ORDER if a in self.arms)


# --- one round of one arm ------------------------------------------------------------------------

@dataclass
class _Up:
    """An uplinked frame as the relay and hub see it (a protocol Candidate's fields they read)."""

    sample_id: str
    camera_id: str
    index: int
    site: str
    captured_at: float
    probs: np.ndarray
    embedding: np.ndarray | None
    detections: np.ndarray | None
    nbytes: int
    tags: dict = field(default_factory=dict)
    value: float = 0.0
    reasons: tuple = ()

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probs))


def _sampling(signals: dict, per_hour: float | None, window_s: float, seed: int, min_value: float = 0.0,
              **policy):
    from edgeloop.shared.config import Budget, SamplingConfig, SignalConfig

    sigs = tuple(SignalConfig(k, **(v if isinstance(v, dict) else {"weight": v})) for k, v in signals.items())
    return SamplingConfig(budget=Budget(per_hour=per_hour, window_s=window_s), signals=sigs, seed=seed,
                          min_value=min_value, **policy)


class _Seen:
    """One round's frames and the predictions made of them, shared by the arms: a frame is rendered
    once, and a model predicts it once (in round 1 every arm runs the seed model). The defaults hold
    2,400 frames of 230 KB (550 MB) a round. Predictions are keyed by the runtime itself (it hashes
    by identity), which also keeps it alive as long as they are held."""

    def __init__(self, world):
        self.world = world
        self._frames: dict = {}
        self._preds: dict = {}

    def frame(self, cam: str, index: int):
        f = self._frames.get((cam, index))
        if f is None:
            f = self._frames[(cam, index)] = self.world.frame(cam, index)
        return f

    def predict(self, runtime, frames: list) -> list:
        keys = [(runtime, f.camera_id, f.index) for f in frames]
        todo = [(f, k) for f, k in zip(frames, keys) if k not in self._preds]
        if todo:
            for (_, k), p in zip(todo, runtime.predict_batch([f.image for f, _ in todo])):
                self._preds[k] = p
        return [self._preds[k] for k in keys]


def _agent(arm: str, cfg: ScenesLoopConfig, seen: _Seen, cams: list[str], sites: dict, indices: range, runtime,
           seed: int, every_n: int) -> list[_Up]:
    """The agent stage of `arm` on every camera: the agent's own FrameSampler (or everything)."""
    from edgeloop.agent.pipeline import FrameSampler
    from edgeloop.onebox import AGENT_DETECT_SIGNALS  # the demo's agent defaults: what a user gets
    from edgeloop.shared.frames import SourceFrame
    from edgeloop.shared.images import encode_jpeg

    if arm in ("central", "oracle"):
        sampling = None
    elif arm == "random":
        sampling = _sampling({"random": 1.0}, cfg.agent_per_hour, cfg.window_s, seed)
    elif arm == "every_nth":
        sampling = _sampling({"every_nth": {"weight": 1.0, "n": every_n}}, None, cfg.window_s, seed, min_value=0.5)
    elif arm == "threshold":
        sampling = _sampling({"close_to_threshold": {"weight": 1.0, "low": cfg.band[0], "high": cfg.band[1]}},
                             cfg.threshold_per_hour, cfg.window_s, seed, min_value=0.5)
    else:
        from edgeloop.onebox import AGENT_DETECT_TEMPORAL_DEDUP
        from edgeloop.shared.config import TemporalDedup

        from edgeloop.shared.config import TrackGate

        dedup = TemporalDedup() if arm == "edgeloop_plain" else TemporalDedup(**AGENT_DETECT_TEMPORAL_DEDUP)
        tracks = TrackGate(max_age_s=TRACK_MAX_AGE_S) if arm == "edgeloop_tracks" else TrackGate()
        sampling = _sampling(AGENT_DETECT_SIGNALS, cfg.agent_per_hour, cfg.window_s, seed, temporal_dedup=dedup,
                             tracks=tracks)
    out: list[_Up] = []
    for cam in cams:
        sampler = None if sampling is None else FrameSampler(sampling, f"dev-{cam}", sites[cam])
        for start in range(indices.start, indices.stop, 64):
            frames = [seen.frame(cam, i) for i in range(start, min(start + 64, indices.stop))]
            preds = seen.predict(runtime, frames)
            for f, p in zip(frames, preds):
                sid = f"{cam}-{f.index:09d}"
                if sampler is None:
                    out.append(_Up(sid, cam, f.index, sites[cam], f.captured_at, p.probs, p.embedding,
                                   _pixels(p.detections, f.image), len(encode_jpeg(f.image)), dict(f.tags)))
                    continue
                src = SourceFrame(f.image, f.captured_at, cam, f.index, dict(f.tags))
                out += [_from_candidate(c, _index(c), f.image) for c in sampler.consider(src, p, runtime, sid)]
        if sampler is not None:
            out += [_from_candidate(c, _index(c), frames[-1].image) for c in sampler.flush()]
    return out


def _index(c) -> int:
    return int(c.sample_id.rsplit("-", 1)[1])  # the bench's ids: {camera}-{index:09d}


def _pixels(det: np.ndarray | None, image: np.ndarray) -> np.ndarray | None:
    if det is None:
        return None
    h, w = image.shape[:2]
    det = np.array(det, np.float32, copy=True)
    det[:, :4] *= np.array([w, h, w, h], np.float32)
    return det


def _from_candidate(c, index: int, image: np.ndarray) -> _Up:
    det = None if c.detections is None else _pixels(c.detections, image)
    return _Up(c.sample_id, c.camera_id, index, c.tags.get("site", ""), c.captured_at, np.asarray(c.probs),
               None if c.embedding is None else np.asarray(c.embedding, np.float32), det, len(c.image),
               dict(c.tags), c.value, tuple(c.reasons))


def _relay(arm: str, cfg: ScenesLoopConfig, up: list[_Up], cams_per_site: dict[str, int], seed: int) -> list[_Up]:
    """The relay service's stage: rescore with its signals, a windowed selector per site with its picker."""
    from edgeloop.onebox import RELAY_DETECT_SIGNALS, RELAY_POLICY
    from edgeloop.shared.sampling import Observation, WindowedSelector, score
    from edgeloop.shared.sampling.policy import window_picker, window_pool_limit

    if arm not in ("random", *_EDGELOOP):  # no relay stage: everything goes on
        return list(up)
    kept = []
    for site in sorted(cams_per_site):
        per_hour = cfg.relay_per_hour_per_agent * cams_per_site[site]
        if arm == "random":
            sampling = _sampling({"random": 1.0}, per_hour, cfg.window_s, seed + 7919)
        else:
            # The detection demo's relays: its policy without embedding dedup (cfg.dedup, 0 by default;
            # a detector's embedding is mostly its camera's background, see edgeloop/demo.py).
            sampling = _sampling(RELAY_DETECT_SIGNALS, per_hour, cfg.window_s, seed, strategy=RELAY_POLICY["strategy"],
                                 dedup_threshold=cfg.dedup,
                                 balance_classes=RELAY_POLICY["balance_classes"])
        sel = WindowedSelector(sampling.budget, sampling.min_value, pick=window_picker(sampling),
                               pool_limit=window_pool_limit(sampling))
        for c in sorted((c for c in up if c.site == site), key=lambda c: c.captured_at):
            c.value = score(Observation.from_candidate(c), sampling.signals, sampling.seed)[0]
            sel.offer(c)
        kept += sel.close_until(None)
    return kept


def _hub(arm: str, cfg: ScenesLoopConfig, pool: list[_Up], labeled_emb, seed: int, truth) -> list[_Up]:
    from edgeloop.hub import selection

    k = cfg.labels
    if arm == "oracle":
        rng = np.random.default_rng(seed)
        shuffled = [pool[i] for i in rng.permutation(len(pool))]
        wrong = [c for c in shuffled if gets_wrong(*truth(c), c.detections)]
        wrong_ids = {c.sample_id for c in wrong}
        right = [c for c in shuffled if c.sample_id not in wrong_ids]
        return (wrong + right)[:k]
    strategy = "hybrid" if arm in _EDGELOOP else {"central": "uncertainty"}.get(arm, "random")
    rows = [{"sample_id": c.sample_id, "probs": c.probs, "embedding": c.embedding, "captured_at": c.captured_at,
             "detections": c.detections} for c in pool]
    chosen = selection.select_for_labeling(rows, k, strategy=strategy, seed=seed,
                                           labeled_embeddings=labeled_emb if strategy == "hybrid" else None,
                                           dedup_threshold=cfg.dedup)
    by_id = {c.sample_id: c for c in pool}
    return [by_id[s] for s in sorted(chosen, key=lambda s: (-chosen[s], s))]


# --- one world seed at one frame rate ------------------------------------------------------------

def _train_eval(images, boxes, classes, names, parent_state, epochs, seed, version, parent, golden):
    from edgeloop.hub.training.detect import evaluate_detector, export_detector_onnx, train_detector
    from edgeloop.shared.runtime import ModelRuntime

    res = train_detector(images, boxes, classes, names, parent_state=parent_state, epochs=epochs, seed=seed)
    onnx, manifest = export_detector_onnx(res.net, version=version, parent=parent, names=names,
                                          parity_frames=golden.images[:4])
    runtime = ModelRuntime.load(onnx, manifest, threads=2)
    return res.state, runtime, evaluate_detector(runtime, golden)


def _run_seed(cfg: ScenesLoopConfig, seed: int, fps: float, step: Callable[[str], None]) -> dict:
    from edgeloop.hub.training.golden import DetectionSet
    from edgeloop.sim import ScenesWorld

    world = ScenesWorld(seed=seed, fps=fps, size=cfg.size, sites=cfg.sites)
    g = world.golden_set(per_condition=cfg.golden_per_condition)
    golden = DetectionSet(g.images, g.boxes, g.classes, g.names, g.tags)
    seed_set = world.seed_set(n=cfg.seed_set)
    cams = world.camera_ids(cfg.cameras)
    sites = {cam: world.site_of(cam) for cam in cams}
    cams_per_site = {s: sum(1 for c in cams if sites[c] == s) for s in sorted(set(sites.values()))}
    names = world.classes
    state0, rt0, m0 = _train_eval(seed_set.images, seed_set.boxes, seed_set.classes, names, None, cfg.seed_epochs,
                                  seed, "v0", None, golden)
    step(f"fps {fps:g} seed {seed}: seed model mAP@0.5 {m0['map50']:.3f}")
    seed_boxes = int(sum(len(c) for c in seed_set.classes))
    arms = {arm: {"state": state0, "runtime": rt0, "images": list(seed_set.images), "boxes": list(seed_set.boxes),
                  "classes": list(seed_set.classes), "labeled": [], "map50": [m0["map50"]],
                  "per_slice": [m0["per_slice"]], "labels_used": [cfg.seed_set], "boxes_used": [seed_boxes],
                  "rounds": []} for arm in cfg.arms}
    per_round = int(round(cfg.minutes * 60 * fps))
    truth_memo: dict = {}

    def truth_of(cam: str, index: int):
        key = (cam, index)
        if key not in truth_memo:
            truth_memo[key] = world.truth(cam, index)
        return truth_memo[key]

    for r in range(1, cfg.rounds + 1):
        indices = range((r - 1) * per_round, r * per_round)
        seen = _Seen(world)
        n_frames = len(indices) * len(cams)
        every_n = max(1, round(fps * 3600 / cfg.agent_per_hour))
        for arm in cfg.arms:
            a = arms[arm]
            up = _agent(arm, cfg, seen, cams, sites, indices, a["runtime"], seed * 1000 + r, every_n)
            if arm == "edgeloop" and up:  # every_nth uplinks as many frames as edgeloop's agents did
                every_n = max(1, round(n_frames / len(up)))
            fwd = _relay(arm, cfg, up, cams_per_site, seed * 1000 + r)
            labeled_emb = None
            if arm.startswith("edgeloop"):  # what is labeled, seen through the current model
                imgs = a["images"]
                labeled_emb = np.stack([p.embedding for i in range(0, len(imgs), 64)
                                        for p in a["runtime"].predict_batch(imgs[i:i + 64])])
            chosen = _hub(arm, cfg, fwd, labeled_emb, seed * 1000 + r,
                          lambda c: (truth_of(c.camera_id, c.index).boxes, truth_of(c.camera_id, c.index).classes))
            truths = [truth_of(c.camera_id, c.index) for c in chosen]
            dups = sum(1 for t in truths if any(near_duplicate(t, o) for o in a["labeled"] + truths if o is not t))
            for c, t in zip(chosen, truths):
                a["images"].append(seen.frame(c.camera_id, c.index).image)
                a["boxes"].append(t.boxes)
                a["classes"].append(t.classes)
            a["labeled"] += truths
            new_boxes = int(sum(len(t.classes) for t in truths))
            pseudo = _pseudo(chosen, truths, fwd, seen) if arm == "edgeloop_pseudo" else []
            for f in pseudo:  # trained on beside the human labels, counted apart from them
                a["images"].append(f.image)
                a["boxes"].append(f.boxes)
                a["classes"].append(f.classes)
            a["state"], a["runtime"], m = _train_eval(a["images"], a["boxes"], a["classes"], names, a["state"],
                                                      cfg.epochs, seed * 1000 + r, f"v{r}", f"v{r - 1}", golden)
            a["map50"].append(m["map50"])
            a["per_slice"].append(m["per_slice"])
            a["labels_used"].append(a["labels_used"][-1] + len(chosen))
            a["boxes_used"].append(a["boxes_used"][-1] + new_boxes)
            a["rounds"].append({
                "frames": n_frames, "agent_kept": len(up), "relay_kept": len(fwd), "labels": len(chosen),
                "boxes": new_boxes, "near_duplicate_share": dups / len(chosen) if chosen else 0.0,
                "pseudo_labels": len(pseudo),
                "pseudo_right": sum(_right(f, truth_of) for f in pseudo),
                "night_labeled": sum(1 for t in truths if t.tags["lighting"] == "night"),
                "every_n": every_n if arm == "every_nth" else None,
                "budgets": {"labels": cfg.labels,
                            "agent": (math.floor(cfg.agent_per_hour * cfg.window_s / 3600 * _windows(world, cams[0], indices,
                                                                                                   cfg.window_s) + 1e-9)
                                      * len(cams)) if arm in ("random", *_EDGELOOP) else None},
                "bytes": {"agent_to_relay": sum(c.nbytes for c in up), "relay_to_hub": sum(c.nbytes for c in fwd)}})
            step(f"fps {fps:g} seed {seed} round {r} {arm}: mAP@0.5 {m['map50']:.3f} ({a['labels_used'][-1]} labels)")
    return {arm: {k: v for k, v in a.items() if k not in ("state", "runtime", "images", "boxes", "classes", "labeled")}
            for arm, a in arms.items()}


def _pseudo(chosen: list[_Up], truths: list, pool: list[_Up], seen: _Seen) -> list:
    """edgeloop_pseudo: the hub's pseudo-labels along tracks (hub/training/pseudo.py) from this
    round's human labels to the frames it holds unlabeled."""
    from edgeloop.hub.training.pseudo import Frame, propagate

    labeled = [Frame(c.sample_id, c.camera_id, c.captured_at, seen.frame(c.camera_id, c.index).image, t.boxes,
                     t.classes) for c, t in zip(chosen, truths)]
    ids = {c.sample_id for c in chosen}
    held = [Frame(c.sample_id, c.camera_id, c.captured_at, seen.frame(c.camera_id, c.index).image,
                  d[:, :4], d[:, 5].astype(np.int64), d[:, 4])
            for c in pool if c.sample_id not in ids for d in (_det(c),)]
    return propagate(labeled, held)


def _det(c: _Up) -> np.ndarray:
    return np.zeros((0, 6), np.float32) if c.detections is None else np.asarray(c.detections, np.float32).reshape(-1, 6)


def _right(f, truth_of) -> bool:
    """Is a pseudo-labeled frame labeled as the ground truth has it (every box, right class, IoU 0.5)?"""
    t = truth_of(f.camera_id, int(f.sample_id.rsplit("-", 1)[1]))
    return not gets_wrong(t.boxes, t.classes, np.column_stack([f.boxes, np.ones(len(f.classes)), f.classes]))


def _windows(world, cam: str, indices: range, window_s: float) -> int:
    """Selection windows of the capture clock a round's frames touch."""
    t0 = world.truth(cam, indices.start).captured_at
    t1 = world.truth(cam, indices.stop - 1).captured_at
    return int(math.floor(t1 / window_s) - math.floor(t0 / window_s)) + 1


def run_scenes_bench(cfg: ScenesLoopConfig, out=None, progress: Callable[[str], None] | None = None) -> dict:
    """Every arm over cfg.seeds worlds at each of cfg.fps -> the report (OUT/loop.json, OUT/loop.png).

    The report's top level is the first frame rate's run; `by_fps` holds every frame rate's, and
    `sweep` the labels and boxes to target per arm and frame rate."""
    import json
    from pathlib import Path

    import torch

    from .loop_plot import plot

    t0 = time.monotonic()
    torch.set_num_threads(2)
    step = progress or (lambda msg: None)
    seeds = [cfg.base_seed + i for i in range(cfg.seeds)]
    by_fps = {}
    for fps in cfg.fps:
        per_seed = [_run_seed(cfg, s, fps, step) for s in seeds]
        by_fps[f"{fps:g}"] = summarise(cfg, fps, per_seed, seeds)
    first = by_fps[f"{cfg.fps[0]:g}"]
    report = {"settings": {**asdict(cfg), "world": "scenes", "task": "detect"}, **first,
              "by_fps": by_fps,
              "sweep": {arm: {f: {"labels_to_target": r["arms"][arm]["labels_to_target"],
                                  "boxes_to_target": r["arms"][arm]["boxes_to_target"],
                                  "bytes_total": r["arms"][arm]["bytes_uplinked"]["total"],
                                  "final_map50": r["arms"][arm]["map50_mean"][-1]}
                              for f, r in by_fps.items()} for arm in cfg.arms},
              "lines": [ln for r in by_fps.values() for ln in r["lines"]]}
    report["seconds"] = round(time.monotonic() - t0, 1)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        report["plot"] = plot(plottable(first), out / "loop.png", metric="mAP@0.5")
        (out / "loop.json").write_text(json.dumps(report, indent=1))
    return report
