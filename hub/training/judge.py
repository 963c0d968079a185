"""The hub judges every model itself, whatever trained it: it loads the trainer's OUT/model.onnx with
onnxruntime, checks it is a model of the project (task and classes), calibrates a classifier's logits
on half the golden set (the temperature goes into the graph), evaluates it on the golden set per slice
(accuracy, or COCO mAP), gates it against its parent, signs it and registers it with its lineage.

    report = judge_candidate(store, golden, key, out_dir, version="v4", parent="v3", proj=proj,
                             lineage={"trainer": "builtin:detect", "dataset": {...}, ...})

A candidate that is not a model of the project raises CandidateRefused, which names why; nothing is
registered then. Registering is not promoting: the desired model never changes here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgeloop.shared.artifact import model_digest, pack, unpack
from edgeloop.shared.errors import EdgeloopError
from edgeloop.shared.images import decode_image
from edgeloop.shared.manifest import ModelManifest
from edgeloop.shared.onnx_metadata import infer_manifest
from edgeloop.shared.runtime import ModelRuntime
from edgeloop.shared.signing import key_id, sign_digest

from .. import live
from ..project import Project, from_manifest
from ..store import HubStore
from . import calibration, gate
from .accuracy import evaluate
from .golden import DetectionSet, LabeledSet
from .workspace import pack_checkpoint

log = logging.getLogger("edgeloop.hub.judge")
CLASSIFY_TOLERANCE = 0.02  # how far a slice's accuracy may fall below the parent's
# Wider for mAP@0.5: a golden set of a few hundred frames measures a slice's mAP (size:L, weather:fog: a
# few dozen boxes each) to a few hundredths, and a gate that refuses on noise keeps the fleet on its old model.
DETECT_TOLERANCE = 0.05
DRIFT_SAMPLE = 1000  # training images the drift reference is built from, at most


class CandidateRefused(EdgeloopError):
    """The trainer's output is not a model of this project: missing, unloadable, other classes."""


def load_candidate(out: Path, proj: Project) -> tuple[bytes, ModelManifest]:
    """OUT/model.onnx and its manifest (OUT/manifest.json, else inferred from the ONNX metadata), loaded
    by onnxruntime and checked against the project -> (onnx, manifest); CandidateRefused says why not."""
    path = out / "model.onnx"
    if not path.is_file():
        raise CandidateRefused("the trainer exited 0 but wrote no OUT/model.onnx")
    onnx = path.read_bytes()
    try:
        if (out / "manifest.json").is_file():
            manifest = ModelManifest.from_json((out / "manifest.json").read_bytes())
        else:
            manifest, _ = infer_manifest(onnx)
        ModelRuntime.load(onnx, manifest)  # the shapes, outputs and class count, as a device checks them
    except EdgeloopError as exc:
        raise CandidateRefused(f"OUT/model.onnx is not a model the hub can run: {exc}") from exc
    got = from_manifest(manifest.task, manifest.labels)
    if got.task != proj.task:
        raise CandidateRefused(f"the trainer made a {got.task} model; the project is {proj.task}")
    if got.classes != proj.classes:
        extra = [c for c in got.classes if c not in proj.classes]
        missing = [c for c in proj.classes if c not in got.classes]
        why = "; ".join(filter(None, [f"not in the project: {', '.join(extra)}" if extra else "",
                                      f"missing: {', '.join(missing)}" if missing else ""])) or "in another order"
        raise CandidateRefused(f"the model's classes ({got.describe()}) are not the project's "
                               f"({proj.describe()}): {why}")
    return onnx, manifest


def bake_temperature(onnx: bytes, output: str, temperature: float) -> bytes:
    """The graph with `output` divided by a constant temperature (the device's softmax then gives
    calibrated confidences); argmax, and so accuracy, are unchanged."""
    import onnx as onnx_lib  # the hub's extra: only the hub edits graphs
    from onnx import helper, numpy_helper

    model = onnx_lib.load_from_string(onnx)
    raw = f"{output}_uncalibrated"
    for node in model.graph.node:
        for seq in (node.output, node.input):
            for i, name in enumerate(seq):
                if name == output:
                    seq[i] = raw
    t = numpy_helper.from_array(np.array(temperature, np.float32), name=f"{output}_temperature")
    model.graph.initializer.append(t)
    model.graph.node.append(helper.make_node("Div", [raw, t.name], [output], name=f"{output}_calibration"))
    return model.SerializeToString()


