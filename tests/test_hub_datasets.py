"""Export the hub's labeled set (COCO, YOLO, Label Studio) and import labels back, matched by sample id."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
import hubdb
from factories import make_candidate

from edgeloop.cli import main
from edgeloop.hub.datasets import (DatasetError, export_coco, export_labelstudio, export_yolo, import_coco,
                                   import_labelstudio, validate_coco, validate_labelstudio)
from edgeloop.hub.store import HubStore
from edgeloop.hub.training.classifier import LABELS
from edgeloop.shared.images import encode_jpeg


def candidates(n: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes = [(24, 32), (28, 28), (16, 40)]
    return [make_candidate(image=encode_jpeg(rng.integers(0, 256, (*sizes[i % 3], 3), dtype=np.uint8)),
                           sample_id=f"01JSAMPLE{i:017d}")
            for i in range(n)]


def fill(store: HubStore, cands, labeled: int = 10) -> dict[str, int]:
    store.ingest(cands, "site-1", "relay-1")
    labels = {c.sample_id: i % len(LABELS) for i, c in enumerate(cands[:labeled])}
    store.add_labels(labels, source="test")
    return labels


def hub_labels(store: HubStore) -> dict[str, int]:
    return {r["sample_id"]: r["label"] for r in store.labeled()}


@pytest.fixture
def cands():
    return candidates()


@pytest.fixture
def store(tmp_path, cands):
    s = hubdb.store(tmp_path / "hub")
    fill(s, cands)
    yield s
    s.close()


@pytest.fixture
def fresh(tmp_path, cands):
    """A second hub holding the same samples and no labels."""
    s = hubdb.store(tmp_path / "fresh")
    s.ingest(cands, "site-1", "relay-1")
    yield s
    s.close()


def test_coco_export_validates_and_writes_every_image(store, cands, tmp_path):
    path = export_coco(store, tmp_path / "coco")
    doc = json.loads(path.read_text())
    validate_coco(doc)
    assert len(doc["images"]) == len(doc["annotations"]) == 10
    assert [c["name"] for c in doc["categories"]] == list(LABELS)
    first = doc["images"][0]
    assert first["file_name"] == f"{first['edgeloop_sample_id']}.jpg"
    assert (first["height"], first["width"]) == (24, 32)
    assert doc["annotations"][0]["bbox"] == [0, 0, 32, 24] and doc["annotations"][0]["area"] == 32 * 24
    for img in doc["images"]:
        sample = store.sample(img["edgeloop_sample_id"])
        assert (tmp_path / "coco" / "images" / img["file_name"]).read_bytes() == store.blobs.get(sample["image_sha256"])


def test_yolo_export_is_the_classification_layout(store, tmp_path):
    out = export_yolo(store, tmp_path / "yolo")
    assert (out / "classes.txt").read_text().split() == list(LABELS)
    files = {p.stem: p.parent.name for p in (out / "train").rglob("*.jpg")}
    assert {sid: LABELS[lab] for sid, lab in hub_labels(store).items()} == files
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(LABELS)  # empty classes keep their folder


def test_labelstudio_export_validates(store, tmp_path):
    path = export_labelstudio(store, tmp_path / "ls")
    tasks = json.loads(path.read_text())
    validate_labelstudio(tasks)
    assert len(tasks) == 10
    t = tasks[0]
    assert t["data"]["image"] == f"images/{t['data']['sample_id']}.jpg"
    assert (tmp_path / "ls" / t["data"]["image"]).exists()
    res = t["annotations"][0]["result"][0]
    assert res == {"from_name": "label", "to_name": "image", "type": "choices",
                   "value": {"choices": [LABELS[hub_labels(store)[t["data"]["sample_id"]]]]}}


@pytest.mark.parametrize("fmt", ["coco", "labelstudio"])
def test_round_trip_into_a_fresh_hub_gives_the_same_labels(store, fresh, tmp_path, fmt):
    if fmt == "coco":
        result = import_coco(fresh, export_coco(store, tmp_path / "out"))
    else:
        result = import_labelstudio(fresh, export_labelstudio(store, tmp_path / "out"))
    assert hub_labels(fresh) == hub_labels(store)
    assert len(result.matched) == 10 and result.conflicts == () and result.skipped == 0
    assert {r["source"] for r in fresh._query("SELECT source FROM labels")} == {f"import:{fmt}"}


def test_a_changed_label_replaces_the_hubs_and_is_reported(store, tmp_path):
    path = export_labelstudio(store, tmp_path / "ls")
    tasks = json.loads(path.read_text())
    sid = tasks[0]["data"]["sample_id"]
    old = LABELS[hub_labels(store)[sid]]
    new = "9" if old != "9" else "8"
    tasks[0]["annotations"].append({"result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                                "value": {"choices": [new]}}]})
    tasks[1]["annotations"] = []  # an unlabeled task is skipped
    path.write_text(json.dumps(tasks))
    result = import_labelstudio(store, path)
    assert result.conflicts == ((sid, old, new),) and result.skipped == 1
    assert hub_labels(store)[sid] == LABELS.index(new)


def test_coco_matches_by_file_name_when_the_sample_id_key_is_gone(store, fresh, tmp_path):
    path = export_coco(store, tmp_path / "coco")
    doc = json.loads(path.read_text())
    for img in doc["images"]:
        del img["edgeloop_sample_id"]
    renumber = {cat["id"]: 200 - cat["id"] for cat in doc["categories"]}  # a tool renumbered the categories
    for cat in doc["categories"]:
        cat["id"] = renumber[cat["id"]]
    for ann in doc["annotations"]:
        ann["category_id"] = renumber[ann["category_id"]]
    path.write_text(json.dumps(doc))
    import_coco(fresh, path)
    assert hub_labels(fresh) == hub_labels(store)


def _ls_tasks(store, tmp_path):
    path = export_labelstudio(store, tmp_path / "ls")
    return path, json.loads(path.read_text())


def _refused(fn, fresh, path, *needles):
    with pytest.raises(DatasetError) as err:
        fn(fresh, path)
    for needle in needles:
        assert needle in str(err.value)
    assert err.value.hint
    assert hub_labels(fresh) == {}  # nothing stored
    return err.value


def test_labelstudio_unknown_class_is_refused_and_nothing_is_stored(store, fresh, tmp_path):
    path, tasks = _ls_tasks(store, tmp_path)
    tasks[3]["annotations"][0]["result"][0]["value"]["choices"] = ["cat"]
    path.write_text(json.dumps(tasks))
    _refused(import_labelstudio, fresh, path, "tasks[3]", "'cat'", "not a class")


def test_labelstudio_unknown_sample_is_refused_with_its_id(store, fresh, tmp_path):
    path, tasks = _ls_tasks(store, tmp_path)
    tasks[5]["data"]["sample_id"] = "01JNOTATTHEHUB000000000000"
    path.write_text(json.dumps(tasks))
    err = _refused(import_labelstudio, fresh, path, "01JNOTATTHEHUB000000000000", "not at the hub")
    assert err.unknown_ids == ("01JNOTATTHEHUB000000000000",)


@pytest.mark.parametrize("breakage, needle", [
    (lambda t: t[2].pop("data"), "tasks[2].data: missing"),
    (lambda t: t[4]["annotations"][0]["result"][0].pop("from_name"), "tasks[4].annotations[0].result[0].from_name: missing"),
    (lambda t: t[1]["annotations"][0].update(result="x"), "tasks[1].annotations[0].result: expected a list"),
    (lambda t: t.__setitem__(0, "task"), "tasks[0]: expected an object"),
    (lambda t: t[6].update(id=t[7]["id"]), "used twice"),
    (lambda t: t[0]["annotations"][0]["result"][0]["value"].update(choices=["1", "2"]), "exactly one choice"),
])
def test_malformed_labelstudio_is_refused_naming_the_place(store, fresh, tmp_path, breakage, needle):
    path, tasks = _ls_tasks(store, tmp_path)
    breakage(tasks)
    path.write_text(json.dumps(tasks))
    _refused(import_labelstudio, fresh, path, needle)


@pytest.mark.parametrize("breakage, needle", [
    (lambda d: d.pop("categories"), "categories: missing"),
    (lambda d: d["images"][2].pop("width"), "images[2].width: missing"),
    (lambda d: d["annotations"][1].update(image_id=999), "annotations[1].image_id: 999 is not an image id"),
    (lambda d: d["annotations"][1].update(category_id=999), "annotations[1].category_id: 999 is not a category id"),
    (lambda d: d["images"][3].update(id=d["images"][4]["id"]), "images[4].id: 5 is used twice"),
    (lambda d: d["categories"][7].update(name="dog"), "'dog' is not a class"),
    (lambda d: d["images"][0].update(edgeloop_sample_id="01JNOTATTHEHUB000000000000"), "not at the hub"),
])
def test_malformed_coco_is_refused_naming_the_place(store, fresh, tmp_path, breakage, needle):
    path = export_coco(store, tmp_path / "coco")
    doc = json.loads(path.read_text())
    breakage(doc)
    path.write_text(json.dumps(doc))
    _refused(import_coco, fresh, path, needle)


def test_a_file_that_is_not_json_is_refused(fresh, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _refused(import_coco, fresh, bad, "not JSON")


def test_cli_export_then_import(store, fresh, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli-ls"
    r = runner.invoke(main, ["hub", "export", "--data", str(store.data_dir), *hubdb.args(store.data_dir),
                             "--format", "labelstudio", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "exported 10 labeled samples" in r.output
    r = runner.invoke(main, ["hub", "export", "--data", str(store.data_dir), *hubdb.args(store.data_dir),
                             "--format", "yolo", "--out", str(tmp_path / "cli-yolo")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "cli-yolo" / "classes.txt").exists()
    r = runner.invoke(main, ["hub", "import", "--data", str(fresh.data_dir), *hubdb.args(fresh.data_dir),
                             "--format", "labelstudio", str(out / "tasks.json")])
    assert r.exit_code == 0, r.output
    assert "imported 10 labels" in r.output
    assert hub_labels(fresh) == hub_labels(store)


def test_cli_import_of_a_bad_file_prints_the_problem_not_a_traceback(store, fresh, tmp_path):
    path, tasks = _ls_tasks(store, tmp_path)
    tasks[0]["annotations"][0]["result"][0]["value"]["choices"] = ["cat"]
    path.write_text(json.dumps(tasks))
    r = CliRunner().invoke(main, ["hub", "import", "--data", str(fresh.data_dir), *hubdb.args(fresh.data_dir),
                                  "--format", "labelstudio", str(path)])
    assert r.exit_code == 2
    assert "'cat' is not a class" in r.output and "hint:" in r.output
    assert "Traceback" not in r.output
