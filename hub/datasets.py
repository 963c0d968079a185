"""The hub's labeled set out to labeling and training tools (COCO, YOLO, Label Studio), and labels back in.

Pure functions over a `HubStore` and files; no HTTP. Every exported image is the stored JPEG, written
as `<sample_id>.jpg`, so a label that comes back is matched to its sample BY ID, never by position.

    export_coco(store, out)          -> out/annotations.json + out/images/<sample_id>.jpg
    export_yolo(store, out)          -> out/classes.txt + out/train/<class>/<sample_id>.jpg
    export_labelstudio(store, out)   -> out/tasks.json + out/images/<sample_id>.jpg
    import_coco(store, path)         -> ImportResult
    import_labelstudio(store, path)  -> ImportResult

Imports are all or nothing: the file is validated (`validate_coco`, `validate_labelstudio`), then
every label is resolved against the hub; a label name outside the model's classes, a sample the hub
does not hold, or one sample given two different labels raises `DatasetError` listing each problem,
and nothing is stored. A label that differs from the one the hub holds replaces it (the file is the
newer judgement) and is reported in `ImportResult.conflicts`.

Errors (see edgeloop.shared.errors):

    EdgeloopError
    └── DatasetError     a dataset file is malformed or names labels/samples the hub refuses
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

from edgeloop.shared.errors import EdgeloopError
from edgeloop.shared.images import decode_image

from .store import HubStore

FORMATS_OUT = ("coco", "yolo", "labelstudio")
FORMATS_IN = ("coco", "labelstudio")
MAX_LISTED = 20  # problems named in one error message; the rest are counted


class DatasetError(EdgeloopError):
    """A dataset file is malformed, or names label classes or samples the hub does not know.

    `problems` holds every problem found, each naming its place in the file."""

    hint = ("fix the file (labels must be one of the model's classes, samples must be ids the hub holds, "
            "as exported by `edgeloop hub export`); nothing was imported")

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


def _label_names() -> tuple[str, ...]:
    # Imported here, not at the top: training.py is the module that loads torch.
    from .training import LABELS

    return LABELS


# -- export ----------------------------------------------------------------------------------------
def _labeled_images(store: HubStore, images_dir: Path | None) -> list[dict]:
    """The labeled samples with their JPEG bytes and size; written to images_dir/<sample_id>.jpg if given."""
    out = []
    for row in store.labeled():
        data = store.blobs.get(row["image_sha256"])
        h, w = decode_image(data).shape[:2]
        if images_dir is not None:
            images_dir.mkdir(parents=True, exist_ok=True)
            (images_dir / f"{row['sample_id']}.jpg").write_bytes(data)
        out.append({**row, "data": data, "width": int(w), "height": int(h)})
    return out


def _write_json(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
    return path


def coco_document(store: HubStore, images_dir: Path | None = None) -> dict:
    """The labeled set as a COCO dict. Category ids are 1-based (`id = class index + 1`, 0 is often
    background in COCO tools); the import reads category *names*, so ids may be renumbered by a tool."""
    names = _label_names()
    images, annotations = [], []
    for i, s in enumerate(_labeled_images(store, images_dir), start=1):
        w, h = s["width"], s["height"]
        images.append({"id": i, "file_name": f"{s['sample_id']}.jpg", "width": w, "height": h,
                       "edgeloop_sample_id": s["sample_id"]})
        # Classification labels: the box is the whole image.
        annotations.append({"id": i, "image_id": i, "category_id": s["label"] + 1, "bbox": [0, 0, w, h],
                            "area": w * h, "iscrowd": 0})
    return {"info": {"description": "edgeloop hub labeled set", "version": "1.0"},
            "images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": name, "supercategory": "digit"} for k, name in enumerate(names)]}


def export_coco(store: HubStore, out_dir: Path) -> Path:
    """Write out_dir/annotations.json (COCO) and out_dir/images/<sample_id>.jpg -> the annotations path."""
    out_dir = Path(out_dir)
    doc = coco_document(store, out_dir / "images")
    validate_coco(doc)
    return _write_json(out_dir / "annotations.json", doc)


def export_yolo(store: HubStore, out_dir: Path) -> Path:
    """Write the YOLO *classification* layout -> out_dir.

        out_dir/classes.txt                  one class name a line, in class-index order
        out_dir/train/<class>/<sample_id>.jpg

    This is the folder layout Ultralytics' classify task reads (`yolo classify train data=out_dir`);
    every class gets a folder, even an empty one, so folder order matches class index. There are no
    .txt box files: the hub's labels are per image. Detection boxes come when detectors are trained here.
    """
    out_dir = Path(out_dir)
    names = _label_names()
    train = out_dir / "train"
    if train.exists():  # a re-export must not keep a sample under its old class
        shutil.rmtree(train)
    for name in names:
        (train / name).mkdir(parents=True, exist_ok=True)
    for s in _labeled_images(store, None):
        (train / names[s["label"]] / f"{s['sample_id']}.jpg").write_bytes(s["data"])
    (out_dir / "classes.txt").write_text("".join(f"{name}\n" for name in names))
    return out_dir


def export_labelstudio(store: HubStore, out_dir: Path) -> Path:
    """Write out_dir/tasks.json (Label Studio JSON tasks, with their annotations) and
    out_dir/images/<sample_id>.jpg -> the tasks path.

    The labeling config these tasks fit:
        <View><Image name="image" value="$image"/>
              <Choices name="label" toName="image"><Choice value="0"/>...<Choice value="9"/></Choices></View>
    """
    out_dir = Path(out_dir)
    names = _label_names()
    tasks = []
    for i, s in enumerate(_labeled_images(store, out_dir / "images"), start=1):
        result = {"from_name": "label", "to_name": "image", "type": "choices",
                  "value": {"choices": [names[s["label"]]]}}
        tasks.append({"id": i, "data": {"image": f"images/{s['sample_id']}.jpg", "sample_id": s["sample_id"]},
                      "annotations": [{"result": [result]}]})
    validate_labelstudio(tasks)
    return _write_json(out_dir / "tasks.json", tasks)


def export(store: HubStore, fmt: str, out_dir: Path) -> Path:
    """Dispatch on a format name (one of FORMATS_OUT)."""
    fns = {"coco": export_coco, "yolo": export_yolo, "labelstudio": export_labelstudio}
    if fmt not in fns:
        raise DatasetError("export", [f"format {fmt!r}: expected one of {', '.join(FORMATS_OUT)}"])
    return fns[fmt](store, out_dir)


# -- validation ------------------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fields(obj: Any, where: str, spec: dict[str, tuple], optional: dict[str, tuple], problems: list[str]) -> bool:
    """Check obj is a dict with the required (and, when present, the optional) fields of the right
    kind; spec maps field -> (predicate, expected description). -> whether obj is a dict."""
    if not isinstance(obj, dict):
        problems.append(f"{where}: expected an object, got {type(obj).__name__}")
        return False
    for key, (ok, expected) in spec.items():
        if key not in obj:
            problems.append(f"{where}.{key}: missing")
        elif not ok(obj[key]):
            problems.append(f"{where}.{key}: expected {expected}, got {obj[key]!r:.60}")
    for key, (ok, expected) in optional.items():
        if key in obj and not ok(obj[key]):
            problems.append(f"{where}.{key}: expected {expected}, got {obj[key]!r:.60}")
    return True


_INT = (_is_int, "an integer")
_STR = (lambda v: isinstance(v, str) and v != "", "a non-empty string")
_POS = (lambda v: _is_int(v) and v > 0, "a positive integer")


def _coco_problems(doc: Any) -> list[str]:
    if not isinstance(doc, dict):
        return [f"document: expected an object with images, annotations, categories, got {type(doc).__name__}"]
    problems: list[str] = []
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            problems.append(f"{key}: missing" if key not in doc else f"{key}: expected a list")
    if problems:
        return problems
    ids: dict[str, set] = {}
    for key, spec, optional in (
        ("images", {"id": _INT, "file_name": _STR, "width": _POS, "height": _POS},
         {"edgeloop_sample_id": _STR}),
        ("categories", {"id": _INT, "name": _STR}, {}),
        ("annotations", {"id": _INT, "image_id": _INT, "category_id": _INT},
         {"bbox": (lambda v: isinstance(v, list) and len(v) == 4 and all(map(_is_num, v)), "[x, y, w, h]"),
          "area": (_is_num, "a number"), "iscrowd": (lambda v: v in (0, 1) and not isinstance(v, bool), "0 or 1")}),
    ):
        seen = ids.setdefault(key, set())
        for i, item in enumerate(doc[key]):
            where = f"{key}[{i}]"
            if not _fields(item, where, spec, optional, problems) or not _is_int(item.get("id")):
                continue
            if item["id"] in seen:
                problems.append(f"{where}.id: {item['id']} is used twice")
            seen.add(item["id"])
    for i, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict):
            continue
        if _is_int(ann.get("image_id")) and ann["image_id"] not in ids["images"]:
            problems.append(f"annotations[{i}].image_id: {ann['image_id']} is not an image id")
        if _is_int(ann.get("category_id")) and ann["category_id"] not in ids["categories"]:
            problems.append(f"annotations[{i}].category_id: {ann['category_id']} is not a category id")
    return problems


def validate_coco(doc: Any) -> None:
    """Check a COCO document's structure, or raise DatasetError naming every problem.

    Required: lists `images` (id int, file_name str, width/height positive ints), `categories`
    (id int, name str) and `annotations` (id, image_id, category_id ints); ids unique within each
    list; every annotation's image_id and category_id refer to an existing image and category.
    Checked when present: bbox [x, y, w, h] numbers, area a number, iscrowd 0/1, edgeloop_sample_id str.
    """
    problems = _coco_problems(doc)
    if problems:
        raise DatasetError("COCO file is malformed", problems)


def _labelstudio_problems(tasks: Any) -> list[str]:
    if not isinstance(tasks, list):
        return [f"document: expected a list of tasks, got {type(tasks).__name__}"]
    problems: list[str] = []
    seen: set[int] = set()
    result_spec = {"from_name": _STR, "to_name": _STR, "type": _STR,
                   "value": (lambda v: isinstance(v, dict), "an object")}
    for i, task in enumerate(tasks):
        where = f"tasks[{i}]"
        if not _fields(task, where, {"data": (lambda v: isinstance(v, dict), "an object")},
                       {"id": _INT, "annotations": (lambda v: isinstance(v, list), "a list")}, problems):
            continue
        if _is_int(task.get("id")):
            if task["id"] in seen:
                problems.append(f"{where}.id: {task['id']} is used twice")
            seen.add(task["id"])
        anns = task.get("annotations")
        for j, ann in enumerate(anns if isinstance(anns, list) else []):
            aw = f"{where}.annotations[{j}]"
            if not _fields(ann, aw, {"result": (lambda v: isinstance(v, list), "a list")}, {}, problems):
                continue
            for k, res in enumerate(ann["result"] if isinstance(ann.get("result"), list) else []):
                _fields(res, f"{aw}.result[{k}]", result_spec, {}, problems)
    return problems


def validate_labelstudio(tasks: Any) -> None:
    """Check Label Studio JSON tasks' structure, or raise DatasetError naming every problem.

    Required: a list of tasks, each an object with a `data` object; when present, `id` an int
    (unique) and `annotations` a list of objects each with a `result` list whose items have
    from_name, to_name, type (strings) and value (an object).
    """
    problems = _labelstudio_problems(tasks)
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
    return PurePosixPath(name.split("?")[0]).stem


def _commit(store: HubStore, fmt: str, found: list[tuple[str, str, str]], skipped: int, what: str) -> ImportResult:
    """found: (where, sample_id, label name). Resolve all against the hub, then store all or raise."""
    names = _label_names()
    problems: list[str] = []
    labels: dict[str, int] = {}
    first: dict[str, str] = {}
    unknown: list[str] = []
    for where, sid, name in found:
        if name not in names:
            problems.append(f"{where}: label {name!r} is not a class of the model ({', '.join(names)})")
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
    before = {r["sample_id"]: r["label"] for r in store.labeled()}
    conflicts = tuple((sid, names[before[sid]], names[lab]) for sid, lab in labels.items()
                      if sid in before and before[sid] != lab)
    done = store.add_labels(labels, source=f"import:{fmt}")
    return ImportResult(format=fmt, matched=tuple(done), conflicts=conflicts, skipped=skipped)


def import_coco(store: HubStore, path: Path) -> ImportResult:
    """Read labels from a COCO annotations file and store them (all or nothing).

    An image is matched to its sample by `edgeloop_sample_id`, else by its file name's stem; its
    label is the *name* of its annotations' category. An image without annotations is skipped; one
    whose annotations name two different categories is refused (these are per-image labels).
    """
    what = f"COCO import of {path}"
    doc = _read_json(path, what)
    validate_coco(doc)
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


def import_labelstudio(store: HubStore, path: Path) -> ImportResult:
    """Read labels from a Label Studio JSON export and store them (all or nothing).

    A task is matched to its sample by `data.sample_id`, else by the stem of `data.image`. Its label
    is the single choice of a `choices` result of its last annotation that was not cancelled; a task
    without such an annotation is skipped.
    """
    what = f"Label Studio import of {path}"
    tasks = _read_json(path, what)
    validate_labelstudio(tasks)
    found, problems, skipped = [], [], 0
    for i, task in enumerate(tasks):
        data = task["data"]
        sid = data.get("sample_id") or (_stem(data["image"]) if isinstance(data.get("image"), str) else None)
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
