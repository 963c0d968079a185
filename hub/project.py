"""The hub's project: what a label is (a class per frame, or boxes), and which classes, and the checks
a label must pass to be one.

The project is what `edgeloop hub init` saved (from `--task --classes`, or from the seed model's manifest
or its ONNX metadata); a hub set up before projects were saved follows the manifest of the fleet's desired
model, else of the newest registered one; a hub with neither labels ten classes named by index.

    p = project(store)                     # Project(task="detect", classes=("car", "van", "person"))
    boxes, problems = p.check_boxes("boxes.01J...", [{"class": "car", "xyxy": [4, 5, 60, 80]}], (320, 240))

Boxes are in pixels of the stored image, x1, y1, x2, y2 (x right, y down, origin at the top left
corner of the top left pixel: a box covering the whole image is [0, 0, width, height]). A coordinate
up to EDGE_TOLERANCE_PX beyond an edge is clipped to it, to be kind to a mouse drag that ends just
outside the frame; further out, the box is refused. Nothing here raises for a bad label: the checks
return every problem, each naming its place (`boxes.<id>[2].xyxy: ...`), and the caller refuses.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

from edgeloop.shared.artifact import unpack

TASKS = ("classify", "detect")
MAX_BOXES = 300  # per frame: more is a tool gone wrong, not a street scene
EDGE_TOLERANCE_PX = 1.0
_FROM_MANIFEST = {"classification": "classify", "detection": "detect"}


@dataclass(frozen=True)
class Project:
    task: str  # "classify" | "detect"
    classes: tuple[str, ...]

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"Project.task: expected one of {', '.join(TASKS)}, got {self.task!r}")
        if not self.classes:
            raise ValueError("Project.classes: expected at least one class")

    def describe(self, limit: int = 12) -> str:
        """The classes, for a message: "car, van, person" (the first `limit`, then how many more)."""
        more = f", ... ({len(self.classes)} classes)" if len(self.classes) > limit else ""
        return ", ".join(self.classes[:limit]) + more

    def check_class(self, where: str, value: Any, names: bool = True) -> tuple[int | None, str | None]:
        """A class given as an index (0..C-1) or, when `names`, as a class name -> (index, None) or
        (None, the problem)."""
        if isinstance(value, int) and not isinstance(value, bool):
            if 0 <= value < len(self.classes):
                return value, None
            return None, (f"{where}: {value} is not a class index of the project "
                          f"(0..{len(self.classes) - 1}: {self.describe()})")
        if names and isinstance(value, str):
            if value in self.classes:
                return self.classes.index(value), None
            return None, f"{where}: {value[:60]!r} is not one of the project's classes ({self.describe()})"
        expected = "a class index or name" if names else "a class index"
        return None, f"{where}: expected {expected}, got {value!r:.60}"

    def check_boxes(self, where: str, boxes: Any, size: tuple[int, int] | None
                    ) -> tuple[list[dict] | None, list[str]]:
        """One frame's boxes, [{"class": index or name, "xyxy": [x1, y1, x2, y2]}, ...] in pixels of an
        image of `size` (width, height) -> (the boxes as stored: class an index, xyxy floats clipped to
        the image, or None when refused; every problem). [] is a valid answer: "no objects"."""
        if not isinstance(boxes, list):
            return None, [f"{where}: expected a list of boxes ([] for no objects), got {type(boxes).__name__}"]
        if len(boxes) > MAX_BOXES:
            return None, [f"{where}: {len(boxes)} boxes, more than the limit of {MAX_BOXES} per frame"]
        if size is None:
            return None, [f"{where}: the hub cannot read the size of this sample's image, so it cannot place boxes"]
        out, problems = [], []
        for i, box in enumerate(boxes):
            bw = f"{where}[{i}]"
            if not isinstance(box, dict):
                problems.append(f"{bw}: expected an object with class and xyxy, got {type(box).__name__}")
                continue
            if "class" not in box or "xyxy" not in box:
                problems.append(f"{bw}.{'class' if 'class' not in box else 'xyxy'}: missing")
                continue
            cls, problem = self.check_class(f"{bw}.class", box["class"])
            if problem:
                problems.append(problem)
            xyxy, problem = check_xyxy(f"{bw}.xyxy", box["xyxy"], size)
            if problem:
                problems.append(problem)
            if cls is not None and xyxy is not None:
                out.append({"class": cls, "xyxy": xyxy})
        return (None if problems else out), problems


def check_xyxy(where: str, xyxy: Any, size: tuple[int, int]) -> tuple[list[float] | None, str | None]:
    """[x1, y1, x2, y2] pixels inside an image of size (width, height) -> (clipped floats, None) or
    (None, the problem): not four finite numbers, outside the image (beyond the tolerance), or of zero
    or negative area."""
    if (not isinstance(xyxy, (list, tuple)) or len(xyxy) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xyxy)):
        return None, f"{where}: expected [x1, y1, x2, y2], four numbers, got {xyxy!r:.80}"
    if not all(math.isfinite(v) for v in xyxy):
        return None, f"{where}: box {list(xyxy)} holds a number that is not finite"
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    if x2 <= x1 or y2 <= y1:
        return None, f"{where}: box {list(xyxy)} has zero or negative area (needs x1 < x2 and y1 < y2)"
    w, h = size
    tol = EDGE_TOLERANCE_PX
    if x1 < -tol or y1 < -tol or x2 > w + tol or y2 > h + tol:
        return None, f"{where}: box {list(xyxy)} lies outside the {w}x{h} image"
    clipped = [min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h)]
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None, f"{where}: box {list(xyxy)} has no area inside the {w}x{h} image"
    return clipped, None


# -- which project ---------------------------------------------------------------------------------
# By artifact sha256: an artifact never changes, so its manifest is read once per process.
_cache: dict[str, Project] = {}
_cache_lock = threading.Lock()


def legacy() -> Project:
    """A hub with neither a project nor a model: the built-in classifier's ten classes, named by index."""
    return Project("classify", tuple(str(i) for i in range(10)))


