"""Box labels for a detection project: the project comes from the fleet's detector, boxes go in through
the API (checked whole, refused naming the field) and into the store exactly, and out again as COCO
(read by pycocotools), YOLO (Ultralytics' detect layout) and Label Studio rectangles, and back in.

The API tests run against a real hub process on loopback whose desired model is a tiny YOLOv8-style
detector exported by torch and signed with the hub's key; the export tests use the store directly,
on the suite's database (SQLite, or PostgreSQL with EDGELOOP_TEST_DB=postgresql)."""

from __future__ import annotations

import json
import math
import warnings
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hubdb
from factories import fixed_box_detector_onnx, make_candidate, start_hub
from test_hub_api import call
from test_hub_labeling import jcall, queue_candidates

from edgeloop.hub import _boxsets as boxsets
from edgeloop.hub.datasets import (DatasetError, export_coco, export_labelstudio, export_yolo, import_coco,
                                   import_labelstudio)
from edgeloop.hub.project import EDGE_TOLERANCE_PX, MAX_BOXES, Project, check_xyxy, project
from edgeloop.shared.artifact import pack, sign_artifact
from edgeloop.shared.images import encode_jpeg
from edgeloop.shared.manifest import InputSpec, ModelManifest

CLASSES = ("car", "van", "person")
W, H = 320, 240
PRE = np.array([[0.10, 0.15, 0.35, 0.55, 0.91, 0], [0.55, 0.50, 0.90, 0.95, 0.62, 1]], np.float32)


# -- a detector, and frames it saw -----------------------------------------------------------------
def detector_onnx(tmp_path, side: int = 64) -> bytes:
    """A tiny YOLOv8-style detector, (1, 4+3, 2) fixed boxes, exported by torch."""
    pytest.importorskip("torch")
    return fixed_box_detector_onnx(tmp_path / "det.onnx", PRE, len(CLASSES), side)


def detector_manifest(version: str = "det-1", classes=CLASSES) -> ModelManifest:
    return ModelManifest(version=version, task="detection", input=InputSpec(name="images", height=64, width=64),
                         outputs={"detections": "output0"}, labels=tuple(classes))


