"""What a trainer is handed: the labeled set as files written from the blob store (`--data`), the parent
model (`--parent`), and the labeled set's version, so a model's lineage says what it learned from.

    data/                              detection                      classification
        annotations.json               COCO, boxes in pixels          COCO, one whole-image box each
        data.yaml, images/, labels/    YOLO layout (Ultralytics)      -
        train/<class>/<id>.jpg, classes.txt                           class folders (Ultralytics)
        slices.json                    {sample_id: {lighting, weather, site, camera, ...}}
        dataset.json                   {"version": sha256, "samples": n, "boxes": n, "task", "classes"}
    parent/
        model.onnx, manifest.json      the parent's, when there is one
        checkpoint/                    its checkpoint, when it has one (state.pt for the built-in trainers)

Images are copied one at a time: memory stays bounded whatever the set's size.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from edgeloop.shared.artifact import unpack

from .. import _boxsets as boxsets, datasets
from ..project import Project
from ..store import HubStore
from . import pseudo_set

STATE_FILE = "state.pt"  # a checkpoint that is one torch state dict (the built-in trainers')


def label_revisions(store: HubStore, task: str) -> list[list]:
    """[[sample_id, labeled_at, sha256 of the label], ...] of the project's kind, by sample id: which
    samples, and which revision of each label, a training set holds."""
    column = "boxes" if task == "detect" else "label"
    rows = store.db.query(f"SELECT sample_id, labeled_at, label, boxes FROM labels WHERE {column} IS NOT NULL "
                          "ORDER BY sample_id")
    return [[r["sample_id"], r["labeled_at"],
             hashlib.sha256(json.dumps([r["label"], r["boxes"]]).encode()).hexdigest()[:16]] for r in rows]


def write_data(store: HubStore, proj: Project, data_dir: Path, pseudo_labels: bool = False) -> dict:
    """Write the labeled set under data_dir (see the module docstring) -> its dataset.json: the version
    (sha256 of its label revisions, also kept as a blob by that hash), sample and box counts.
    pseudo_labels (detection): add the frames its labels label along their tracks
    (hub/training/pseudo_set.py), marked `"edgeloop_pseudo": true` in annotations.json and counted
    apart (`"pseudo"`) in dataset.json."""
    data_dir.mkdir(parents=True, exist_ok=True)
    datasets.export_yolo(store, data_dir)  # detection: data.yaml, images/, labels/; classification: train/
    coco = datasets.coco_document(store)  # reads sizes only: the images are already under data_dir
    pseudo = pseudo_set.pseudo_rows(store) if pseudo_labels and proj.task == "detect" else []
    if pseudo:
        _add_pseudo(store, coco, pseudo, data_dir, proj)
    if proj.task == "detect":
        for image in coco["images"]:
            image["file_name"] = f"images/{image['edgeloop_sample_id']}.jpg"
    else:
        names = {c["id"]: c["name"] for c in coco["categories"]}
        by_image = {a["image_id"]: a["category_id"] for a in coco["annotations"]}
        for image in coco["images"]:
            image["file_name"] = f"train/{names[by_image[image['id']]]}/{image['edgeloop_sample_id']}.jpg"
    (data_dir / "annotations.json").write_text(json.dumps(coco))
    slices = {r["sample_id"]: r.get("tags") or {} for r in store.labeled()}
    (data_dir / "slices.json").write_text(json.dumps({i["edgeloop_sample_id"]: slices.get(i["edgeloop_sample_id"], {})
                                                      for i in coco["images"]}))
    counts = _counts(coco, slices, proj)
    revisions = label_revisions(store, proj.task)
    revisions += [[r["sample_id"], "pseudo", hashlib.sha256(json.dumps(r["boxes"]).encode()).hexdigest()[:16]]
                  for r in pseudo]
    listing = json.dumps(revisions).encode()
    version = store.blobs.put(listing)
    doc = {"version": version, "samples": len(coco["images"]),
           "boxes": len(coco["annotations"]) if proj.task == "detect" else 0, "task": proj.task,
           "classes": list(proj.classes), "counts": counts, "pseudo": len(pseudo)}
    (data_dir / "dataset.json").write_text(json.dumps(doc))
    return doc


def _add_pseudo(store: HubStore, coco: dict, rows: list[dict], data_dir: Path, proj: Project) -> None:
    """Pseudo-labeled frames into the set's files: images/, labels/ (YOLO) and the COCO document."""
    extra = boxsets.coco_document(rows, proj.classes)
    first_image, first_ann = len(coco["images"]), len(coco["annotations"])
    for image in extra["images"]:
        coco["images"].append({**image, "id": image["id"] + first_image, "edgeloop_pseudo": True})
    for ann in extra["annotations"]:
        coco["annotations"].append({**ann, "id": ann["id"] + first_ann, "image_id": ann["image_id"] + first_image})
    for r in rows:
        (data_dir / "images" / f"{r['sample_id']}.jpg").write_bytes(store.blobs.get(r["image_sha256"]))
        (data_dir / "labels" / f"{r['sample_id']}.txt").write_text(boxsets.yolo_lines(r["boxes"], r["width"],
                                                                                      r["height"]))