def _logits(runtime: ModelRuntime, images: np.ndarray, batch: int = 256) -> np.ndarray:
    name = runtime.manifest.outputs["logits"]
    return np.concatenate([runtime.session.run([name], {runtime.manifest.input.name: runtime.prepare(
        list(images[i:i + batch]))})[0] for i in range(0, len(images), batch)])


def calibrate(onnx: bytes, manifest: ModelManifest, golden: LabeledSet) -> tuple[bytes, dict]:
    """Fit a temperature on half the golden set, measure ECE on the other half before and after, and
    bake it into a classifier's logits -> (onnx, {"temperature", "ece_before", "ece_after", "n_fit",
    "n_eval"}). Without a logits output, or with fewer than two golden samples, the model is as it was."""
    fit, held = calibration.split_halves(golden.labels, golden.slices)
    if "logits" not in manifest.outputs or len(fit) == 0 or len(held) == 0:
        why = "no logits output" if "logits" not in manifest.outputs else "too few golden samples"
        return onnx, {"temperature": 1.0, "ece_before": None, "ece_after": None, "n_fit": len(fit),
                      "n_eval": len(held), "skipped": why}
    logits = _logits(ModelRuntime.load(onnx, manifest), golden.images)
    labels = np.asarray(golden.labels, np.int64)
    t = calibration.fit_temperature(logits[fit], labels[fit])

    def ece(temperature: float) -> float:
        # On the half T never saw: ECE on the fitting half would flatter the fit.
        return calibration.expected_calibration_error(calibration.softmax(logits[held] / temperature), labels[held])

    report = {"temperature": t, "ece_before": ece(1.0), "ece_after": ece(t), "n_fit": len(fit), "n_eval": len(held)}
    return bake_temperature(onnx, manifest.outputs["logits"], t), report