def frame_jpeg(seed: int, w: int = W, h: int = H) -> bytes:
    return encode_jpeg(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def frames(n: int, seed: int = 0, **kw) -> list:
    return [make_candidate(value=0.9 - 0.01 * i, image_bytes=frame_jpeg(seed + i), model_version="det-1",
                           probs=np.array([0.5, 0.3, 0.2], np.float32), detections=PRE.copy(),
                           reasons=("detection_count",), **kw) for i in range(n)]


# -- the API, on a real hub ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A real hub whose desired model is a detector of CLASSES -> url. Before the detector it is a
    classification hub of the legacy digit classes."""
    root = tmp_path_factory.mktemp("hub-boxes")
    svc, url = start_hub(root)
    assert jcall(url, "GET", "/api/v1/project")[1] == {"task": "classify", "classes": [str(i) for i in range(10)]}
    from edgeloop.shared.signing import load_private_key

    key = load_private_key((root / "data" / "keys" / "hub.key").read_bytes())
    art = sign_artifact(pack(detector_manifest(), detector_onnx(root)), key)
    assert call(url, "POST", "/api/v1/models", art, ctype="application/octet-stream")[0] == 201
    assert jcall(url, "POST", "/api/v1/desired", {"version": "det-1"})[0] == 200
    yield url
    assert svc.stop() == 0


def queued(url, n: int, seed: int = 0) -> list[str]:
    """n 320x240 frames with the model's boxes, posted as a relay posts them and queued -> their ids."""
    return queue_candidates(url, frames(n, seed))


def post(url, body):
    return jcall(url, "POST", "/api/v1/labels", body)


def label_rows(url) -> dict[str, dict]:
    return {r["sample_id"]: r for r in jcall(url, "GET", "/api/v1/labels")[1]["labels"]}


def test_the_project_is_the_desired_detectors(hub):
    assert jcall(hub, "GET", "/api/v1/project") == (200, {"task": "detect", "classes": list(CLASSES)})
    assert jcall(hub, "GET", "/api/v1/project", token=None)[0] == 401


def test_queue_items_carry_the_image_size_the_model_boxes_and_no_label(hub):
    (sid,) = queued(hub, 1, seed=100)
    item = next(it for it in jcall(hub, "GET", "/api/v1/label-queue?limit=1000")[1]["items"] if it["sample_id"] == sid)
    assert (item["width"], item["height"], item["label"]) == (W, H, None)
    assert np.allclose(item["detections"], PRE, atol=1e-4)
    assert jcall(hub, "GET", f"/api/v1/samples/{sid}")[1]["width"] == W


def test_boxes_are_stored_exactly_class_names_become_indices(hub):
    a, b = queued(hub, 2, seed=200)
    boxes = [{"class": 2, "xyxy": [10.5, 20.25, 100.125, 200.0]}, {"class": "van", "xyxy": [0, 0, W, H]},
             {"class": 0, "xyxy": [1 / 3, 2 / 7, 300.1, 239.9]}]
    status, reply = post(hub, {"boxes": {a: boxes, b: []}, "source": "alice"})
    assert status == 200 and reply == {"labeled": 2, "ambiguous": 0, "unknown": []}
    want = [{"class": 2, "xyxy": [10.5, 20.25, 100.125, 200.0]}, {"class": 1, "xyxy": [0.0, 0.0, W, H]},
            {"class": 0, "xyxy": [1 / 3, 2 / 7, 300.1, 239.9]}]
    rows = label_rows(hub)
    assert rows[a]["boxes"] == want and rows[a]["label"] is None and rows[a]["source"] == "alice"
    assert rows[b]["boxes"] == []  # an explicit "no objects"
    s = jcall(hub, "GET", f"/api/v1/samples/{a}")[1]
    assert s["status"] == "labeled" and s["label"] == {"boxes": want, "source": "alice"}
    assert jcall(hub, "GET", f"/api/v1/samples/{b}")[1]["label"] == {"boxes": [], "source": "alice"}
    # Ids the hub does not hold are reported, as for class labels.
    assert post(hub, {"boxes": {"01JNOTATTHEHUB000000000000": []}})[1]["unknown"] == ["01JNOTATTHEHUB000000000000"]


def test_a_drag_a_pixel_past_the_edge_is_clipped_to_it(hub):
    (sid,) = queued(hub, 1, seed=300)
    assert post(hub, {"boxes": {sid: [{"class": 0, "xyxy": [-0.6, -1.0, W + 0.4, H + 1.0]}]}})[0] == 200
    assert label_rows(hub)[sid]["boxes"] == [{"class": 0, "xyxy": [0.0, 0.0, W, H]}]


BAD = [  # (the sample's boxes, the words of the 400, the field it names)
    ([{"class": 0, "xyxy": [10, 10, 50, 50]}, {"class": 1, "xyxy": [10, 10, 50, 50]},
      {"class": 0, "xyxy": [300, 200, 330, 230]}], "lies outside the 320x240 image", "[2].xyxy"),
    ([{"class": 0, "xyxy": [-5, 10, 50, 50]}], "lies outside the 320x240 image", "[0].xyxy"),
    ([{"class": 0, "xyxy": [10, 10, 10, 50]}], "zero or negative area", "[0].xyxy"),
    ([{"class": 0, "xyxy": [50, 10, 10, 50]}], "zero or negative area", "[0].xyxy"),
    ([{"class": 0, "xyxy": [10, 10, float("nan"), 50]}], "not finite", "[0].xyxy"),
    ([{"class": 0, "xyxy": [10, 10, float("inf"), 50]}], "not finite", "[0].xyxy"),
    ([{"class": 0, "xyxy": [10, 10, 50]}], "four numbers", "[0].xyxy"),
    ([{"class": 0, "xyxy": [10, 10, "50", 60]}], "four numbers", "[0].xyxy"),
    ([{"class": 0, "xyxy": [W + 0.5, 10, W + 1, 50]}], "no area inside", "[0].xyxy"),
    ([{"class": "tractor", "xyxy": [10, 10, 50, 50]}],
     "'tractor' is not one of the project's classes (car, van, person)", "[0].class"),
    ([{"class": 3, "xyxy": [10, 10, 50, 50]}], "3 is not a class index of the project (0..2: car, van, person)",
     "[0].class"),
    ([{"class": True, "xyxy": [10, 10, 50, 50]}], "expected a class index or name", "[0].class"),
    ([{"xyxy": [10, 10, 50, 50]}], "missing", "[0].class"),
    ([[0, 10, 10, 50, 50]], "expected an object", "[0]"),
    ({"class": 0}, "expected a list of boxes", ""),
    ([{"class": 0, "xyxy": [1, 1, 2, 2]}] * (MAX_BOXES + 1), f"more than the limit of {MAX_BOXES}", ""),
]


@pytest.mark.parametrize("boxes, words, field", BAD, ids=[w[:24] + f[:10] for _, w, f in BAD])
def test_a_bad_box_is_refused_naming_the_field_and_nothing_is_stored(hub, boxes, words, field):
    good, bad = queued(hub, 2, seed=400)
    # JSON with NaN/Infinity literals, as a browser's JSON.stringify never sends but a script may.
    body = json.dumps({"boxes": {good: [{"class": 0, "xyxy": [1, 1, 20, 20]}], bad: boxes}, "ambiguous": []})
    status, reply = call(hub, "POST", "/api/v1/labels", body.encode(), ctype="application/json")
    assert status == 400 and words in reply["error"] and f"boxes.{bad}{field}" in reply["error"], reply
    rows = label_rows(hub)
    assert good not in rows and bad not in rows  # the request is checked whole: the good frame waits too
    assert {jcall(hub, "GET", f"/api/v1/samples/{s}")[1]["status"] for s in (good, bad)} == {"queued"}


@pytest.mark.parametrize("body, words", [
    ({"labels": {"x": 1}}, "detection project (car, van, person): send boxes"),
    ({"boxes": {"x": []}, "ambiguous": ["x"]}, "ambiguous: 'x' is also given boxes"),
    ({"boxes": {"x": []}, "labels": {"x": 0}}, "boxes.x: also given a class label"),
    ({"boxes": ["x"]}, "boxes: expected an object"),
])
def test_requests_that_do_not_fit_a_detection_project_are_refused(hub, body, words):
    (sid,) = queued(hub, 1, seed=500)
    body = json.loads(json.dumps(body).replace('"x"', json.dumps(sid)))
    status, reply = post(hub, body)
    assert status == 400 and words.replace("'x'", repr(sid)).replace("boxes.x", f"boxes.{sid}") in reply["error"], reply
    assert sid not in label_rows(hub)


def test_undo_and_ambiguous_work_for_box_labels(hub):
    a, b = queued(hub, 2, seed=600)
    assert post(hub, {"boxes": {a: [{"class": 1, "xyxy": [5, 5, 60, 40]}]}, "ambiguous": [b]})[1] == \
        {"labeled": 1, "ambiguous": 1, "unknown": []}
    queue = [it["sample_id"] for it in jcall(hub, "GET", "/api/v1/label-queue?limit=1000")[1]["items"]]
    assert a not in queue and b not in queue
    assert jcall(hub, "DELETE", f"/api/v1/labels/{a}")[1] == {"sample_id": a, "was": "labeled", "status": "queued"}
    assert jcall(hub, "DELETE", f"/api/v1/labels/{b}")[1]["was"] == "ambiguous"
    s = jcall(hub, "GET", f"/api/v1/samples/{a}")[1]
    assert s["status"] == "queued" and s["label"] is None and a not in label_rows(hub)
    queue = [it["sample_id"] for it in jcall(hub, "GET", "/api/v1/label-queue?limit=1000")[1]["items"]]
    assert {a, b} <= set(queue)
    # Relabeled after the undo: the new boxes replace nothing, and stand.
    assert post(hub, {"boxes": {a: []}})[0] == 200 and label_rows(hub)[a]["boxes"] == []


# -- the store -------------------------------------------------------------------------------------
def detection_store(path, classes=CLASSES):
    """A store whose project is a detector of `classes` (an unsigned artifact: the store does not verify)."""
    s = hubdb.store(path)
    s.add_model("det-1", None, pack(detector_manifest(classes=classes), b"onnx"), b"", {}, 0)
    s.set_desired("det-1")
    return s


SIZES = [(W, H), (64, 48), (200, 300)]


def labeled_frames(n: int = 9):
    """n frames of three sizes with boxes (every third: no objects) -> (candidates, {id: boxes})."""
    rng = np.random.default_rng(1)
    cands, boxes = [], {}
    for i in range(n):
        w, h = SIZES[i % 3]
        c = make_candidate(image=frame_jpeg(i, w, h), sample_id=f"01JBOXES{i:018d}")
        cands.append(c)
        k = 0 if i % 3 == 2 else 1 + i % 4
        x1, y1 = rng.uniform(0, w - 10, k), rng.uniform(0, h - 10, k)
        x2, y2 = x1 + rng.uniform(1, w - x1), y1 + rng.uniform(1, h - y1)
        boxes[c.sample_id] = [{"class": int(rng.integers(0, len(CLASSES))), "xyxy": [float(v) for v in b]}
                              for b in zip(x1, y1, np.minimum(x2, w), np.minimum(y2, h))]
    return cands, boxes


@pytest.fixture
def boxed(tmp_path):
    cands, boxes = labeled_frames()
    s = detection_store(tmp_path / "hub")
    s.ingest(cands, "site-1", "relay-1")
    assert sorted(s.add_box_labels(boxes, source="test")) == sorted(boxes)
    yield s, cands, boxes
    s.close()


@pytest.fixture
def fresh(tmp_path, boxed):
    """A second detection hub holding the same samples and no labels."""
    s = detection_store(tmp_path / "fresh")
    s.ingest(boxed[1], "site-1", "relay-1")
    yield s
    s.close()


def hub_boxes(store) -> dict[str, list[dict]]:
    return {r["sample_id"]: r["boxes"] for r in store.labeled() if r["boxes"] is not None}


def assert_same_boxes(got: dict, want: dict, tol: float = 1e-4):
    assert got.keys() == want.keys()
    for sid in want:
        assert [b["class"] for b in got[sid]] == [b["class"] for b in want[sid]], sid
        np.testing.assert_allclose(np.array([b["xyxy"] for b in got[sid]]).reshape(-1, 4),
                                   np.array([b["xyxy"] for b in want[sid]]).reshape(-1, 4), atol=tol, err_msg=sid)


def test_the_store_keeps_boxes_exactly_and_sizes_from_the_header(boxed):
    store, cands, boxes = boxed
    assert hub_boxes(store) == boxes  # exactly: JSON floats round-trip
    rows = {r["sample_id"]: r for r in store.labeled()}
    for i, c in enumerate(cands):
        assert (rows[c.sample_id]["width"], rows[c.sample_id]["height"]) == SIZES[i % 3]
        assert rows[c.sample_id]["label"] is None and rows[c.sample_id]["source"] == "test"
    assert store.sample_sizes([cands[1].sample_id, "nope"]) == {cands[1].sample_id: SIZES[1]}
    # A class label replaces boxes and the other way round; labels() shows which it is.
    sid = cands[0].sample_id
    store.add_labels({sid: 2}, source="bob")
    assert {r["sample_id"]: (r["label"], r["boxes"]) for r in store.labels("bob")} == {sid: (2, None)}
    assert store.sample(sid)["label"] == {"class": 2, "source": "bob"}
    store.add_box_labels({sid: []}, source="bob")
    assert store.sample(sid)["label"] == {"boxes": [], "source": "bob"}
    assert store.unlabel(sid) == "labeled" and store.sample(sid)["label"] is None


def test_a_database_from_before_boxes_gains_the_columns(tmp_path):
    store = hubdb.store(tmp_path / "old")
    c = make_candidate(image=frame_jpeg(0))
    store.ingest([c], "site-1", "relay-1")
    store.add_labels({c.sample_id: 1}, source="old")
    for table, column in (("labels", "boxes"), ("samples", "width"), ("samples", "height")):
        store.db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    store.close()
    store = hubdb.store(tmp_path / "old")  # reopened: the columns come back, the old rows keep their label
    assert {"width", "height"} <= store.db.columns("samples") and "boxes" in store.db.columns("labels")
    assert [(r["label"], r["boxes"]) for r in store.labels()] == [(1, None)]
    s = store.sample(c.sample_id)  # an old row's size is read from its image's header
    assert (s["width"], s["height"]) == (W, H) and s["label"] == {"class": 1, "source": "old"}
    store.close()


def test_the_project_follows_the_desired_model_else_the_newest(tmp_path):
    store = hubdb.store(tmp_path / "p")
    assert project(store) == Project("classify", tuple(str(i) for i in range(10)))
    store.add_model("det-1", None, pack(detector_manifest(), b"onnx"), b"", {}, 0)
    assert project(store) == Project("detect", CLASSES)
    store.add_model("det-2", "det-1", pack(detector_manifest("det-2", ("a", "b")), b"onnx"), b"", {}, 0)
    assert project(store).classes == ("a", "b")  # the newest, while nothing is desired
    store.set_desired("det-1")
    assert project(store).classes == CLASSES
    store.close()


# -- exports ---------------------------------------------------------------------------------------
def test_coco_export_loads_in_pycocotools_and_scores_itself_perfectly(boxed, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    store, cands, boxes = boxed
    path = export_coco(store, tmp_path / "coco")
    gt = COCO(str(path))
    assert [gt.cats[k]["name"] for k in sorted(gt.cats)] == list(CLASSES) and sorted(gt.cats) == [1, 2, 3]
    by_sid = {img["edgeloop_sample_id"]: img for img in gt.dataset["images"]}
    assert by_sid.keys() == boxes.keys()
    for sid, img in by_sid.items():
        assert img["file_name"] == f"images/{sid}.jpg" and (path.parent / img["file_name"]).exists()
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[img["id"]]))
        assert len(anns) == len(boxes[sid])  # "no objects": an image without annotations
        for a, b in zip(anns, boxes[sid]):
            x1, y1, x2, y2 = b["xyxy"]
            assert a["category_id"] == b["class"] + 1 and a["iscrowd"] == 0
            np.testing.assert_allclose(a["bbox"], [x1, y1, x2 - x1, y2 - y1])
            assert math.isclose(a["area"], (x2 - x1) * (y2 - y1))
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
            for a in gt.dataset["annotations"]]
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.evaluate(), ev.accumulate()
    with warnings.catch_warnings():
        ev.summarize()
    assert ev.stats[1] == pytest.approx(1.0)  # AP@0.5 of the labels against themselves