def _counts(coco: dict, slices: dict, proj: Project) -> dict:
    """-> {"by_class": {name: n}, "by_slice": {lighting: frames}, "total": frames[, "boxes", "empty"]}: every
    class listed, zeros too (a class missing from the training set is what a model card must show)."""
    by_class = dict.fromkeys(proj.classes, 0)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    for a in coco["annotations"]:
        by_class[names[a["category_id"]]] += 1
    by_slice: dict[str, int] = {}
    for image in coco["images"]:
        lighting = str((slices.get(image["edgeloop_sample_id"]) or {}).get("lighting") or "unknown")
        by_slice[lighting] = by_slice.get(lighting, 0) + 1
    out = {"by_class": by_class, "by_slice": dict(sorted(by_slice.items())), "total": len(coco["images"])}
    if proj.task == "detect":
        boxed = {a["image_id"] for a in coco["annotations"]}
        out |= {"boxes": len(coco["annotations"]), "empty": sum(i["id"] not in boxed for i in coco["images"])}
    return out


def write_parent(store: HubStore, version: str | None, parent_dir: Path) -> bool:
    """The parent's model.onnx, manifest.json and checkpoint/ under parent_dir -> whether it has a checkpoint."""
    parent_dir.mkdir(parents=True, exist_ok=True)
    if version is None:
        return False
    row = store.model(version)
    art = unpack(store.blobs.get(row["artifact_sha256"]))
    (parent_dir / "model.onnx").write_bytes(art.onnx)
    (parent_dir / "manifest.json").write_bytes(art.manifest_bytes)
    state = store.blobs.get(row["state_sha256"]) if row.get("state_sha256") else b""
    if not state:
        return False
    unpack_checkpoint(state, parent_dir / "checkpoint")
    return True


def pack_checkpoint(folder: Path) -> bytes:
    """A trainer's OUT/checkpoint/ -> the bytes the hub keeps (a tar; b"" when there is none)."""
    if not folder.is_dir() or not any(folder.iterdir()):
        return b""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return buf.getvalue()


def checkpoint_file(state: bytes, name: str = STATE_FILE) -> bytes | None:
    """One file of kept checkpoint bytes (a tar, or an older model's bare torch state as state.pt)."""
    if not _is_tar(state):
        return state if name == STATE_FILE and state else None
    with tarfile.open(fileobj=io.BytesIO(state), mode="r") as tar:
        try:
            member = tar.extractfile(name)
        except KeyError:
            return None
        return member.read() if member is not None else None


def _is_tar(data: bytes) -> bool:
    return len(data) > 262 and data[257:262] == b"ustar"


def unpack_checkpoint(state: bytes, folder: Path) -> None:
    """Kept checkpoint bytes -> folder/: a tar (pack_checkpoint) is extracted with the "data" filter (no
    links out, no absolute paths); older models kept one torch state dict, written as state.pt."""
    folder.mkdir(parents=True, exist_ok=True)
    if _is_tar(state):
        with tarfile.open(fileobj=io.BytesIO(state), mode="r") as tar:
            tar.extractall(folder, filter="data")
    else:
        (folder / STATE_FILE).write_bytes(state)