def project(store) -> Project:
    """The project of a HubStore: as `edgeloop hub init` (or the seed) saved it, else from the manifest
    of the fleet's desired model, else the newest registered model, else `legacy()`."""
    saved = saved_project(store)
    if saved is not None:
        return saved
    desired = store.desired()
    model = store.model(desired) if desired else None
    model = model or store.latest_model()
    if model is None:
        return legacy()
    sha = model["artifact_sha256"]
    with _cache_lock:
        if sha in _cache:
            return _cache[sha]
    manifest = unpack(store.blobs.get(sha)).manifest
    found = from_manifest(manifest.task, manifest.labels)
    with _cache_lock:
        _cache[sha] = found
    return found


def saved_project(store) -> Project | None:
    rows = store.db.query("SELECT task, classes FROM project WHERE name = 'default'")
    return Project(rows[0]["task"], tuple(json.loads(rows[0]["classes"]))) if rows else None


def saved_trainer(store) -> str | None:
    """The trainer the project was set up with (`hub init --trainer`), None for the built-in one."""
    rows = store.db.query("SELECT trainer FROM project WHERE name = 'default'")
    return rows[0]["trainer"] if rows else None


def save_project(store, proj: Project, trainer: str | None = None) -> None:
    """Fix the project's task and classes (and its trainer). Classes may be added at the end later;
    renumbering them would change what every stored label means, so that is refused."""
    old = saved_project(store)
    if old is not None and (old.task != proj.task or proj.classes[:len(old.classes)] != old.classes):
        raise ValueError(f"the project is {old.task} of {old.describe()}: a project's task and the order of "
                         "its classes cannot change (new classes may only be appended)")
    if len(set(proj.classes)) != len(proj.classes):
        raise ValueError(f"classes: a name appears twice in {proj.describe()}")
    store.db.execute("INSERT INTO project (name, task, classes, trainer, created_at) VALUES ('default', ?, ?, ?, ?) "
                     "ON CONFLICT (name) DO UPDATE SET task = excluded.task, classes = excluded.classes, "
                     "trainer = excluded.trainer",
                     [proj.task, json.dumps(list(proj.classes)), trainer, time.time()])


def from_manifest(task: str, labels: Sequence[str]) -> Project:
    """A manifest's task ("classification" | "detection") and labels -> the Project."""
    return Project(_FROM_MANIFEST.get(task, task), tuple(labels))