def read_yolo(out):
    """A small reader of Ultralytics' detect layout: data.yaml's names, then a label file per image."""
    import yaml

    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["train"] == data["val"] == "images" and (out / data["train"]).is_dir()
    names = data["names"]
    frames = {}
    for img in sorted((out / "images").glob("*.jpg")):
        rows = [line.split() for line in (out / "labels" / f"{img.stem}.txt").read_text().splitlines()]
        frames[img.stem] = [(int(r[0]), [float(v) for v in r[1:]]) for r in rows]
    return data, names, frames


def test_yolo_export_is_the_ultralytics_detect_layout(boxed, tmp_path):
    store, cands, boxes = boxed
    out = export_yolo(store, tmp_path / "yolo")
    data, names, frames = read_yolo(out)
    assert names == dict(enumerate(CLASSES)) and data["nc"] == len(CLASSES) and data["path"] == str(out.resolve())
    assert frames.keys() == boxes.keys()
    sizes = {c.sample_id: SIZES[i % 3] for i, c in enumerate(cands)}
    for sid, rows in frames.items():
        assert len(rows) == len(boxes[sid])  # no objects: an empty file
        w, h = sizes[sid]
        for (cls, (cx, cy, bw, bh)), b in zip(rows, boxes[sid]):
            assert cls == b["class"] and all(0 <= v <= 1 for v in (cx, cy, bw, bh))
            np.testing.assert_allclose([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h],
                                       b["xyxy"], atol=1e-3)
    # A re-export after an undo drops the frame's files.
    store.unlabel(cands[0].sample_id)
    export_yolo(store, out)
    assert not (out / "labels" / f"{cands[0].sample_id}.txt").exists()
    assert not (out / "images" / f"{cands[0].sample_id}.jpg").exists()


