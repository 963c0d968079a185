"""Box labels in the layouts of the tools that read them: COCO, YOLO (Ultralytics' detect layout) and
Label Studio's rectangles, and back. Pure: rows in, documents and text out; hub/datasets.py does the
files, the store and the all-or-nothing checks.

Rows are `HubStore.labeled()` rows of a detection project: sample_id, width, height and boxes
([{"class": index, "xyxy": [x1, y1, x2, y2]}] in pixels of the stored image; [] = no objects).

    COCO          bbox [x, y, w, h] pixels; category id = class index + 1 (as the classification export);
                  an image without annotations is a frame labeled "no objects"
    YOLO          one line per box: class cx cy w h, normalised to [0, 1]; an empty file = no objects
    Label Studio  value x, y, width, height in percent of the image; rotation 0
"""

from __future__ import annotations

import json
from typing import Sequence
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import quoteattr

FROM_NAME, TO_NAME = "label", "image"  # the labeling config's RectangleLabels and Image names
LOCAL_FILES = "/data/local-files/?d="  # Label Studio's local-files route


# -- COCO ------------------------------------------------------------------------------------------
def coco_document(rows: Sequence[dict], classes: Sequence[str]) -> dict:
    """The frames' boxes as a COCO detection dict; file_name is `images/<sample_id>.jpg`, relative to
    the annotations file."""
    images, annotations = [], []
    for i, r in enumerate(rows, start=1):
        images.append({"id": i, "file_name": f"images/{r['sample_id']}.jpg", "width": r["width"],
                       "height": r["height"], "edgeloop_sample_id": r["sample_id"]})
        for b in r["boxes"]:
            x1, y1, x2, y2 = b["xyxy"]
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": b["class"] + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    return {"info": {"description": "edgeloop hub labeled set (detection)", "version": "1.0"},
            "images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": name, "supercategory": "object"} for k, name in enumerate(classes)]}


def coco_frames(doc: dict, stem) -> tuple[list[tuple], list[str]]:
    """A checked COCO document (validate_coco) -> (frames, problems); a frame is (where, sample_id,
    [(where, class name, [x, y, w, h], "xywh_px")]). Every image is a frame: without annotations, "no objects"."""
    categories = {c["id"]: c["name"] for c in doc["categories"]}
    by_image: dict[int, list[tuple[int, dict]]] = {}
    for j, ann in enumerate(doc["annotations"]):
        by_image.setdefault(ann["image_id"], []).append((j, ann))
    frames, problems = [], []
    for i, img in enumerate(doc["images"]):
        sid = img.get("edgeloop_sample_id") or stem(img["file_name"])
        boxes = []
        for j, ann in by_image.get(img["id"], []):
            if "bbox" not in ann:
                problems.append(f"annotations[{j}].bbox: missing (a detection project imports boxes)")
            elif ann.get("iscrowd") == 1:
                problems.append(f"annotations[{j}].iscrowd: crowd regions are not box labels")
            else:
                boxes.append((f"annotations[{j}]", categories[ann["category_id"]], ann["bbox"], "xywh_px"))
        frames.append((f"images[{i}]", sid, boxes))
    return frames, problems


# -- YOLO ------------------------------------------------------------------------------------------
def yolo_lines(boxes: Sequence[dict], width: int, height: int) -> str:
    """A frame's label file: `class cx cy w h` per box, normalised to [0, 1] ("" for no objects)."""
    out = []
    for b in boxes:
        x1, y1, x2, y2 = b["xyxy"]
        cx, cy, w, h = ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)
        out.append(f"{b['class']} " + " ".join(f"{min(max(v, 0.0), 1.0):.6f}" for v in (cx, cy, w, h)) + "\n")
    return "".join(out)


def _yaml_str(s: str) -> str:
    # A JSON string is a YAML double-quoted scalar (same escapes), so any name or path is safe.
    return json.dumps(s)


def data_yaml(root: str, classes: Sequence[str]) -> str:
    """Ultralytics' dataset file: images/ for train and val (the hub has no split), names by index."""
    return ("# edgeloop hub export, YOLO detection layout: yolo detect train data=<this file>\n"
            f"path: {_yaml_str(root)}\ntrain: images\nval: images\n"
            f"nc: {len(classes)}\nnames:\n" + "".join(f"  {k}: {_yaml_str(n)}\n" for k, n in enumerate(classes)))


# -- Label Studio ----------------------------------------------------------------------------------
def labeling_config(classes: Sequence[str]) -> str:
    """The Label Studio labeling config the exported tasks fit."""
    labels = "".join(f"    <Label value={quoteattr(n)}/>\n" for n in classes)
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image"/>\n'
            f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}  </RectangleLabels>\n</View>\n')


def image_url(sample_id: str, base: str | None) -> str:
    """Where Label Studio loads a task's image: its local-files route (`images/<id>.jpg` relative to
    LOCAL_FILES_DOCUMENT_ROOT), or under `base`, a URL that serves the export folder."""
    rel = f"images/{sample_id}.jpg"
    return f"{LOCAL_FILES}{rel}" if base is None else f"{base.rstrip('/')}/{rel}"


