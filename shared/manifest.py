"""Model manifest: what an ONNX file expects and returns, and what it was trained on.

A manifest is JSON. `ModelManifest.from_json` validates every field and names the bad one;
the rest of the code trusts the frozen value.

Output roles, by task:
    classification  logits | probabilities, optional embedding
    detection       detections (YOLOv8 style: one [1, 4+C, N] tensor, no NMS)
                    or boxes + scores + labels (boxes [1, N, 4] | [N, 4] xyxy; scores, labels [1, N] | [N]),
                    optional embedding; post-processing settings in the optional `detection` key
`ModelManifest.output_style()` checks that combination (`ModelRuntime.load` calls it).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ManifestError
from .protocol import MAX_DETECTIONS  # max_detections may not exceed what a candidate can carry

TASKS = ("classification", "detection")
LAYOUTS = ("NCHW", "NHWC")
COLORS = ("RGB", "BGR")
RESIZES = ("stretch", "letterbox")
OUTPUT_ROLES = ("logits", "probabilities", "embedding", "detections", "boxes", "scores", "labels")
DETECTION_ROLES = ("detections", "boxes", "scores", "labels")
MAX_MANIFEST_BYTES = 1 << 20
MAX_CLASS_COUNT = 2**63 - 1  # the signals turn counts into float shares: a JSON integer may be any size


@dataclass(frozen=True)
class InputSpec:
    """How a BGR uint8 frame becomes the model's input tensor."""

    name: str
    height: int
    width: int
    layout: str = "NCHW"
    color: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: str = "stretch"

    @property
    def shape(self) -> tuple[int, int, int, int]:
        if self.layout == "NCHW":
            return (1, 3, self.height, self.width)
        return (1, self.height, self.width, 3)


@dataclass(frozen=True)
class DetectionSpec:
    """How a detector's raw boxes become detections: score threshold, class-aware NMS, a cap."""

    score_threshold: float = 0.25  # keep boxes scoring at least this
    iou_threshold: float = 0.45  # suppress a same-class box overlapping a better one by more than this
    max_detections: int = 100  # keep at most this many per frame, best first


@dataclass(frozen=True)
class ModelManifest:
    version: str
    task: str
    input: InputSpec
    outputs: dict[str, str]  # role -> ONNX output name, e.g. {"logits": "logits", "embedding": "embedding"}
    labels: tuple[str, ...]
    parent: str | None = None
    class_counts: tuple[int, ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    detection: DetectionSpec | None = None  # detectors only; None means DetectionSpec()'s defaults

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def output_style(self) -> str:
        """-> "classifier", "detections" or "boxes"; ManifestError when the roles do not fit the task.

        Kept out of `from_dict`, which reads any set of known roles, so that the check is made where the
        model is about to run (`ModelRuntime.load`)."""
        roles = self.outputs.keys()
        if self.task == "classification":
            if not {"logits", "probabilities"} & roles:
                raise ManifestError("manifest.outputs: a classifier needs a 'logits' or 'probabilities' output")
            wrong = sorted(set(DETECTION_ROLES) & roles)
            if wrong:
                raise ManifestError(f"manifest.outputs: detection role(s) {', '.join(wrong)} "
                                    "in a classification manifest")
            return "classifier"
        named = roles - {"embedding"}
        if named == {"detections"}:
            return "detections"
        if named == {"boxes", "scores", "labels"}:
            return "boxes"
        raise ManifestError("manifest.outputs: a detector names either 'detections' (YOLOv8 style [1, 4+C, N]) or "
                            f"all of 'boxes', 'scores' and 'labels', got {', '.join(sorted(roles))}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input"]["mean"] = list(self.input.mean)
        d["input"]["std"] = list(self.input.std)
        d["labels"] = list(self.labels)
        d["class_counts"] = list(self.class_counts)
        if self.detection is None:
            del d["detection"]  # absent, not null: a classifier's manifest bytes (and digest) stay as they were
        return d

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> "ModelManifest":
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"manifest: {len(data)} bytes exceeds the limit of {MAX_MANIFEST_BYTES}")
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ManifestError(f"manifest: not valid JSON ({exc})") from exc
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Any) -> "ModelManifest":
        if not isinstance(raw, dict):
            raise ManifestError("manifest: expected a JSON object")
        known = {"version", "task", "input", "outputs", "labels", "parent", "class_counts", "metrics", "created_at",
                 "detection"}
        _no_unknown(raw, known, "manifest")
        version = _str(raw, "version", "manifest")
        task = _choice(raw, "task", TASKS, "manifest")
        inp = _input_spec(raw.get("input"))
        outputs = raw.get("outputs")
        if not isinstance(outputs, dict) or not outputs:
            raise ManifestError("manifest.outputs: expected a non-empty object of role -> output name")
        for role, name in outputs.items():
            if role not in OUTPUT_ROLES:
                raise ManifestError(f"manifest.outputs.{role}: unknown role (expected one of {', '.join(OUTPUT_ROLES)})")
            if not isinstance(name, str) or not name:
                raise ManifestError(f"manifest.outputs.{role}: expected an output name")
        if task == "classification" and not ({"logits", "probabilities"} & outputs.keys()):
            raise ManifestError("manifest.outputs: a classifier needs a 'logits' or 'probabilities' output")
        labels = raw.get("labels")
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise ManifestError("manifest.labels: expected a non-empty list of strings")
        counts = raw.get("class_counts", [])
        if not isinstance(counts, list) or not all(isinstance(c, int) and not isinstance(c, bool)
                                                   and 0 <= c <= MAX_CLASS_COUNT for c in counts):
            raise ManifestError(f"manifest.class_counts: expected a list of integers from 0 to {MAX_CLASS_COUNT}")
        if counts and len(counts) != len(labels):
            raise ManifestError(f"manifest.class_counts: {len(counts)} counts for {len(labels)} labels")
        parent = raw.get("parent")
        if parent is not None and not isinstance(parent, str):
            raise ManifestError("manifest.parent: expected a string or null")
        metrics = raw.get("metrics", {})
        if not isinstance(metrics, dict):
            raise ManifestError("manifest.metrics: expected an object")
        created_at = raw.get("created_at", "")
        if not isinstance(created_at, str):
            raise ManifestError("manifest.created_at: expected a string")
        detection = None
        if raw.get("detection") is not None:
            if task != "detection":
                raise ManifestError(f"manifest.detection: only a detection manifest has detection settings, "
                                    f"task is {task!r}")
            detection = _detection_spec(raw["detection"])
        return cls(version=version, task=task, input=inp, outputs=dict(outputs), labels=tuple(labels),
                   parent=parent, class_counts=tuple(counts), metrics=metrics, created_at=created_at,
                   detection=detection)