def test_data_yaml_quotes_any_class_name():
    import yaml

    awkward = ("car", 'a: "b"', "#not a comment", "- dash", "yes", "€ unicode \\ back", "0")
    data = yaml.safe_load(boxsets.data_yaml("/tmp/it's: here", awkward))
    assert data["names"] == dict(enumerate(awkward)) and data["path"] == "/tmp/it's: here"


def test_labelstudio_results_fit_the_written_config(boxed, tmp_path):
    store, cands, boxes = boxed
    path = export_labelstudio(store, tmp_path / "ls")
    tasks = json.loads(path.read_text())
    config = ET.parse(path.parent / "labeling_config.xml").getroot()
    image, rects = config.find("Image"), config.find("RectangleLabels")
    assert image.get("value") == "$image" and rects.get("toName") == image.get("name")
    values = [lab.get("value") for lab in rects.findall("Label")]
    assert values == list(CLASSES)
    ids = []
    for t in tasks:
        sid = t["data"]["sample_id"]
        assert t["data"]["image"] == f"/data/local-files/?d=images/{sid}.jpg"
        assert (path.parent / "images" / f"{sid}.jpg").exists()
        (ann,) = t["annotations"]
        assert len(ann["result"]) == len(boxes[sid])
        for res, b in zip(ann["result"], boxes[sid]):
            assert res["type"] == "rectanglelabels" and res["from_name"] == rects.get("name")
            assert res["to_name"] == image.get("name") and res["image_rotation"] == 0
            v = res["value"]
            assert v["rectanglelabels"] == [CLASSES[b["class"]]] and set(v["rectanglelabels"]) <= set(values)
            assert v["rotation"] == 0 and all(0 <= v[k] <= 100 for k in ("x", "y", "width", "height"))
            assert v["x"] + v["width"] <= 100 + 1e-9 and v["y"] + v["height"] <= 100 + 1e-9
            w, h = res["original_width"], res["original_height"]
            np.testing.assert_allclose([v["x"] * w / 100, v["y"] * h / 100, (v["x"] + v["width"]) * w / 100,
                                        (v["y"] + v["height"]) * h / 100], b["xyxy"], atol=1e-6)
            ids.append(res["id"])
    assert len(ids) == len(set(ids)) == sum(map(len, boxes.values()))
    # With a base URL: the images under it.
    path = export_labelstudio(store, tmp_path / "ls2", image_url_base="https://files.example/x/")
    tasks = json.loads(path.read_text())
    assert tasks[0]["data"]["image"] == f"https://files.example/x/images/{tasks[0]['data']['sample_id']}.jpg"


