"""Model cards: what a registered model was trained on and with, how well it does, whether it passed its gate.

    card = model_card(store, "v3")      # a JSON-ready dict
    print(card_markdown(card))          # the same, for a person

The card reads only the store's model row and the metrics train_round recorded at training time
(the labeled set grows afterwards, so its counts then are kept in metrics["data"]). Models
registered from outside may have none of those keys: their card shows None there.
"""

from __future__ import annotations

from datetime import datetime, timezone

from edgeloop.shared.errors import EdgeloopError

from .store import HubStore

TRAINING_KEYS = ("epochs", "seed", "lr", "batch_size", "augment", "from_scratch")
CALIBRATION_KEYS = ("temperature", "ece_before", "ece_after", "n_fit", "n_eval")
GATE_KEYS = ("passed", "reasons", "parent", "tolerance", "min_gain")


class ModelNotFound(EdgeloopError):
    """No model of that version in the store."""


def _section(value, keys: tuple[str, ...]) -> dict:
    value = value if isinstance(value, dict) else {}
    return {k: value.get(k) for k in keys}


def _lineage(raw) -> dict:
    raw = raw if isinstance(raw, dict) else {}
    dataset = raw.get("dataset") if isinstance(raw.get("dataset"), dict) else {}
    return {"trainer": raw.get("trainer"), "parent": raw.get("parent"), "dataset_version": dataset.get("version"),
            "samples": dataset.get("samples"), "registered_from": raw.get("registered_from")}


def model_card(store: HubStore, version: str) -> dict:
    """-> {"version", "parent", "created_at", "training", "data", "metrics", "calibration", "gate", "artifact"}.

    Raises ModelNotFound for an unknown version; anything missing from the model's metrics is None.
    """
    row = store.model(version)
    if row is None:
        raise ModelNotFound(f"no model {version!r} at the hub")
    m = row["metrics"] if isinstance(row["metrics"], dict) else {}
    per_slice = m.get("per_slice") if isinstance(m.get("per_slice"), dict) else {}
    per_slice_n = m.get("per_slice_n") if isinstance(m.get("per_slice_n"), dict) else {}
    created = row.get("created_at")
    return {
        "version": row["version"],
        "parent": row.get("parent"),
        "created_at": (datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="seconds")
                       if isinstance(created, (int, float)) else None),
        "training": _section(m.get("training"), TRAINING_KEYS),
        # Where it came from: the trainer, the labeled set's version (sha256 of its label revisions), the parent.
        "lineage": _lineage(m.get("lineage")),
        "data": {**_section(m.get("data"), ("by_class", "by_slice", "total")), "labels_total": row.get("labels_total")},
        "metrics": {
            # The figure a slice is scored by: accuracy for a classifier, COCO mAP@0.5 for a detector.
            "figure": "mAP@0.5" if "map50" in m else "accuracy",
            "accuracy": m.get("map50", m.get("accuracy")), "n": m.get("n"),
            "per_slice": {s: {"accuracy": per_slice.get(s), "n": per_slice_n.get(s)}
                          for s in sorted(set(per_slice) | set(per_slice_n), key=str)},
        },
        # Detectors: mAP@0.5:0.95, and mAP@0.5 per slice of every kind (lighting, weather, site, object size) and
        # AP@0.5 per class, all from pycocotools.
        "detection": {"map50": m.get("map50"), "map": m.get("map"), "slices": dict(m.get("slices") or {}),
                      "per_class": dict(m.get("per_class") or {})} if "map50" in m else None,
        "calibration": _section(m.get("calibration"), CALIBRATION_KEYS),
        "gate": _section(m.get("gate"), GATE_KEYS),
        "artifact": {"sha256": row.get("artifact_sha256"), "size": row.get("artifact_size")},
    }


def _fmt(value, spec: str = ".3f") -> str:
    """Accuracies and ECE as 0.412; settings with spec "g" (lr 0.003, tolerance 0.02); None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def card_markdown(card: dict) -> str:
    """A model card (model_card's dict) as Markdown."""
    t, d, m, c, g, a = (card.get(k) or {} for k in ("training", "data", "metrics", "calibration", "gate", "artifact"))
    lines = [f"# Model {card.get('version')}", "",
             f"- parent: {_fmt(card.get('parent'))}", f"- created: {_fmt(card.get('created_at'))}",
             f"- artifact: sha256 {_fmt(a.get('sha256'))}, {_fmt(a.get('size'))} bytes", "",
             "## Training", ""]
    lines += [f"- {k}: {_fmt(t.get(k), 'g')}" for k in TRAINING_KEYS]
    lines += ["", "## Data", "", f"- labeled samples: {_fmt(d.get('total'))}"]
    for key, title in (("by_class", "class"), ("by_slice", "slice")):
        counts = d.get(key)
        if isinstance(counts, dict) and counts:
            lines += ["", f"| {title} | n |", "|---|---:|", *[f"| {k} | {_fmt(v)} |" for k, v in counts.items()]]
    lines += ["", f"## Golden-set {m.get('figure', 'accuracy')}", "",
              f"- overall: {_fmt(m.get('accuracy'))} (n = {_fmt(m.get('n'))})"]
    per_slice = m.get("per_slice") or {}
    if per_slice:
        lines += ["", f"| slice | {m.get('figure', 'accuracy')} | n |", "|---|---:|---:|",
                  *[f"| {s} | {_fmt(v.get('accuracy'))} | {_fmt(v.get('n'))} |" for s, v in per_slice.items()]]
    det = card.get("detection")
    if det:
        lines += ["", f"- mAP@0.5:0.95: {_fmt(det.get('map'))}", "", "| slice | mAP@0.5 |", "|---|---:|",
                  *[f"| {s} | {_fmt(v)} |" for s, v in det["slices"].items()],
                  "", "| class | AP@0.5 |", "|---|---:|", *[f"| {k} | {_fmt(v)} |" for k, v in det["per_class"].items()]]
    lines += ["", "## Calibration", "",
              f"- temperature: {_fmt(c.get('temperature'))} (baked into the exported logits)",
              f"- ECE on {_fmt(c.get('n_eval'))} held-out golden samples: {_fmt(c.get('ece_before'))} before, "
              f"{_fmt(c.get('ece_after'))} after (T fit on {_fmt(c.get('n_fit'))})",
              "", "## Gate", ""]
    passed = g.get("passed")
    verdict = "—" if passed is None else "passed" if passed else "refused"
    lines.append(f"- {verdict} against parent {_fmt(g.get('parent'))} "
                 f"(tolerance {_fmt(g.get('tolerance'), 'g')}, min_gain {_fmt(g.get('min_gain'), 'g')})")
    reasons = g.get("reasons")
    lines += [f"  - {r}" for r in (reasons if isinstance(reasons, (list, tuple)) else [])]
    return "\n".join(lines) + "\n"
