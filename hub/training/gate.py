"""The training gate: may a freshly trained model replace its parent? Pure logic on metrics dicts.

    g = judge(candidate["metrics"], parent["metrics"], tolerance=0.02, min_gain=0.0)
    g.passed   # better overall, and no golden slice fell more than `tolerance` below the parent
    g.reasons  # ("slice night: 0.412 < parent 0.833 - tolerance 0.02",)

Both metrics dicts are what the hub's evaluation writes: a classifier's {"accuracy": float,
"per_slice": {slice: accuracy}}, a detector's {"map50": float, "slices": {"lighting:night": mAP@0.5,
"weather:fog": ..., "site:...": ..., "size:S": ...}} (or, from outside, "per_slice"); the
overall figure compared is "map50" when the candidate has one, else "accuracy", and the parent is read
on the same figure. Metrics registered from outside may lack either; a parent without the overall
figure cannot be compared with, so the candidate passes and the reason says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: tuple[str, ...]  # human readable; every failed check names what failed, and by how much
    regressed: tuple[str, ...] = ()  # slices more than `tolerance` below the parent (or missing), sorted
    compared: bool = True  # False: no parent, or nothing in its metrics to compare with

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reasons": list(self.reasons), "regressed": list(self.regressed),
                "compared": self.compared}


def _number(value) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _slices(metrics: dict) -> dict[str, float | None] | None:
    """The slices the gate compares: a detector's every `slices` entry but single cameras (lighting,
    weather, site, object size; a camera has too few golden frames to judge on), else `per_slice`."""
    det = metrics.get("slices") if "map50" in metrics else None
    if isinstance(det, dict):
        return {str(k): _number(v) for k, v in det.items() if not str(k).startswith("camera:")}
    per = metrics.get("per_slice")
    return {str(k): _number(v) for k, v in per.items()} if isinstance(per, dict) else None


def judge(candidate_metrics: dict, parent_metrics: dict | None, tolerance: float = 0.02,
          min_gain: float = 0.0) -> GateResult:
    """Promote only if accuracy > parent accuracy + min_gain and no parent slice drops below
    parent - tolerance (absolute accuracy). A slice the parent was scored on but the candidate was
    not counts as regressed: a regression there cannot be ruled out.
    """
    if not tolerance >= 0 or not math.isfinite(min_gain):
        raise ValueError(f"judge: tolerance must be >= 0 and min_gain finite, got {tolerance}, {min_gain}")
    cand = candidate_metrics if isinstance(candidate_metrics, dict) else {}
    figure = "map50" if "map50" in cand else "accuracy"
    acc = _number(cand.get(figure))
    if acc is None:  # our own evaluation always writes it: without it nothing says the model works
        return GateResult(False, (f"candidate has no overall {figure}",), compared=False)
    parent = parent_metrics if isinstance(parent_metrics, dict) else None
    parent_acc = _number(parent.get(figure)) if parent is not None else None
    if parent is None:
        return GateResult(True, ("no parent: nothing to compare with",), compared=False)
    if parent_acc is None:
        return GateResult(True, (f"parent has no comparable metrics (no overall {figure})",), compared=False)

    reasons = []
    better = acc > parent_acc + min_gain
    sign = ">" if better else "<="
    reasons.append(f"overall{' mAP@0.5' if figure == 'map50' else ''}: {acc:.3f} {sign} parent {parent_acc:.3f} "
                   f"+ min_gain {min_gain:g}")

    regressed = []
    parent_slices, cand_slices = _slices(parent), _slices(cand) or {}
    if parent_slices is None:
        reasons.append("parent has no per-slice accuracy: slices not compared")
    for name, before in sorted((parent_slices or {}).items()):
        if before is None:
            continue
        after = cand_slices.get(name)
        if after is None:
            regressed.append(name)
            reasons.append(f"slice {name}: not evaluated for the candidate (parent {before:.3f})")
        elif after < before - tolerance:
            regressed.append(name)
            reasons.append(f"slice {name}: {after:.3f} < parent {before:.3f} - tolerance {tolerance:g}")
    if parent_slices and not regressed:
        reasons.append(f"no slice fell more than {tolerance:g} below the parent")
    return GateResult(better and not regressed, tuple(reasons), tuple(regressed))