@pytest.mark.parametrize("fmt", ["coco", "labelstudio"])
def test_round_trip_into_a_fresh_hub_keeps_every_box(boxed, fresh, tmp_path, fmt):
    store, _, boxes = boxed
    if fmt == "coco":
        result = import_coco(fresh, export_coco(store, tmp_path / "out"))
    else:
        path = export_labelstudio(store, tmp_path / "out")
        tasks = json.loads(path.read_text())
        for t in tasks:  # matched by the image URL alone, as Label Studio's own export leaves it
            del t["data"]["sample_id"]
        path.write_text(json.dumps(tasks))
        result = import_labelstudio(fresh, path)
    assert_same_boxes(hub_boxes(fresh), boxes, tol=1e-6)
    assert len(result.matched) == len(boxes) and result.conflicts == () and result.skipped == 0
    # Imported again into the hub they came from: nothing differs, nothing is reported replaced.
    again = (import_coco(store, tmp_path / "out" / "annotations.json") if fmt == "coco"
             else import_labelstudio(store, path))
    assert again.conflicts == ()


def _refused(fn, store, path, *needles):
    before = hub_boxes(store)
    with pytest.raises(DatasetError) as err:
        fn(store, path)
    for needle in needles:
        assert needle in str(err.value), str(err.value)
    assert hub_boxes(store) == before  # nothing stored
    return err.value


