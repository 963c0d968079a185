"""The structure checks behind validate_coco and validate_labelstudio (hub/datasets.py): each returns
every problem found, named by its place in the file ("annotations[3].bbox: expected [x, y, w, h]")."""

from __future__ import annotations

from typing import Any


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


def coco_problems(doc: Any) -> list[str]:
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


def labelstudio_problems(tasks: Any) -> list[str]:
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
