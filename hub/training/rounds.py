"""One turn of the hub's model loop: write the labeled set and the parent for a trainer, run the
trainer (contract.py), and judge what it made (judge.py: evaluate, calibrate, gate, sign, register).

    result = train_round(store, golden, key, epochs=12)     # the project's trainer, from the desired model
    result = train_round(store, golden, key, trainer="command:python my_trainer.py", timeout_s=600)

Registering is not promoting: train_round never changes the desired model. Its result says whether
the gate would promote (`promoted`) and why; the caller decides. A parent registered from outside
keeps its architecture: training from it needs its checkpoint and its trainer, and without them the
round is refused (ParentUnusable) rather than training something else in its place.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edgeloop.shared.errors import EdgeloopError
from edgeloop.shared.ids import new_sample_id
from edgeloop.shared.images import encode_jpeg, sha256
from edgeloop.shared.protocol import Candidate

from ..project import Project, project, saved_trainer
from ..store import HubStore
from . import contract, judge, workspace
from .golden import DetectionSet, LabeledSet

log = logging.getLogger("edgeloop.hub.training.rounds")


class NothingToTrain(EdgeloopError):
    """There are no labeled samples yet."""


class ParentUnusable(EdgeloopError):
    """The parent has no checkpoint, or was made by another trainer than this round's."""


class TrainingFailed(EdgeloopError):
    """The trainer exited non-zero, ran past its timeout, or was cancelled."""


def import_labeled_set(store: HubStore, ds: LabeledSet, source: str = "seed") -> int:
    """Store a labeled set (e.g. the round-0 seed set) as labeled samples; -> how many."""
    n = len(ds)
    classes = len(project(store).classes)
    uniform = np.full(classes, 1.0 / classes, np.float32)
    cands = []
    for i in range(n):
        jpeg = encode_jpeg(ds.images[i])
        cands.append(Candidate(sample_id=new_sample_id(), device_id=source, camera_id=source, captured_at=0.0,
                               model_version="none", probs=uniform, embedding=None, image=jpeg,
                               image_sha256=sha256(jpeg), tags={"lighting": ds.slices[i], "source": source}))
    store.ingest(cands, site=source, relay_id=source, status="labeled")
    store.add_labels({c.sample_id: int(ds.labels[i]) for i, c in enumerate(cands)}, source=source)
    return n


def import_detection_set(store: HubStore, ds: DetectionSet, source: str = "seed") -> int:
    """Store a labeled detection set (e.g. the round-0 seed set) as samples labeled with boxes; -> how many."""
    uniform = np.full(len(ds.names), 1.0 / len(ds.names), np.float32)
    cands, boxes = [], {}
    for i in range(len(ds)):
        jpeg = encode_jpeg(ds.images[i])
        sid = new_sample_id()
        tags = {k: v for k, v in ds.tags[i].items() if v} | {"source": source}
        cands.append(Candidate(sample_id=sid, device_id=source, camera_id=source, captured_at=0.0,
                               model_version="none", probs=uniform, embedding=None, image=jpeg,
                               image_sha256=sha256(jpeg), tags=tags, detections=np.zeros((0, 6), np.float32)))
        boxes[sid] = [{"class": int(c), "xyxy": [float(v) for v in b]} for b, c in zip(ds.boxes[i], ds.classes[i])]
    store.ingest(cands, site=source, relay_id=source, status="labeled")
    store.add_box_labels(boxes, source=source)
    return len(cands)


def next_version(store: HubStore) -> str:
    """v0, v1, ...: one past the highest vN registered (models registered from outside may use any name)."""
    taken = [int(m["version"][1:]) for m in store.models() if re.fullmatch(r"v\d+", m["version"])]
    return f"v{max(taken, default=-1) + 1}"


def trainer_of(store: HubStore, version: str) -> str:
    """The trainer that made a registered model: its lineage's, else the built-in one for a model
    trained here before lineage was kept, else "external" (registered from outside)."""
    row = store.model(version)
    lineage = row["metrics"].get("lineage") or {}
    if lineage.get("trainer"):
        return lineage["trainer"]
    if row.get("state_sha256") and store.blobs.get(row["state_sha256"]):
        return contract.builtin_for(project(store).task)
    return "external"