def test_coco_import_refuses_bad_boxes_naming_them(boxed, fresh, tmp_path):
    store, cands, boxes = boxed
    path = export_coco(store, tmp_path / "coco")
    doc = json.loads(path.read_text())
    doc["categories"][1]["name"] = "tractor"
    doc["annotations"][0]["bbox"] = [300, 200, 40, 10]  # image 1 is 320x240: x2 = 340
    doc["annotations"][1]["bbox"] = [10, 10, 0, 5]
    path.write_text(json.dumps(doc))
    _refused(import_coco, fresh, path, "annotations[0] box", "lies outside the 320x240 image", "annotations[1] box",
             "zero or negative area", "'tractor' is not one of the project's classes (car, van, person)")


def test_labelstudio_import_refuses_bad_boxes_and_unknown_samples(boxed, fresh, tmp_path):
    store, _, boxes = boxed
    path = export_labelstudio(store, tmp_path / "ls")
    tasks = json.loads(path.read_text())
    tasks[0]["annotations"][0]["result"][0]["value"]["width"] = 150  # percent: past the right edge
    tasks[1]["annotations"][0]["result"][0]["value"]["rectanglelabels"] = ["bus"]
    tasks[3]["annotations"][0]["result"][0]["value"]["rotation"] = 30
    tasks[4]["data"]["sample_id"] = "01JNOTATTHEHUB000000000000"
    path.write_text(json.dumps(tasks))
    err = _refused(import_labelstudio, fresh, path, "tasks[0].annotations[0].result[0] box", "lies outside",
                   "'bus' is not one of", "tasks[3].annotations[0].result[0].value.rotation", "not at the hub")
    assert err.unknown_ids == ("01JNOTATTHEHUB000000000000",)


