"""A manifest from an ONNX file's own metadata, for models exported without one (Ultralytics).

Ultralytics' exporter writes its model's facts into the ONNX `metadata_props`, every value a str():

    task    "detect" | "classify" | "segment" | "pose" | "obb"
    names   "{0: 'car', 1: 'van', 2: 'bike'}"      a Python dict literal: read with ast.literal_eval
    imgsz   "[640, 640]"                             height, width
    stride  "32"

and preprocesses as it trains: letterbox to imgsz (grey 114 borders), BGR -> RGB, x / 255, NCHW, no
mean or std. `infer_manifest` turns that into a ModelManifest and says, line by line, what it inferred;
what the metadata does not say is refused with a ManifestError that names what is missing.

    manifest, notes = infer_manifest(onnx_bytes)      # ManifestError: "... names: missing ..."
"""

from __future__ import annotations

import ast
import hashlib
from typing import Any

import onnxruntime as ort

from .errors import ManifestError
from .manifest import InputSpec, ModelManifest

TASKS = {"detect": "detection", "classify": "classification"}
MAX_NAMES_CHARS = 1 << 20  # a names literal longer than this is not a class list


def read_metadata(onnx: bytes | str) -> tuple[dict[str, str], ort.InferenceSession]:
    """-> (metadata_props as a dict, the loaded session); ManifestError when onnxruntime cannot load it."""
    try:
        session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / InvalidProtobuf types
        raise ManifestError(f"not an ONNX model onnxruntime can load: {exc}") from exc
    return dict(session.get_modelmeta().custom_metadata_map), session


def parse_names(raw: str) -> tuple[str, ...]:
    """Ultralytics' names, "{0: 'car', 1: 'van'}" (or a list literal) -> ("car", "van").

    ast.literal_eval, never eval: the file may come from anyone. The ids must be 0..C-1."""
    if len(raw) > MAX_NAMES_CHARS:
        raise ManifestError(f"metadata names: {len(raw)} characters, more than {MAX_NAMES_CHARS}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise ManifestError(f"metadata names: not a Python literal ({exc.__class__.__name__}): {raw[:80]!r}") from exc
    if isinstance(value, (list, tuple)):
        value = dict(enumerate(value))
    if not isinstance(value, dict) or not value:
        raise ManifestError(f"metadata names: expected a dict of class id -> name, got {raw[:80]!r}")
    if sorted(value) != list(range(len(value))) or not all(isinstance(v, str) and v for v in value.values()):
        raise ManifestError(f"metadata names: expected ids 0..{len(value) - 1} with non-empty names, got {raw[:80]!r}")
    names = tuple(value[i] for i in range(len(value)))
    if len(set(names)) != len(names):
        raise ManifestError(f"metadata names: a class name appears twice in {raw[:80]!r}")
    return names


def _imgsz(raw: str | None, session: ort.InferenceSession) -> tuple[tuple[int, int], str]:
    """(height, width) from metadata imgsz, else from a fixed input shape -> (size, where it came from)."""
    if raw is not None:
        try:
            value: Any = ast.literal_eval(raw)
        except (ValueError, SyntaxError) as exc:
            raise ManifestError(f"metadata imgsz: not a literal: {raw[:40]!r}") from exc
        if isinstance(value, int):
            value = [value, value]
        if (isinstance(value, (list, tuple)) and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 8192 for v in value)):
            return (int(value[0]), int(value[1])), "metadata imgsz"
        raise ManifestError(f"metadata imgsz: expected [height, width] in pixels, got {raw[:40]!r}")
    shape = session.get_inputs()[0].shape
    if len(shape) == 4 and all(isinstance(v, int) for v in shape[2:]):
        return (shape[2], shape[3]), "the input's fixed shape"
    raise ManifestError("imgsz: missing from the metadata, and the input's height and width are not fixed")


def infer_manifest(onnx: bytes, version: str | None = None) -> tuple[ModelManifest, list[str]]:
    """A bare ONNX file -> (the manifest its metadata implies, what was inferred, one line each).

    version: the manifest's version (default: "onnx-" and the file's first 8 hex of sha256)."""
    meta, session = read_metadata(onnx)
    missing = [k for k in ("task", "names") if k not in meta]
    if missing:
        raise ManifestError(f"the ONNX file has no manifest and its metadata lacks {', '.join(missing)} "
                            "(Ultralytics writes task, names, imgsz and stride): give a manifest")
    task = TASKS.get(meta["task"])
    if task is None:
        raise ManifestError(f"metadata task {meta['task']!r}: edgeloop runs {' and '.join(TASKS)} models")
    names = parse_names(meta["names"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ManifestError(f"expected one image input (N, 3, H, W), got {[(i.name, i.shape) for i in inputs]}")
    (height, width), size_from = _imgsz(meta.get("imgsz"), session)
    letterbox = task == "detection"
    spec = InputSpec(name=inputs[0].name, height=height, width=width, layout="NCHW", color="RGB", scale=1 / 255,
                     resize="letterbox" if letterbox else "stretch")
    roles = {o.name: o.name for o in outputs}
    main = outputs[0].name
    if task == "detection":
        out = {"detections": main}
    else:
        # Ultralytics' classify head applies softmax in its exported graph.
        out = {"probabilities": main}
    if "embedding" in roles:
        out["embedding"] = "embedding"
    notes = [
        f"task {meta['task']} -> {task}, {len(names)} classes from metadata names",
        f"input {spec.name}: {height}x{width} from {size_from}, "
        + ("letterbox (grey borders)" if letterbox else "stretched to size (Ultralytics center-crops)")
        + ", BGR->RGB, scale 1/255, no mean/std, NCHW",
        f"output {main}: " + ("YOLOv8-style detections [1, 4+C, N]" if letterbox else "class probabilities"),
    ]
    if "stride" in meta:
        notes.append(f"stride {meta['stride']}")
    manifest = ModelManifest(version=version or f"onnx-{hashlib.sha256(onnx).hexdigest()[:8]}", task=task,
                             input=spec, outputs=out, labels=names)
    return manifest, notes


def load_model_file(data: bytes, manifest_json: bytes | None = None) -> tuple[bytes, ModelManifest, list[str]]:
    """A model file as a user has it -> (onnx, manifest, notes on what was inferred).

    With manifest_json, that manifest (it overrides the metadata); else an edgeloop artifact as packed;
    else a bare ONNX, its manifest inferred from its metadata (see infer_manifest)."""
    from .artifact import unpack  # artifact imports the manifest module, as this one does
    from .errors import IntegrityError

    if manifest_json is not None:
        return data, ModelManifest.from_json(manifest_json), ["manifest: given"]
    try:
        art = unpack(data)
    except IntegrityError:
        manifest, notes = infer_manifest(data)
        return data, manifest, ["no manifest: inferred from the ONNX metadata", *notes]
    return art.onnx, art.manifest, ["manifest: from the artifact"]
