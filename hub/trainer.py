"""One turn of the hub's model loop: train from the parent on everything labeled, evaluate on the
golden set per slice, export to ONNX (parity-checked), register the artifact.
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

from . import training
from .golden import LabeledSet
from .store import HubStore

log = logging.getLogger("edgeloop.hub.trainer")


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


def train_round(store: HubStore, golden: LabeledSet, signing_key, *, epochs: int = 15, seed: int = 0,
                from_scratch: bool = False) -> dict:
    """-> {"version", "parent", "metrics", "labels_total", "seconds"}; registers the new model."""
    t0 = time.monotonic()
    rows = store.labeled()
    if not rows:
        raise NothingToTrain("no labeled samples to train on")
    images = np.stack([decode_image(store.blobs.get(r["image_sha256"])) for r in rows])
    labels = np.asarray([r["label"] for r in rows], np.int64)
    parent = None if from_scratch else store.desired() or (store.latest_model() or {}).get("version")
    parent_state = store.blobs.get(store.model(parent)["state_sha256"]) if parent else None
    if parent and not parent_state:  # registered from outside: no torch weights to fine-tune from
        log.info("%s has no training state here; training from scratch", parent)
        parent, parent_state = None, None
    version = next_version(store)
    log.info("training %s from %s on %d labeled samples", version, parent or "scratch", len(rows))
    result = training.train(images, labels, parent_state=parent_state, epochs=epochs, seed=seed)
    counts = np.bincount(labels, minlength=len(training.LABELS)).tolist()
    onnx, manifest = training.export_onnx(result.net, version=version, parent=parent, class_counts=counts,
                                          parity_frames=golden.images[:32])
    runtime = ModelRuntime.load(onnx, manifest)
    metrics = {**manifest.metrics, **training.evaluate(runtime, golden.images, golden.labels, golden.slices),
               "train_seconds": round(result.seconds, 2), "train_loss": result.train_loss}
    manifest = dataclasses.replace(manifest, metrics=metrics)
    manifest_bytes = manifest.to_json()
    signature = sign_digest(signing_key, model_digest(manifest_bytes, onnx))
    artifact = pack(manifest, onnx, signature=signature, key_id=key_id(signing_key))
    store.add_model(version, parent, artifact, result.state, metrics, labels_total=len(rows))
    log.info("%s: accuracy %.3f %s", version, metrics["accuracy"],
             " ".join(f"{k}={v:.3f}" for k, v in sorted(metrics["per_slice"].items())))
    return {"version": version, "parent": parent, "metrics": metrics, "labels_total": len(rows),
            "seconds": round(time.monotonic() - t0, 2)}