def test_labelstudio_annotation_without_rectangles_is_refused_and_no_annotation_skipped(boxed, fresh, tmp_path):
    store, _, _ = boxed
    path = export_labelstudio(store, tmp_path / "ls")
    tasks = json.loads(path.read_text())
    tasks[2]["annotations"] = []  # never labeled in Label Studio: skipped
    path.write_text(json.dumps(tasks))
    assert import_labelstudio(fresh, path).skipped == 1
    tasks[5]["annotations"] = [{"result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                            "value": {"choices": ["car"]}}]}]
    path.write_text(json.dumps(tasks))
    _refused(import_labelstudio, fresh, path, "tasks[5].annotations[0].result: no rectanglelabels")


def test_cli_exports_and_imports_boxes(boxed, fresh, tmp_path):
    from click.testing import CliRunner

    from edgeloop.cli import main

    store, _, boxes = boxed
    runner = CliRunner()
    for fmt in ("yolo", "coco"):
        r = runner.invoke(main, ["hub", "export", "--data", str(store.data_dir), *hubdb.args(store.data_dir),
                                 "--format", fmt, "--out", str(tmp_path / fmt)])
        assert r.exit_code == 0, r.output
    assert (tmp_path / "yolo" / "data.yaml").exists()
    r = runner.invoke(main, ["hub", "import", "--data", str(fresh.data_dir), *hubdb.args(fresh.data_dir),
                             "--format", "coco", str(tmp_path / "coco" / "annotations.json")])
    assert r.exit_code == 0 and f"imported {len(boxes)} labels" in r.output, r.output
    assert_same_boxes(hub_boxes(fresh), boxes)


# -- the conversions and checks, for any box -------------------------------------------------------
@st.composite
def frame_boxes(draw):
    w, h = draw(st.integers(1, 4000)), draw(st.integers(1, 4000))
    coord = st.floats(0, 1, allow_nan=False)
    boxes = []
    for _ in range(draw(st.integers(0, 6))):
        xs = sorted(draw(st.lists(coord, min_size=2, max_size=2, unique=True)))
        ys = sorted(draw(st.lists(coord, min_size=2, max_size=2, unique=True)))
        xyxy = [xs[0] * w, ys[0] * h, xs[1] * w, ys[1] * h]
        if xyxy[2] > xyxy[0] and xyxy[3] > xyxy[1]:
            boxes.append({"class": draw(st.integers(0, 2)), "xyxy": xyxy})
    return w, h, boxes


@settings(max_examples=200, deadline=None)
@given(frame_boxes())
def test_every_box_inside_the_image_is_accepted_unchanged_and_survives_each_format(fb):
    w, h, boxes = fb
    proj = Project("detect", CLASSES)
    ok, problems = proj.check_boxes("boxes.s", boxes, (w, h))
    assert problems == [] and ok == boxes
    row = {"sample_id": "s", "width": w, "height": h, "boxes": boxes}
    tol = 1e-6 * max(w, h)
    back, probs = boxsets.coco_frames(boxsets.coco_document([row], CLASSES), lambda n: n)
    ls, probs2, _ = boxsets.labelstudio_frames(boxsets.labelstudio_tasks([row], CLASSES), lambda d: d["sample_id"])
    assert probs == probs2 == []
    for frame, unit in ((back[0], "xywh_px"), (ls[0], "xywh_pct")):
        got = [(CLASSES.index(name), boxsets.to_xyxy(c, u, (w, h))) for _, name, c, u in frame[2]]
        assert [c for c, _ in got] == [b["class"] for b in boxes]
        for (_, xyxy), b in zip(got, boxes):
            assert max(abs(u - v) for u, v in zip(xyxy, b["xyxy"])) <= tol
    lines = boxsets.yolo_lines(boxes, w, h).splitlines()
    for line, b in zip(lines, boxes):
        cls, cx, cy, bw, bh = line.split()
        assert int(cls) == b["class"] and all(0 <= float(v) <= 1 for v in (cx, cy, bw, bh))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2000), st.integers(1, 2000), st.integers(0, 3),
       st.floats(EDGE_TOLERANCE_PX * 1.001, 1e6, allow_nan=False))
def test_a_box_beyond_the_tolerance_is_refused_on_every_side(w, h, side, beyond):
    xyxy = [0.0, 0.0, float(w), float(h)]
    xyxy[side] = -beyond if side < 2 else xyxy[side] + beyond
    ok, problem = check_xyxy("b", xyxy, (w, h))
    assert ok is None and "lies outside" in problem
    xyxy[side] = -EDGE_TOLERANCE_PX if side < 2 else (w, h)[side - 2] + EDGE_TOLERANCE_PX  # just within: clipped
    assert check_xyxy("b", xyxy, (w, h)) == ([0.0, 0.0, float(w), float(h)], None)
