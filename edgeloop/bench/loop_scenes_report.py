"""The scenes loop benchmark's report: per-arm means over seeds, targets, the printed lines
(edgeloop/bench/loop_scenes.py)."""

from __future__ import annotations

import numpy as np

from .loop_scenes_truth import to_target


def summarise(cfg, fps: float, per_seed: list[dict], seeds: list[int]) -> dict:
    out: dict = {"fps": fps, "world_seeds": seeds, "arms": {}}
    for arm in cfg.arms:
        runs = [s[arm] for s in per_seed]
        mp = np.array([r["map50"] for r in runs], dtype=float)
        rounds = [{"labels": float(np.mean([r["rounds"][i]["labels"] for r in runs])),
                   "boxes": float(np.mean([r["rounds"][i]["boxes"] for r in runs])),
                   "near_duplicate_share": round(float(np.mean([r["rounds"][i]["near_duplicate_share"] for r in runs])), 4),
                   **{k: float(np.mean([r["rounds"][i][k] for r in runs]))
                      for k in ("frames", "agent_kept", "relay_kept", "night_labeled", "pseudo_labels",
                                "pseudo_right")},
                   "budgets": runs[0]["rounds"][i]["budgets"],
                   "every_n": [r["rounds"][i]["every_n"] for r in runs] if arm == "every_nth" else None,
                   "bytes": {k: float(np.mean([r["rounds"][i]["bytes"][k] for r in runs]))
                             for k in ("agent_to_relay", "relay_to_hub")}}
                  for i in range(cfg.rounds)]
        a2r = int(round(sum(rd["bytes"]["agent_to_relay"] for rd in rounds)))
        r2h = int(round(sum(rd["bytes"]["relay_to_hub"] for rd in rounds)))
        out["arms"][arm] = {
            "labels": [rd["labels"] for rd in rounds],
            "boxes": [rd["boxes"] for rd in rounds],
            "labels_used": [float(v) for v in np.mean([r["labels_used"] for r in runs], axis=0)],
            "boxes_used": [float(v) for v in np.mean([r["boxes_used"] for r in runs], axis=0)],
            "map50_mean": [round(float(v), 4) for v in mp.mean(axis=0)],
            "map50_std": [round(float(v), 4) for v in mp.std(axis=0)],
            "map50_per_seed": mp.round(4).tolist(),
            "near_duplicate_share": [rd["near_duplicate_share"] for rd in rounds],
            "bytes_uplinked": {"agent_to_relay": a2r, "relay_to_hub": r2h, "total": a2r + r2h},
            "rounds": rounds,
        }
    if cfg.target is not None:
        target, rule = float(cfg.target), "--target"
    elif "central" in out["arms"]:
        target, rule = 0.95 * out["arms"]["central"]["map50_mean"][-1], "0.95 x central's final mean mAP@0.5"
    else:
        target, rule = 0.95 * max(a["map50_mean"][-1] for a in out["arms"].values()), "0.95 x the best final mean mAP@0.5"
    out["target"], out["target_rule"] = round(target, 4), rule
    seed_boxes = next(iter(out["arms"].values()))["boxes_used"][0]
    for a in out["arms"].values():
        ltt = to_target(a["labels_used"], a["map50_mean"], target)
        btt = to_target(a["boxes_used"], a["map50_mean"], target)
        # The seed set is the same for every arm: the loop's own labels are what selection can save.
        a["labels_to_target"] = None if ltt is None else round(ltt - cfg.seed_set, 1)
        a["boxes_to_target"] = None if btt is None else round(btt - seed_boxes, 1)
    out["lines"] = summary_lines(out)
    return out


def _ratio(a, b) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def summary_lines(rep: dict) -> list[str]:
    arms = rep["arms"]
    rnd, cen = arms.get("random"), arms.get("central")
    lines = []
    for name, a in arms.items():
        ltt = "never" if a["labels_to_target"] is None else f"{a['labels_to_target']:.0f}"
        btt = "never" if a["boxes_to_target"] is None else f"{a['boxes_to_target']:.0f}"
        parts = [f"labels_to_target {ltt}", f"boxes_to_target {btt}"]
        if rnd is not None and name != "random":
            parts.append(f"labels {_ratio(a['labels_to_target'], rnd['labels_to_target'])} random")
        if cen is not None:
            pct = 100.0 * a["bytes_uplinked"]["total"] / max(1, cen["bytes_uplinked"]["total"])
            worst = min((x / y for x, y in zip(a["map50_mean"][1:], cen["map50_mean"][1:]) if y > 0), default=float("nan"))
            parts.append(f"bytes {pct:.1f}% of central, mAP@0.5 worst round {worst:.2f}x central")
        parts.append(f"final mAP@0.5 {a['map50_mean'][-1]:.3f}±{a['map50_std'][-1]:.3f}")
        parts.append(f"near-duplicates {np.mean(a['near_duplicate_share']):.0%}")
        pseudo = sum(rd["pseudo_labels"] for rd in a["rounds"])
        if pseudo:  # trained on, not counted as labels
            right = sum(rd["pseudo_right"] for rd in a["rounds"])
            parts.append(f"pseudo-labels {pseudo:.0f} ({right / pseudo:.0%} right)")
        lines.append(f"fps {rep['fps']:g} {name}: " + ", ".join(parts))
    return lines


def plottable(rep: dict) -> dict:
    """The loop plot's input shape: per arm labels_used, accuracy_mean/std (here mAP@0.5)."""
    return {"target": rep["target"],
            "arms": {n: {"labels_used": a["labels_used"], "accuracy_mean": a["map50_mean"],
                         "accuracy_std": a["map50_std"]} for n, a in rep["arms"].items()}}
