"""The hub's labeled set out to labeling and training tools (COCO, YOLO, Label Studio), and labels back in.

Pure functions over a `HubStore` and files; no HTTP. Every exported image is the stored JPEG, written
as `<sample_id>.jpg`, so a label that comes back is matched to its sample BY ID, never by position.
What a label is follows the hub's project (hub/project.py): a class per image, or boxes.

A classification project:

    export_coco(store, out)          -> out/annotations.json (a whole-image box per image) + out/images/
    export_yolo(store, out)          -> out/classes.txt + out/train/<class>/<sample_id>.jpg
    export_labelstudio(store, out)   -> out/tasks.json (choices) + out/images/<sample_id>.jpg

A detection project (boxes in pixels of the stored image; the layouts are hub/_boxsets.py's):

    export_coco(store, out)          -> out/annotations.json (file_name images/<id>.jpg, bbox [x, y, w, h] px,
                                        category id = class index + 1; "no objects": an image without
                                        annotations) + out/images/<sample_id>.jpg
    export_yolo(store, out)          -> out/data.yaml + out/images/<id>.jpg + out/labels/<id>.txt (Ultralytics'
                                        detect layout: `class cx cy w h` in [0, 1], empty for no objects)
    export_labelstudio(store, out, image_url_base=None)
                                     -> out/tasks.json (rectanglelabels, percent) + out/labeling_config.xml
                                        + out/images/<sample_id>.jpg

    import_coco(store, path)         -> ImportResult
    import_labelstudio(store, path)  -> ImportResult

Label Studio loads the images through its local-files route by default (`/data/local-files/?d=images/
<id>.jpg`: start it with LOCAL_FILES_SERVING_ENABLED=true and LOCAL_FILES_DOCUMENT_ROOT=<out>, and add a
Local Files storage at <out>/images), or from `image_url_base`/images/<id>.jpg when something serves the
export folder over HTTP. The hub's own image route needs a bearer token, which Label Studio cannot send.

Imports are all or nothing: the file is validated (`validate_coco`, `validate_labelstudio`), then
every label is resolved against the hub; a label name outside the project's classes, a sample the hub
does not hold, one sample given two different labels, or a box outside its image, of zero area or
beyond MAX_BOXES raises `DatasetError` listing each problem, and nothing is stored. A label that
differs from the one the hub holds replaces it (the file is the newer judgement) and is reported in
`ImportResult.conflicts`.

Errors (see edgeloop.shared.errors):

    EdgeloopError
    └── DatasetError     a dataset file is malformed or names labels/samples the hub refuses
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Sequence

from edgeloop.shared.errors import EdgeloopError
from edgeloop.shared.images import decode_image

from . import _boxsets as boxsets
from ._dataset_checks import coco_problems, labelstudio_problems
from .project import MAX_BOXES, Project, check_xyxy, project
from .store import HubStore

FORMATS_OUT = ("coco", "yolo", "labelstudio")
FORMATS_IN = ("coco", "labelstudio")
MAX_LISTED = 20  # problems named in one error message; the rest are counted


class DatasetError(EdgeloopError):
    """A dataset file is malformed, or names label classes or samples the hub does not know.

    `problems` holds every problem found, each naming its place in the file."""

    hint = ("fix the file (labels must be one of the project's classes, boxes inside their image, samples "
            "ids the hub holds, as exported by `edgeloop hub export`); nothing was imported")

    def __init__(self, what: str, problems: Sequence[str], unknown_ids: Sequence[str] = ()):
        self.problems = list(problems)
        self.unknown_ids = tuple(unknown_ids)  # sample ids the file names that the hub does not hold
        listed = "; ".join(self.problems[:MAX_LISTED])
        more = f"; and {len(self.problems) - MAX_LISTED} more" if len(self.problems) > MAX_LISTED else ""
        super().__init__(f"{what}: {len(self.problems)} problem(s): {listed}{more}")


@dataclass(frozen=True)
class ImportResult:
    """What an import stored. `conflicts`: (sample_id, hub label before, label imported).

    Ids the hub does not hold never get here: they refuse the whole import (`DatasetError.unknown_ids`)."""

    format: str
    matched: tuple[str, ...]  # sample ids labeled by this import (new, changed or the same)
    conflicts: tuple[tuple[str, str, str], ...]  # labels the import replaced
    skipped: int  # tasks/images in the file that carry no label

    def summary(self) -> str:
        return (f"imported {len(self.matched)} labels ({self.format}): {len(self.conflicts)} replaced a "
                f"different hub label, {self.skipped} unlabeled entries skipped")


def _label_names(store: HubStore) -> tuple[str, ...]:
    return project(store).classes


# -- export ----------------------------------------------------------------------------------------
def _labeled_images(store: HubStore, images_dir: Path | None, proj: Project | None = None,
                    with_data: bool = False) -> Iterator[dict]:
    """The labeled samples of the project's kind (class labels, or boxes) with their size (and their JPEG
    bytes under "data" when with_data), one at a time: written to images_dir/<sample_id>.jpg if given.
    A generator, so that however large the set, one image at a time is in memory."""
    boxes = (proj or project(store)).task == "detect"
    for row in store.labeled():
        if (row["boxes"] is not None) != boxes:  # e.g. a detection seed set imported before any model
            continue
        w, h = row.get("width"), row.get("height")
        data = None
        if images_dir is not None or with_data or not w or not h:
            data = store.blobs.get(row["image_sha256"])
        if not w or not h:
            h, w = decode_image(data).shape[:2]
        if images_dir is not None:
            images_dir.mkdir(parents=True, exist_ok=True)
            (images_dir / f"{row['sample_id']}.jpg").write_bytes(data)
        yield {**row, "width": int(w), "height": int(h), **({"data": data} if with_data else {})}


def _write_json(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
    return path


def coco_document(store: HubStore, images_dir: Path | None = None) -> dict:
    """The labeled set as a COCO dict. Category ids are 1-based (`id = class index + 1`, 0 is often
    background in COCO tools); the import reads category *names*, so ids may be renumbered by a tool.
    Classification: one whole-image box per image, file_name <id>.jpg; detection: the boxes,
    file_name images/<id>.jpg (relative to the annotations file)."""
    proj = project(store)
    if proj.task == "detect":
        return boxsets.coco_document(list(_labeled_images(store, images_dir, proj)), proj.classes)
    names = proj.classes
    images, annotations = [], []
    for i, s in enumerate(_labeled_images(store, images_dir, proj), start=1):
        w, h = s["width"], s["height"]
        images.append({"id": i, "file_name": f"{s['sample_id']}.jpg", "width": w, "height": h,
                       "edgeloop_sample_id": s["sample_id"]})
        # Classification labels: the box is the whole image.
        annotations.append({"id": i, "image_id": i, "category_id": s["label"] + 1, "bbox": [0, 0, w, h],
                            "area": w * h, "iscrowd": 0})
    return {"info": {"description": "edgeloop hub labeled set", "version": "1.0"},
            "images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": name, "supercategory": "object"} for k, name in enumerate(names)]}


def export_coco(store: HubStore, out_dir: Path) -> Path:
    """Write out_dir/annotations.json (COCO) and out_dir/images/<sample_id>.jpg -> the annotations path."""
    out_dir = Path(out_dir)
    doc = coco_document(store, out_dir / "images")
    validate_coco(doc)
    return _write_json(out_dir / "annotations.json", doc)


def export_yolo(store: HubStore, out_dir: Path) -> Path:
    """Write the YOLO layout Ultralytics reads for the project's task -> out_dir.

    Classification (`yolo classify train data=out_dir`):

        out_dir/classes.txt                  one class name a line, in class-index order
        out_dir/train/<class>/<sample_id>.jpg

    every class gets a folder, even an empty one, so folder order matches class index.

    Detection (`yolo detect train data=out_dir/data.yaml`):

        out_dir/data.yaml                    path, train: images, val: images, names: {index: name}
        out_dir/images/<sample_id>.jpg
        out_dir/labels/<sample_id>.txt       `class cx cy w h` per box, normalised; empty: no objects
    """
    out_dir = Path(out_dir)
    proj = project(store)
    if proj.task == "detect":
        return _export_yolo_boxes(store, out_dir, proj)
    names = proj.classes
    train = out_dir / "train"
    if train.exists():  # a re-export must not keep a sample under its old class
        shutil.rmtree(train)
    for name in names:
        (train / name).mkdir(parents=True, exist_ok=True)
    for s in _labeled_images(store, None, proj, with_data=True):
        (train / names[s["label"]] / f"{s['sample_id']}.jpg").write_bytes(s["data"])
    (out_dir / "classes.txt").write_text("".join(f"{name}\n" for name in names))
    return out_dir


def _export_yolo_boxes(store: HubStore, out_dir: Path, proj: Project) -> Path:
    for sub in ("images", "labels"):  # a re-export must not keep a sample's old boxes
        if (out_dir / sub).exists():
            shutil.rmtree(out_dir / sub)
    labels = out_dir / "labels"
    labels.mkdir(parents=True)
    for s in _labeled_images(store, out_dir / "images", proj):
        (labels / f"{s['sample_id']}.txt").write_text(boxsets.yolo_lines(s["boxes"], s["width"], s["height"]))
    (out_dir / "images").mkdir(exist_ok=True)
    (out_dir / "data.yaml").write_text(boxsets.data_yaml(str(out_dir.resolve()), proj.classes))
    return out_dir


def export_labelstudio(store: HubStore, out_dir: Path, image_url_base: str | None = None) -> Path:
    """Write out_dir/tasks.json (Label Studio JSON tasks, with their annotations) and
    out_dir/images/<sample_id>.jpg -> the tasks path.

    Classification: `data.image` is images/<id>.jpg, and the labeling config these tasks fit is
        <View><Image name="image" value="$image"/>
              <Choices name="label" toName="image"><Choice value="0"/>...<Choice value="9"/></Choices></View>
    Detection: rectanglelabels results, and out_dir/labeling_config.xml beside the tasks; `data.image`
    is the local-files URL, or under image_url_base (see the module's docstring).
    """
    out_dir = Path(out_dir)
    proj = project(store)
    if proj.task == "detect":
        tasks = boxsets.labelstudio_tasks(_labeled_images(store, out_dir / "images", proj), proj.classes,
                                          image_url_base)
        validate_labelstudio(tasks)
        (out_dir / "labeling_config.xml").write_text(boxsets.labeling_config(proj.classes))
        return _write_json(out_dir / "tasks.json", tasks)
    names = proj.classes
    tasks = []
    for i, s in enumerate(_labeled_images(store, out_dir / "images", proj), start=1):
        result = {"from_name": "label", "to_name": "image", "type": "choices",
                  "value": {"choices": [names[s["label"]]]}}
        tasks.append({"id": i, "data": {"image": f"images/{s['sample_id']}.jpg", "sample_id": s["sample_id"]},
                      "annotations": [{"result": [result]}]})
    validate_labelstudio(tasks)
    return _write_json(out_dir / "tasks.json", tasks)


def export(store: HubStore, fmt: str, out_dir: Path, image_url_base: str | None = None) -> Path:
    """Dispatch on a format name (one of FORMATS_OUT); image_url_base: Label Studio's only."""
    fns = {"coco": export_coco, "yolo": export_yolo, "labelstudio": export_labelstudio}
    if fmt not in fns:
        raise DatasetError("export", [f"format {fmt!r}: expected one of {', '.join(FORMATS_OUT)}"])
    if fmt == "labelstudio":
        return export_labelstudio(store, out_dir, image_url_base)
    return fns[fmt](store, out_dir)


# -- validation ------------------------------------------------------------------------------------
def validate_coco(doc: Any) -> None:
    """Check a COCO document's structure, or raise DatasetError naming every problem.

    Required: lists `images` (id int, file_name str, width/height positive ints), `categories`
    (id int, name str) and `annotations` (id, image_id, category_id ints); ids unique within each
    list; every annotation's image_id and category_id refer to an existing image and category.
    Checked when present: bbox [x, y, w, h] numbers, area a number, iscrowd 0/1, edgeloop_sample_id str.
    """
    problems = coco_problems(doc)
    if problems:
        raise DatasetError("COCO file is malformed", problems)


def validate_labelstudio(tasks: Any) -> None:
    """Check Label Studio JSON tasks' structure, or raise DatasetError naming every problem.

    Required: a list of tasks, each an object with a `data` object; when present, `id` an int
    (unique) and `annotations` a list of objects each with a `result` list whose items have
    from_name, to_name, type (strings) and value (an object).
    """
    problems = labelstudio_problems(tasks)
    if problems:
        raise DatasetError("Label Studio file is malformed", problems)


# -- import ----------------------------------------------------------------------------------------
def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DatasetError(what, [f"{path}: no such file"]) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(what, [f"{path}: not JSON ({exc})"]) from exc


def _stem(name: str) -> str:
    if "?d=" in name or "&d=" in name:  # Label Studio's local-files URL: the file is in the query
        return boxsets.url_stem(name)
    return PurePosixPath(name.split("?")[0]).stem


def _commit(store: HubStore, fmt: str, found: list[tuple[str, str, str]], skipped: int, what: str) -> ImportResult:
    """found: (where, sample_id, label name). Resolve all against the hub, then store all or raise."""
    names = _label_names(store)
    problems: list[str] = []
    labels: dict[str, int] = {}
    first: dict[str, str] = {}
    unknown: list[str] = []
    for where, sid, name in found:
        if name not in names:
            problems.append(f"{where}: label {name!r} is not a class of the project ({', '.join(names)})")
            continue
        if sid in labels and labels[sid] != names.index(name):
            problems.append(f"{where}: sample {sid} is labeled {name!r} here and "
                            f"{names[labels[sid]]!r} at {first[sid]}")
            continue
        if sid not in labels and store.sample(sid) is None:
            unknown.append(sid)
            problems.append(f"{where}: sample {sid} is not at the hub")
            continue
        labels.setdefault(sid, names.index(name))
        first.setdefault(sid, where)
    if problems:
        raise DatasetError(what, problems, unknown_ids=unknown)
    before = {r["sample_id"]: r for r in store.labeled()}
    conflicts = tuple((sid, boxsets.describe(before[sid]["label"], before[sid]["boxes"], names), names[lab])
                      for sid, lab in labels.items()
                      if sid in before and (before[sid]["boxes"] is not None or before[sid]["label"] != lab))
    done = store.add_labels(labels, source=f"import:{fmt}")
    return ImportResult(format=fmt, matched=tuple(done), conflicts=conflicts, skipped=skipped)


def _commit_boxes(store: HubStore, proj: Project, fmt: str, frames: list[tuple], skipped: int,
                  what: str, problems: list[str]) -> ImportResult:
    """frames: (where, sample_id, [(where, class name, coords, unit)]); problems: those found reading
    the file. Check every box against the project and its image (hub/project.py's rules), then store
    all or raise naming every problem."""
    sizes = store.sample_sizes(sid for _, sid, _ in frames)
    problems = list(problems)
    unknown: list[str] = []
    boxes: dict[str, list[dict]] = {}
    first: dict[str, str] = {}
    for where, sid, given in frames:
        if sid not in sizes:
            unknown.append(sid)
            problems.append(f"{where}: sample {sid} is not at the hub")
            continue
        if sizes[sid] is None:
            problems.append(f"{where}: the hub cannot read the size of sample {sid}'s image")
            continue
        if len(given) > MAX_BOXES:
            problems.append(f"{where}: {len(given)} boxes, more than the limit of {MAX_BOXES} per frame")
            continue
        found, bad = [], False
        for bw, name, coords, unit in given:
            cls, problem = proj.check_class(f"{bw} class", name)
            if problem is None:
                xyxy, problem = check_xyxy(f"{bw} box", boxsets.to_xyxy(coords, unit, sizes[sid]), sizes[sid])
            if problem:
                problems.append(problem)
                bad = True
            else:
                found.append({"class": cls, "xyxy": xyxy})
        if bad:
            continue
        if sid in boxes:
            if not boxsets.same_boxes(boxes[sid], found):
                problems.append(f"{where}: sample {sid} is labeled {boxsets.describe(None, found, proj.classes)!r} "
                                f"here and {boxsets.describe(None, boxes[sid], proj.classes)!r} at {first[sid]}")
            continue
        boxes[sid], first[sid] = found, where
    if problems:
        raise DatasetError(what, problems, unknown_ids=unknown)
    before = {r["sample_id"]: r for r in store.labeled()}
    conflicts = tuple((sid, boxsets.describe(before[sid]["label"], before[sid]["boxes"], proj.classes),
                       boxsets.describe(None, new, proj.classes)) for sid, new in boxes.items()
                      if sid in before and not boxsets.same_boxes(before[sid]["boxes"], new))
    done = store.add_box_labels(boxes, source=f"import:{fmt}")
    return ImportResult(format=fmt, matched=tuple(done), conflicts=conflicts, skipped=skipped)


def import_coco(store: HubStore, path: Path) -> ImportResult:
    """Read labels from a COCO annotations file and store them (all or nothing).

    An image is matched to its sample by `edgeloop_sample_id`, else by its file name's stem.
    Classification: its label is the *name* of its annotations' category; an image without
    annotations is skipped; one whose annotations name two different categories is refused.
    Detection: its annotations are its boxes (bbox [x, y, w, h] pixels, category by name); an image
    without annotations is a frame with no objects.
    """
    what = f"COCO import of {path}"
    doc = _read_json(path, what)
    validate_coco(doc)
    proj = project(store)
    if proj.task == "detect":
        frames, problems = boxsets.coco_frames(doc, _stem)
        return _commit_boxes(store, proj, "coco", frames, 0, what, problems)
    categories = {c["id"]: c["name"] for c in doc["categories"]}
    by_image: dict[int, list[tuple[int, dict]]] = {}
    for j, ann in enumerate(doc["annotations"]):
        by_image.setdefault(ann["image_id"], []).append((j, ann))
    found, problems, skipped = [], [], 0
    for i, img in enumerate(doc["images"]):
        sid = img.get("edgeloop_sample_id") or _stem(img["file_name"])
        anns = by_image.get(img["id"], [])
        names = {categories[a["category_id"]] for _, a in anns}
        if not anns:
            skipped += 1
        elif len(names) > 1:
            problems.append(f"images[{i}] ({sid}): annotations name several categories {sorted(names)}; "
                            "expected one label per image")
        else:
            found.append((f"images[{i}] (annotations[{anns[0][0]}])", sid, names.pop()))
    if problems:
        raise DatasetError(what, problems)
    return _commit(store, "coco", found, skipped, what)


def _task_sample(data: dict) -> str | None:
    return data.get("sample_id") or (_stem(data["image"]) if isinstance(data.get("image"), str) else None)


def import_labelstudio(store: HubStore, path: Path) -> ImportResult:
    """Read labels from a Label Studio JSON export and store them (all or nothing).

    A task is matched to its sample by `data.sample_id`, else by the stem of `data.image` (a
    local-files URL's `d` included). Classification: its label is the single choice of a `choices`
    result of its last annotation that was not cancelled; a task without such an annotation is
    skipped. Detection: that annotation's rectanglelabels results are its boxes (percent of the image,
    one label each, no rotation), an empty result is "no objects"; a task without annotations is skipped.
    """
    what = f"Label Studio import of {path}"
    tasks = _read_json(path, what)
    validate_labelstudio(tasks)
    proj = project(store)
    if proj.task == "detect":
        frames, problems, skipped = boxsets.labelstudio_frames(tasks, _task_sample)
        return _commit_boxes(store, proj, "labelstudio", frames, skipped, what, problems)
    found, problems, skipped = [], [], 0
    for i, task in enumerate(tasks):
        sid = _task_sample(task["data"])
        if not isinstance(sid, str) or not sid:
            problems.append(f"tasks[{i}].data: neither sample_id nor image names a sample")
            continue
        anns = [(j, a) for j, a in enumerate(task.get("annotations") or []) if not a.get("was_cancelled")]
        picked = None
        for j, ann in reversed(anns):
            choices = [(k, r) for k, r in enumerate(ann["result"]) if r["type"] == "choices"]
            if choices:
                picked = (j, choices)
                break
        if picked is None:
            skipped += 1
            continue
        j, choices = picked
        k, res = choices[0]
        where = f"tasks[{i}].annotations[{j}].result[{k}]"
        value = res["value"].get("choices")
        if len(choices) > 1 or not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], str):
            problems.append(f"{where}.value.choices: expected exactly one choice, got {value!r:.60}")
            continue
        found.append((where, sid, value[0]))
    if problems:
        raise DatasetError(what, problems)
    return _commit(store, "labelstudio", found, skipped, what)


def import_labels(store: HubStore, fmt: str, path: Path) -> ImportResult:
    """Dispatch on a format name (one of FORMATS_IN)."""
    fns = {"coco": import_coco, "labelstudio": import_labelstudio}
    if fmt not in fns:
        raise DatasetError("import", [f"format {fmt!r}: expected one of {', '.join(FORMATS_IN)}"])
    return fns[fmt](store, path)