def _input_spec(raw: Any) -> InputSpec:
    where = "manifest.input"
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: expected an object")
    _no_unknown(raw, {"name", "height", "width", "layout", "color", "scale", "mean", "std", "resize"}, where)
    name = _str(raw, "name", where)
    dims = {}
    for key in ("height", "width"):
        v = raw.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 4096:
            raise ManifestError(f"{where}.{key}: expected an integer from 1 to 4096, got {v!r}")
        dims[key] = v
    triples = {}
    for key, default in (("mean", (0.0, 0.0, 0.0)), ("std", (1.0, 1.0, 1.0))):
        v = raw.get(key, list(default))
        if not isinstance(v, list) or len(v) != 3 or not all(_finite(x) for x in v):
            raise ManifestError(f"{where}.{key}: expected three numbers")
        if key == "std" and any(x == 0 for x in v):
            raise ManifestError(f"{where}.std: must not contain zero")
        triples[key] = tuple(float(x) for x in v)
    scale = raw.get("scale", 1.0 / 255.0)
    if not _finite(scale) or scale <= 0:
        raise ManifestError(f"{where}.scale: expected a positive number")
    return InputSpec(
        name=name, height=dims["height"], width=dims["width"],
        layout=_choice(raw, "layout", LAYOUTS, where, "NCHW"),
        color=_choice(raw, "color", COLORS, where, "RGB"),
        scale=float(scale), mean=triples["mean"], std=triples["std"],
        resize=_choice(raw, "resize", RESIZES, where, "stretch"),
    )


def _detection_spec(raw: Any) -> DetectionSpec:
    where = "manifest.detection"
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: expected an object")
    _no_unknown(raw, {"score_threshold", "iou_threshold", "max_detections"}, where)
    d = DetectionSpec()
    score = raw.get("score_threshold", d.score_threshold)
    if not _finite(score) or not 0.0 <= score <= 1.0:
        raise ManifestError(f"{where}.score_threshold: expected a number from 0 to 1, got {score!r}")
    iou = raw.get("iou_threshold", d.iou_threshold)
    if not _finite(iou) or not 0.0 < iou <= 1.0:
        raise ManifestError(f"{where}.iou_threshold: expected a number above 0, at most 1, got {iou!r}")
    cap = raw.get("max_detections", d.max_detections)
    if not isinstance(cap, int) or isinstance(cap, bool) or not 1 <= cap <= MAX_DETECTIONS:
        raise ManifestError(f"{where}.max_detections: expected an integer from 1 to {MAX_DETECTIONS}, got {cap!r}")
    return DetectionSpec(score_threshold=float(score), iou_threshold=float(iou), max_detections=cap)


def _finite(x: Any) -> bool:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # a JSON integer beyond the float range
        return False


def _no_unknown(raw: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ManifestError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}")


def _str(raw: dict, key: str, where: str) -> str:
    v = raw.get(key)
    if not isinstance(v, str) or not v:
        raise ManifestError(f"{where}.{key}: expected a non-empty string, got {v!r}")
    return v


def _choice(raw: dict, key: str, choices: tuple[str, ...], where: str, default: str | None = None) -> str:
    v = raw.get(key, default)
    if v not in choices:
        raise ManifestError(f"{where}.{key}: expected one of {', '.join(choices)}, got {v!r}")
    return v