def drift_reference(runtime: ModelRuntime, train_images: list[Path], golden: LabeledSet, version: str,
                    batch: int = 128) -> live.Reference | None:
    """What the model makes of (a sample of) its training images and of the held-out golden set: the
    reference the hub compares each site's audit embeddings with (hub/live.py). None when too little."""
    if len(train_images) < 2 or len(golden) < 2 or runtime.manifest.outputs.get("embedding") is None:
        return None
    step = max(1, len(train_images) // DRIFT_SAMPLE)

    def embed(frames) -> tuple[np.ndarray, np.ndarray]:
        preds = [p for i in range(0, len(frames), batch) for p in runtime.predict_batch(list(frames[i:i + batch]))]
        return np.stack([p.embedding for p in preds]), np.asarray([p.confidence for p in preds], np.float32)

    train_emb, _ = embed([decode_image(p.read_bytes()) for p in train_images[::step]])
    held_emb, held_conf = embed(golden.images)
    return live.build_reference(train_emb, held_emb, held_conf, model_version=version)


def gate_against_parent(metrics: dict, store: HubStore, parent: str | None, tolerance: float,
                        min_gain: float) -> gate.GateResult:
    """The gate against the parent's stored metrics; the verdict is written into `metrics["gate"]`."""
    verdict = gate.judge(metrics, store.model(parent)["metrics"] if parent else None,
                         tolerance=tolerance, min_gain=min_gain)
    metrics["gate"] = {"passed": verdict.passed, "reasons": list(verdict.reasons), "regressed": list(verdict.regressed),
                       "parent": parent, "tolerance": tolerance, "min_gain": min_gain}
    return verdict


def register(store: HubStore, signing_key, manifest: ModelManifest, onnx: bytes, state: bytes, metrics: dict, *,
             reference: live.Reference | None, labels_total: int) -> bytes:
    """Sign manifest + ONNX, pack the artifact and register the version (with its checkpoint, for
    training children, and the drift reference, which stays at the hub) -> the artifact."""
    manifest = dataclasses.replace(manifest, metrics=metrics)
    signature = sign_digest(signing_key, model_digest(manifest.to_json(), onnx))
    artifact = pack(manifest, onnx, signature=signature, key_id=key_id(signing_key))
    stored = dict(metrics)
    if reference is not None:
        stored["drift_reference"] = {"sha256": store.blobs.put(reference.to_bytes()),
                                     "quantile": reference.quantile, "threshold": reference.threshold}
    store.add_model(manifest.version, manifest.parent, artifact, state, stored, labels_total=labels_total)
    return artifact


def evaluate_on(runtime: ModelRuntime, golden: LabeledSet | DetectionSet) -> dict:
    if isinstance(golden, DetectionSet):
        from .detect.evaluate import evaluate_detector  # pycocotools, only for detectors

        return evaluate_detector(runtime, golden)
    return evaluate(runtime, golden.images, golden.labels, golden.slices)


def judge_candidate(store: HubStore, golden: LabeledSet | DetectionSet, signing_key, out: Path, *, version: str,
                    parent: str | None, proj: Project, lineage: dict, data_dir: Path,
                    tolerance: float | None = None, min_gain: float = 0.0) -> dict:
    """Judge and register the trainer's output in `out` -> {"version", "parent", "metrics", "promoted",
    "gate", "labels_total"}; CandidateRefused when it is not a model of the project."""
    onnx, manifest = load_candidate(out, proj)
    detector = proj.task == "detect"
    if detector != isinstance(golden, DetectionSet):
        raise CandidateRefused(f"the golden set is of the other task: the project is {proj.task}")
    calib = None
    if not detector:
        onnx, calib = calibrate(onnx, manifest, golden)
    manifest = dataclasses.replace(manifest, version=version, parent=parent,
                                   created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    runtime = ModelRuntime.load(onnx, manifest)
    trained = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else {}
    if not isinstance(trained, dict):
        trained = {"trainer_metrics": trained}
    dataset = lineage.get("dataset", {})
    metrics = {**{k: v for k, v in manifest.metrics.items() if k.startswith("onnx_parity")},
               **evaluate_on(runtime, golden), "trainer_metrics": trained,
               "train_seconds": trained.get("train_seconds"), "train_loss": trained.get("train_loss"),
               "training": {**(trained.get("settings") or {}), **lineage.get("settings", {}),
                            "trainer": lineage.get("trainer")},
               "lineage": lineage}
    if calib is not None:
        metrics["calibration"] = calib
    if lineage.get("data_counts"):
        metrics["data"] = lineage["data_counts"]
    tolerance = (DETECT_TOLERANCE if detector else CLASSIFY_TOLERANCE) if tolerance is None else tolerance
    verdict = gate_against_parent(metrics, store, parent, tolerance, min_gain)
    reference = None
    if not detector:
        reference = drift_reference(runtime, sorted((data_dir / "train").rglob("*.jpg")), golden, version)
    state = pack_checkpoint(out / "checkpoint")
    register(store, signing_key, manifest, onnx, state, metrics, reference=reference,
             labels_total=int(dataset.get("samples", 0)))
    headline = f"mAP@0.5 {metrics['map50']:.3f}" if detector else f"accuracy {metrics['accuracy']:.3f}"
    log.info("%s (%s, from %s): %s %s", version, lineage.get("trainer"), parent or "scratch", headline,
             " ".join(f"{k}={v:.3f}" for k, v in sorted(metrics["per_slice"].items())))
    if verdict.passed:
        log.info("%s passes the gate: %s", version, "; ".join(verdict.reasons))
    else:
        log.warning("%s refused by the gate: %s", version, "; ".join(verdict.reasons))
    return {"version": version, "parent": parent, "metrics": metrics, "promoted": verdict.passed,
            "gate": metrics["gate"], "labels_total": int(dataset.get("samples", 0))}


def artifact_manifest(store: HubStore, version: str) -> ModelManifest:
    return unpack(store.blobs.get(store.model(version)["artifact_sha256"])).manifest
