"""The hub's training set with pseudo-labels (hub/training/pseudo_set.py, workspace.write_data): the
unlabeled frames of a labeled frame's camera within seconds of it join the set, marked and counted
apart; audit frames, other cameras, frames further away and everything labeled do not."""

from __future__ import annotations

import json

import numpy as np

import hubdb
from factories import make_candidate

from edgeloop.hub.project import Project, save_project
from edgeloop.hub.training.workspace import write_data
from edgeloop.shared.images import encode_jpeg
from edgeloop.shared.sampling.policy import AUDIT

CLASSES = ("car", "van", "person")
BASE = np.random.default_rng(0).integers(40, 200, (240, 320, 3), dtype=np.uint8)
CAR = [40.0, 60.0, 120.0, 140.0]
FAINT = np.array([[0.8, 0.8, 0.9, 0.9, 0.2, 1]], np.float32)  # a ghost the model is not sure of


def shot(seed: int) -> bytes:
    img = BASE.astype(np.int16)
    img[60:140, 40:120] = 250  # the parked car
    img += np.random.default_rng(seed).integers(-3, 4, img.shape, dtype=np.int16)
    return encode_jpeg(np.clip(img, 0, 255).astype(np.uint8), quality=95)


def frame(seed: int, t: float, camera: str = "cam-1", **kw):
    return make_candidate(image_bytes=shot(seed), camera_id=camera, captured_at=t, detections=FAINT.copy(),
                          probs=np.array([0.5, 0.3, 0.2], np.float32), **kw)


def test_a_labeled_frame_labels_its_camera_s_neighbours_in_the_training_set(tmp_path):
    store = hubdb.store(tmp_path / "hub")
    proj = Project("detect", CLASSES)
    save_project(store, proj)
    labeled, near = frame(0, 1000.0), frame(1, 1003.0)
    audit, other_camera, later = frame(2, 1002.0, reasons=(AUDIT,)), frame(3, 1001.0, "cam-2"), frame(4, 1100.0)
    labeled_too = frame(5, 1004.0)
    store.ingest([labeled, near, audit, other_camera, later, labeled_too], "site-1", "relay-1")
    store.add_box_labels({labeled.sample_id: [{"class": 0, "xyxy": CAR}],
                          labeled_too.sample_id: [{"class": 1, "xyxy": CAR}]}, source="alice")

    plain = write_data(store, proj, tmp_path / "plain")
    assert plain["pseudo"] == 0 and plain["samples"] == 2
    doc = write_data(store, proj, tmp_path / "data", pseudo_labels=True)
    assert doc["pseudo"] == 1 and doc["samples"] == 3 and doc["version"] != plain["version"]
    coco = json.loads((tmp_path / "data" / "annotations.json").read_text())
    (img,) = [i for i in coco["images"] if i.get("edgeloop_pseudo")]
    assert img["edgeloop_sample_id"] == near.sample_id and img["file_name"] == f"images/{near.sample_id}.jpg"
    (ann,) = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
    assert ann["category_id"] == 2 and np.allclose(ann["bbox"], [40, 60, 80, 80])  # the nearest label's: "van" (1 s away)
    assert (tmp_path / "data" / "images" / f"{near.sample_id}.jpg").read_bytes() == near.image
    assert (tmp_path / "data" / "labels" / f"{near.sample_id}.txt").read_text().split()[0] == "1"
    # A person's labels are untouched: the labeled frames keep theirs, and nothing else was labeled.
    assert {r["sample_id"] for r in store.labeled()} == {labeled.sample_id, labeled_too.sample_id}