def choose_parent(store: HubStore, trainer: str, from_scratch: bool) -> str | None:
    """The model a round trains from (the fleet's desired, else the newest), checked to be one this
    trainer can continue; ParentUnusable when it is not."""
    if from_scratch:
        return None
    parent = store.desired() or (store.latest_model() or {}).get("version")
    if parent is None:
        return None
    row = store.model(parent)
    made_by = trainer_of(store, parent)
    if not (row.get("state_sha256") and store.blobs.get(row["state_sha256"])):
        raise ParentUnusable(f"{parent} has no checkpoint here (it was registered without one): training from it "
                             "needs its checkpoint and its trainer (edgeloop hub init --checkpoint DIR --trainer "
                             "command:...), or start from scratch (from_scratch)")
    if made_by != trainer:
        raise ParentUnusable(f"{parent} was made by {made_by}; this round's trainer is {trainer}, which cannot "
                             "continue another trainer's model (set the project's trainer, or from_scratch)")
    return parent


def default_trainer(store: HubStore, proj: Project) -> str:
    return saved_trainer(store) or contract.builtin_for(proj.task)


def train_round(store: HubStore, golden: LabeledSet | DetectionSet, signing_key, *, epochs: int = 15, seed: int = 0,
                from_scratch: bool = False, pseudo_labels: bool = False, tolerance: float | None = None,
                min_gain: float = 0.0,
                trainer: str | None = None, timeout_s: float = 3600.0,
                on_progress: Callable[[dict], None] | None = None, poll: Callable[[], bool] | None = None,
                on_version: Callable[[str], None] | None = None, runner: str = "local") -> dict:
    """-> {"version", "parent", "metrics", "labels_total", "seconds", "promoted", "gate"}; registers the new model.

    The gate judges the new model against its parent's stored metrics (tolerance: how far, in
    absolute accuracy or mAP@0.5, any golden slice may fall below the parent; min_gain: by how much
    the overall figure must beat it). on_progress gets the trainer's progress lines; poll() is asked
    about once a second and stops the trainer when it returns True (a cancel). runner: where the
    trainer runs, "local" or "ray:http://HEAD:8265" (contract.run_trainer). pseudo_labels (detection):
    the trainer also gets the frames the labels label along their tracks (hub/training/pseudo.py).
    """
    # One training at a time across every hub process on the database: the version is numbered
    # when training starts and registered when it ends, and two hubs must not both pick v4.
    with store.locked("training"):
        t0 = time.monotonic()
        proj = project(store)
        trainer = trainer or default_trainer(store, proj)
        contract.trainer_argv(trainer)  # a bad name fails before any file is written
        parent = choose_parent(store, trainer, from_scratch)
        version = next_version(store)
        if on_version is not None:
            on_version(version)
        work = Path(tempfile.mkdtemp(prefix=f"train-{version}-", dir=_jobs_dir(store)))
        try:
            dataset = workspace.write_data(store, proj, work / "data", pseudo_labels=pseudo_labels)
            if dataset["samples"] == 0:
                raise NothingToTrain(f"no frames labeled {'with boxes' if proj.task == 'detect' else 'with a class'} "
                                     "to train on")
            workspace.write_parent(store, parent, work / "parent")
            log.info("training %s with %s from %s on %d labeled samples", version, trainer, parent or "scratch",
                     dataset["samples"])
            outcome = contract.run_trainer(trainer, work / "data", work / "parent", work / "out", epochs=epochs,
                                           seed=seed, timeout_s=timeout_s, on_progress=on_progress, poll=poll,
                                           runner=runner, job_name=f"edgeloop-{work.name}")
            if outcome.reason:
                raise _with_log(TrainingFailed(f"{version}: {outcome.reason}"), outcome.log)
            lineage = {"trainer": trainer, "parent": parent, "dataset": dataset,
                       "settings": {"epochs": epochs, "seed": seed, "from_scratch": from_scratch,
                                    "pseudo_labels": pseudo_labels},
                       "data_counts": dataset.get("counts"), "trainer_seconds": round(outcome.seconds, 2)}
            try:
                result = judge.judge_candidate(store, golden, signing_key, work / "out", version=version,
                                               parent=parent, proj=proj, lineage=lineage, data_dir=work / "data",
                                               tolerance=tolerance, min_gain=min_gain)
            except judge.CandidateRefused as exc:
                raise _with_log(exc, outcome.log)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return {**result, "seconds": round(time.monotonic() - t0, 2), "log": outcome.log[-20:]}


def _with_log(exc: EdgeloopError, lines: list[str]) -> EdgeloopError:
    exc.log = lines  # the trainer's output tail, for the job that ran it
    return exc


def _jobs_dir(store: HubStore) -> Path:
    path = store.data_dir / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path
