"""One turn of the hub's model loop: train from the parent on everything labeled, calibrate its
confidence on half the golden set, export to ONNX (parity-checked, temperature baked in), evaluate
on the golden set per slice, judge it against its parent (the gate), register the artifact.

Registering is not promoting: train_round never changes the desired model. Its result says whether
the gate would promote (`promoted`) and why; the caller decides.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time

import numpy as np

from edgeloop.shared.artifact import model_digest, pack
from edgeloop.shared.signing import key_id, sign_digest
from edgeloop.shared.errors import EdgeloopError
from edgeloop.shared.ids import new_sample_id
from edgeloop.shared.images import decode_image, encode_jpeg, sha256
from edgeloop.shared.protocol import Candidate
from edgeloop.shared.runtime import ModelRuntime

from .. import live
from . import calibration, gate
from . import classifier as training
from .golden import DetectionSet, LabeledSet
from ..store import HubStore

log = logging.getLogger("edgeloop.hub.training.rounds")


class NothingToTrain(EdgeloopError):
    """There are no labeled samples yet."""


def import_labeled_set(store: HubStore, ds: LabeledSet, source: str = "seed") -> int:
    """Store a labeled set (e.g. the round-0 seed set) as labeled samples; -> how many."""
    n = len(ds)
    uniform = np.full(10, 0.1, np.float32)
    cands = []
    for i in range(n):
        jpeg = encode_jpeg(ds.images[i])
        cands.append(Candidate(sample_id=new_sample_id(), device_id=source, camera_id=source, captured_at=0.0,
                               model_version="none", probs=uniform, embedding=None, image=jpeg,
                               image_sha256=sha256(jpeg), tags={"lighting": ds.slices[i], "source": source}))
    store.ingest(cands, site=source, relay_id=source, status="labeled")
    store.add_labels({c.sample_id: int(ds.labels[i]) for i, c in enumerate(cands)}, source=source)
    return n


def next_version(store: HubStore) -> str:
    """v0, v1, ...: one past the highest vN registered (models registered from outside may use any name)."""
    taken = [int(m["version"][1:]) for m in store.models() if re.fullmatch(r"v\d+", m["version"])]
    return f"v{max(taken, default=-1) + 1}"


def data_counts(rows: list[dict]) -> dict:
    """Labeled rows (store.labeled()) -> {"by_class": {label: n}, "by_slice": {slice: n}, "total": n}.

    The slice is the sample's lighting tag ("unknown" without one). Every class is listed, zeros too:
    a class missing from the training set is what a model card must show.
    """
    by_class = dict.fromkeys(training.LABELS, 0)  # train() has checked every label is one of these
    by_slice: dict[str, int] = {}
    for r in rows:
        by_class[training.LABELS[r["label"]]] += 1
        lighting = str((r.get("tags") or {}).get("lighting") or "unknown")
        by_slice[lighting] = by_slice.get(lighting, 0) + 1
    return {"by_class": by_class, "by_slice": dict(sorted(by_slice.items())), "total": len(rows)}


def calibrate(net, golden: LabeledSet) -> dict:
    """Fit a temperature on half the golden set, measure ECE on the other half before and after.

    -> {"temperature", "ece_before", "ece_after", "n_fit", "n_eval"}; with fewer than two golden
    samples there is nothing to hold out: temperature 1.0 and ECE None.
    """
    fit, held = calibration.split_halves(golden.labels, golden.slices)
    if len(fit) == 0 or len(held) == 0:
        return {"temperature": 1.0, "ece_before": None, "ece_after": None, "n_fit": len(fit), "n_eval": len(held)}
    logits = training.predict_logits(net, golden.images)
    labels = np.asarray(golden.labels, np.int64)
    t = calibration.fit_temperature(logits[fit], labels[fit])

    def ece(temperature: float) -> float:
        # On the half T never saw: ECE on the fitting half would flatter the fit.
        return calibration.expected_calibration_error(calibration.softmax(logits[held] / temperature), labels[held])

    return {"temperature": t, "ece_before": ece(1.0), "ece_after": ece(t), "n_fit": len(fit), "n_eval": len(held)}


def drift_reference(runtime: ModelRuntime, images: np.ndarray, golden: LabeledSet, version: str,
                    batch: int = 256) -> live.Reference | None:
    """What the model makes of its training images and of the held-out golden set: the reference the
    hub compares each site's audit embeddings with (hub/live.py). None when there is too little data."""
    def embed(imgs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        preds = [p for i in range(0, len(imgs), batch) for p in runtime.predict_batch(list(imgs[i:i + batch]))]
        return np.stack([p.embedding for p in preds]), np.asarray([p.confidence for p in preds], np.float32)

    if len(images) < 2 or len(golden) < 2 or runtime.manifest.outputs.get("embedding") is None:
        return None
    train_emb, _ = embed(images)
    held_emb, held_conf = embed(golden.images)
    return live.build_reference(train_emb, held_emb, held_conf, model_version=version)


def train_round(store: HubStore, golden: LabeledSet, signing_key, *, epochs: int = 15, seed: int = 0,
                from_scratch: bool = False, tolerance: float | None = None, min_gain: float = 0.0) -> dict:
    """-> {"version", "parent", "metrics", "labels_total", "seconds", "promoted", "gate"}; registers the new model.

    The gate judges the new model against its parent's stored metrics (tolerance: how far, in
    absolute accuracy or mAP@0.5, any golden slice may fall below the parent — default 0.02 for a
    classifier, detect.round.DETECT_TOLERANCE for a detector; min_gain: by how much the overall
    figure must beat it). Neither outcome changes the desired model: that is the caller's call.
    """
    # One training at a time across every hub process on the database: the version is numbered
    # when training starts and registered when it ends, and two hubs must not both pick v4.
    with store.locked("training"):
        if isinstance(golden, DetectionSet):
            from .detect.round import train_detection_round

            return train_detection_round(store, golden, signing_key, epochs=epochs, seed=seed,
                                         from_scratch=from_scratch, tolerance=tolerance, min_gain=min_gain)
        return _train_round(store, golden, signing_key, epochs=epochs, seed=seed, from_scratch=from_scratch,
                            tolerance=0.02 if tolerance is None else tolerance, min_gain=min_gain)


def _train_round(store: HubStore, golden: LabeledSet, signing_key, *, epochs: int, seed: int, from_scratch: bool,
                 tolerance: float, min_gain: float) -> dict:
    t0 = time.monotonic()
    rows = [r for r in store.labeled() if r["label"] is not None]  # class labels; box labels train a detector
    if not rows:
        raise NothingToTrain("no class-labeled samples to train on")
    images = np.stack([decode_image(store.blobs.get(r["image_sha256"])) for r in rows])
    labels = np.asarray([r["label"] for r in rows], np.int64)
    parent, parent_state = parent_of(store, from_scratch)
    version = next_version(store)
    log.info("training %s from %s on %d labeled samples", version, parent or "scratch", len(rows))
    result = training.train(images, labels, parent_state=parent_state, epochs=epochs, seed=seed)
    calib = calibrate(result.net, golden)
    counts = np.bincount(labels, minlength=len(training.LABELS)).tolist()
    onnx, manifest = training.export_onnx(result.net, version=version, parent=parent, class_counts=counts,
                                          parity_frames=golden.images[:32], temperature=calib["temperature"])
    runtime = ModelRuntime.load(onnx, manifest)
    metrics = {**manifest.metrics, **training.evaluate(runtime, golden.images, golden.labels, golden.slices),
               "train_seconds": round(result.seconds, 2), "train_loss": result.train_loss,
               "calibration": calib, "training": {**result.settings, "from_scratch": from_scratch},
               "data": data_counts(rows)}
    verdict = judge(metrics, store, parent, tolerance, min_gain)
    reference = drift_reference(runtime, images, golden, version)
    register(store, signing_key, manifest, onnx, result.state, metrics, reference=reference, labels_total=len(rows))
    log.info("%s: accuracy %.3f %s; T %.3f, ECE %s -> %s", version, metrics["accuracy"],
             " ".join(f"{k}={v:.3f}" for k, v in sorted(metrics["per_slice"].items())),
             calib["temperature"], calib["ece_before"], calib["ece_after"])
    log_verdict(version, verdict)
    return {"version": version, "parent": parent, "metrics": metrics, "labels_total": len(rows),
            "seconds": round(time.monotonic() - t0, 2), "promoted": verdict.passed, "gate": metrics["gate"]}


def parent_of(store: HubStore, from_scratch: bool) -> tuple[str | None, bytes | None]:
    """The model a round fine-tunes from (the fleet's desired, else the newest) and its torch state."""
    parent = None if from_scratch else store.desired() or (store.latest_model() or {}).get("version")
    parent_state = store.blobs.get(store.model(parent)["state_sha256"]) if parent else None
    if parent and not parent_state:  # registered from outside: no torch weights to fine-tune from
        log.info("%s has no training state here; training from scratch", parent)
        parent, parent_state = None, None
    return parent, parent_state


def judge(metrics: dict, store: HubStore, parent: str | None, tolerance: float, min_gain: float) -> gate.GateResult:
    """The gate against the parent's stored metrics; the verdict is written into `metrics["gate"]`."""
    verdict = gate.judge(metrics, store.model(parent)["metrics"] if parent else None,
                         tolerance=tolerance, min_gain=min_gain)
    metrics["gate"] = {"passed": verdict.passed, "reasons": list(verdict.reasons), "regressed": list(verdict.regressed),
                       "parent": parent, "tolerance": tolerance, "min_gain": min_gain}
    return verdict


def register(store: HubStore, signing_key, manifest, onnx: bytes, state: bytes, metrics: dict, *,
             reference: live.Reference | None, labels_total: int) -> None:
    """Sign manifest + ONNX, pack the artifact and register the version (with its torch state, for
    fine-tuning children, and the drift reference, which stays at the hub)."""
    manifest = dataclasses.replace(manifest, metrics=metrics)
    signature = sign_digest(signing_key, model_digest(manifest.to_json(), onnx))
    artifact = pack(manifest, onnx, signature=signature, key_id=key_id(signing_key))
    stored = dict(metrics)
    if reference is not None:
        stored["drift_reference"] = {"sha256": store.blobs.put(reference.to_bytes()),
                                     "quantile": reference.quantile, "threshold": reference.threshold}
    store.add_model(manifest.version, manifest.parent, artifact, state, stored, labels_total=labels_total)


def log_verdict(version: str, verdict: gate.GateResult) -> None:
    if verdict.passed:
        log.info("%s passes the gate: %s", version, "; ".join(verdict.reasons))
    else:
        log.warning("%s refused by the gate: %s", version, "; ".join(verdict.reasons))