def labelstudio_tasks(rows: Sequence[dict], classes: Sequence[str], base: str | None = None) -> list[dict]:
    """The frames as Label Studio tasks, each with one annotation of rectangles (empty: no objects)."""
    tasks = []
    for i, r in enumerate(rows, start=1):
        w, h = r["width"], r["height"]
        result = []
        for k, b in enumerate(r["boxes"]):
            x1, y1, x2, y2 = b["xyxy"]
            result.append({"id": f"{r['sample_id']}-{k}", "type": "rectanglelabels", "from_name": FROM_NAME,
                           "to_name": TO_NAME, "original_width": w, "original_height": h, "image_rotation": 0,
                           "value": {"x": x1 / w * 100, "y": y1 / h * 100, "width": (x2 - x1) / w * 100,
                                     "height": (y2 - y1) / h * 100, "rotation": 0,
                                     "rectanglelabels": [classes[b["class"]]]}})
        tasks.append({"id": i, "data": {"image": image_url(r["sample_id"], base), "sample_id": r["sample_id"]},
                      "annotations": [{"result": result}]})
    return tasks


def url_stem(url: str) -> str:
    """The file stem an image URL names: `/data/local-files/?d=images/x.jpg` -> x, `https://h/a/x.jpg?t=1` -> x."""
    parts = urlsplit(url)
    d = parse_qs(parts.query).get("d")
    path = d[0] if d else parts.path
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def labelstudio_frames(tasks: list, sample_of) -> tuple[list[tuple], list[str], int]:
    """Checked tasks (validate_labelstudio) -> (frames, problems, tasks skipped); a frame as in
    `coco_frames`, boxes in percent ("xywh_pct"). A task's last annotation that was not cancelled
    counts: its rectanglelabels results are the boxes, an empty result is "no objects"; a task
    without one is skipped."""
    frames, problems, skipped = [], [], 0
    for i, task in enumerate(tasks):
        sid = sample_of(task["data"])
        if not isinstance(sid, str) or not sid:
            problems.append(f"tasks[{i}].data: neither sample_id nor image names a sample")
            continue
        anns = [(j, a) for j, a in enumerate(task.get("annotations") or []) if not a.get("was_cancelled")]
        if not anns:
            skipped += 1
            continue
        j, ann = anns[-1]
        aw = f"tasks[{i}].annotations[{j}]"
        rects = [(k, r) for k, r in enumerate(ann["result"]) if r["type"] == "rectanglelabels"]
        if ann["result"] and not rects:
            problems.append(f"{aw}.result: no rectanglelabels results (a detection project imports boxes), "
                            f"got {sorted({r['type'] for r in ann['result']})}")
            continue
        boxes = []
        for k, res in rects:
            box = _ls_box(f"{aw}.result[{k}]", res, problems)
            if box is not None:
                boxes.append(box)
        frames.append((f"tasks[{i}]", sid, boxes))
    return frames, problems, skipped


def _ls_box(where: str, res: dict, problems: list[str]) -> tuple | None:
    v = res["value"]
    names = v.get("rectanglelabels")
    if not isinstance(names, list) or len(names) != 1 or not isinstance(names[0], str):
        problems.append(f"{where}.value.rectanglelabels: expected exactly one label, got {names!r:.60}")
        return None
    coords = [v.get(k) for k in ("x", "y", "width", "height")]
    if not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in coords):
        problems.append(f"{where}.value: expected numbers x, y, width, height (percent), got {coords!r:.80}")
        return None
    if v.get("rotation", 0) not in (0, 0.0):
        problems.append(f"{where}.value.rotation: {v['rotation']!r}: rotated boxes are not supported")
        return None
    if res.get("from_name", FROM_NAME) != FROM_NAME or res.get("to_name", TO_NAME) != TO_NAME:
        problems.append(f"{where}: from_name/to_name {res.get('from_name')!r}/{res.get('to_name')!r}, "
                        f"expected {FROM_NAME!r}/{TO_NAME!r} (the exported labeling_config.xml)")
        return None
    return where, names[0], coords, "xywh_pct"


def to_xyxy(coords: Sequence[float], unit: str, size: tuple[int, int]) -> list[float]:
    """[x, y, w, h] in pixels ("xywh_px") or percent ("xywh_pct") of an image of size -> [x1, y1, x2, y2] px."""
    x, y, w, h = (float(c) for c in coords)
    if unit == "xywh_pct":
        sx, sy = size[0] / 100.0, size[1] / 100.0
        x, y, w, h = x * sx, y * sy, w * sx, h * sy
    return [x, y, x + w, y + h]


def describe(label: int | None, boxes: list[dict] | None, classes: Sequence[str]) -> str:
    """A label in a few words, for ImportResult.conflicts: "car", "no objects", "2 boxes: car, van"."""
    if boxes is None:
        return classes[label] if label is not None and 0 <= label < len(classes) else str(label)
    if not boxes:
        return "no objects"
    names = [classes[b["class"]] if 0 <= b["class"] < len(classes) else str(b["class"]) for b in boxes]
    return f"{len(boxes)} box{'es' if len(boxes) != 1 else ''}: {', '.join(names)}"


def same_boxes(a: list[dict] | None, b: list[dict], tol: float = 1e-3) -> bool:
    """The same boxes in the same order, coordinates within tol pixels."""
    return a is not None and len(a) == len(b) and all(
        x["class"] == y["class"] and all(abs(u - v) <= tol for u, v in zip(x["xyxy"], y["xyxy"])) for x, y in zip(a, b))
