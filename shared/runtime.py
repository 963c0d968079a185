"""An onnxruntime session driven by a manifest: classifiers and detectors.

    rt = ModelRuntime.load(onnx_bytes, manifest)   # raises ModelMismatch at load, never mid-stream
    pred = rt.predict(frame)                         # Prediction(probs (C,), embedding (D,), detections (K, 6) | None)

For a pipeline, the parts run in different threads:
    batch = rt.prepare(frames)                       # capture thread: resize, colour, scale, layout
    raw = rt.run(batch)                              # inference thread: session.run alone
    preds = rt.decode(raw, frames)                   # the frame loop: probabilities, embedding, boxes
(`rt.infer(batch, frames)` is the last two in one.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from . import detection
from .descriptor import image_descriptor
from .errors import ModelError, ModelMismatch
from .manifest import DetectionSpec, ModelManifest
from .preprocess import preprocess

# Output roles read for each output style, in the order they are asked from the session.
_STYLE_ROLES = {"detections": ("detections",), "boxes": ("boxes", "scores", "labels")}


@dataclass(frozen=True)
class Prediction:
    """What a model says about one frame.

    probs: (C,) float32 summing to 1, C = len(manifest.labels). A classifier's class probabilities. For a
        detector, the image-level class mix: each class's best detection score, normalised; uniform when
        nothing was detected. Sampling signals written for classifiers read it unchanged.
    embedding: (D,) float32, L2-normalised: the model's embedding output or, when it has none, the
        `descriptor.image_descriptor` of the frame (D = 80); None only where no runtime made it.
    latency_ms: session.run plus decoding, per frame (a batch's time divided by its size).
    detections: (K, 6) float32 rows x1, y1, x2, y2, score, class, corners normalised to the original
        frame, best score first; None for a classifier.
    embedding_source: "model", "descriptor" or "none".
    """

    probs: np.ndarray
    embedding: np.ndarray | None
    latency_ms: float
    detections: np.ndarray | None = None
    embedding_source: str = "model"

    @property
    def label(self) -> int:
        return int(np.argmax(self.probs))

    @property
    def confidence(self) -> float:
        return float(np.max(self.probs))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True, eq=False)
class RawOutputs:
    """A batch's session outputs, per frame, before decoding; `runtime` is the model that made them."""

    runtime: ModelRuntime
    per_frame: list[list[np.ndarray]]
    seconds: float


class ModelRuntime:
    def __init__(self, session: ort.InferenceSession, manifest: ModelManifest):
        self.session = session
        self.manifest = manifest
        self.style = manifest.output_style()  # "classifier" | "detections" | "boxes"
        self.detection = manifest.detection or DetectionSpec()
        self._prob_role = "probabilities" if "probabilities" in manifest.outputs else "logits"
        roles = _STYLE_ROLES.get(self.style, (self._prob_role,))
        self._roles = roles + (("embedding",) if "embedding" in manifest.outputs else ())
        self._out_names = [manifest.outputs[r] for r in self._roles]
        # A fixed batch axis (often 1 in detectors), or boxes whose count varies per image: one frame a run.
        shape = {i.name: i.shape for i in session.get_inputs()}[manifest.input.name]
        self._per_frame = isinstance(shape[0], int) or self.style == "boxes"

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def embedding_source(self) -> str:
        return "model" if "embedding" in self.manifest.outputs else "descriptor"

    @classmethod
    def load(cls, onnx: bytes | str, manifest: ModelManifest, threads: int = 1) -> "ModelRuntime":
        """Open the model and check it against the manifest, then run (and decode) one test inference.

        ManifestError: the output roles do not fit the task. ModelError: onnxruntime cannot open the file.
        ModelMismatch: input name or shape, an output name, the class count or a tensor's rank disagrees."""
        manifest.output_style()  # before the session: a manifest error is the manifest's, whatever the model
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            session = ort.InferenceSession(onnx, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"onnxruntime could not load the model: {exc}") from exc
        inputs = {i.name: i for i in session.get_inputs()}
        spec = manifest.input
        if spec.name not in inputs:
            raise ModelMismatch(f"manifest.input.name {spec.name!r} is not an input of the model (has {sorted(inputs)})")
        if len(inputs) != 1:
            raise ModelMismatch(f"the model has {len(inputs)} inputs ({sorted(inputs)}); one image input is supported")
        shape = inputs[spec.name].shape
        want = spec.shape
        if len(shape) != 4 or any(isinstance(d, int) and d != w for d, w in zip(shape[1:], want[1:])):
            raise ModelMismatch(f"model input {spec.name!r} has shape {shape}, manifest says {list(want)}")
        outputs = {o.name for o in session.get_outputs()}
        for role, name in manifest.outputs.items():
            if name not in outputs:
                raise ModelMismatch(f"manifest.outputs.{role} = {name!r} is not an output of the model (has {sorted(outputs)})")
        rt = cls(session, manifest)
        frame = np.full((spec.height, spec.width, 3), 114, np.uint8)  # the letterbox grey
        batch = rt.prepare([frame])
        try:
            probe = rt._run(batch)
        except Exception as exc:  # onnxruntime's own errors: the model cannot run on this input
            raise ModelMismatch(f"a test inference failed: {exc}") from exc
        rt._check_shapes(dict(zip(rt._roles, probe)))
        try:
            rt.infer(batch, [frame])  # decoding too, so that nothing new can fail mid-stream
        except Exception as exc:
            raise ModelMismatch(f"decoding the test inference failed: {exc}") from exc
        if not rt._per_frame and not rt._batches_work(batch):
            rt._per_frame = True
        return rt

    def _check_shapes(self, out: dict[str, np.ndarray]) -> None:
        """Output shapes of a one-frame run against the manifest; ModelMismatch names the output."""
        c = self.manifest.num_classes
        names = self.manifest.outputs
        if self.style == "classifier":
            probs = out[self._prob_role]
            if probs.shape[-1] != c or probs.size != c:
                raise ModelMismatch(f"model gives {probs.shape[-1]} classes, manifest has {c} labels")
        elif self.style == "detections":
            d = out["detections"]
            if d.ndim != 3 or d.shape[0] != 1:
                raise ModelMismatch(f"output {names['detections']!r} has shape {list(d.shape)}: "
                                    "a 'detections' output is [1, 4+C, N] (YOLOv8 style)")
            if d.shape[1] != 4 + c:
                raise ModelMismatch(f"model gives {d.shape[1] - 4} classes ({d.shape[1]} rows = 4 box + classes), "
                                    f"manifest has {c} labels")
        else:
            b, s, lab = out["boxes"], out["scores"], out["labels"]
            if b.ndim not in (2, 3) or b.shape[-1] != 4 or (b.ndim == 3 and b.shape[0] != 1):
                raise ModelMismatch(f"output {names['boxes']!r} has shape {list(b.shape)}: "
                                    "expected [1, N, 4] or [N, 4]")
            for role, t in (("scores", s), ("labels", lab)):
                if t.shape != b.shape[:-1]:
                    raise ModelMismatch(f"output {names[role]!r} has shape {list(t.shape)}, "
                                        f"expected {list(b.shape[:-1])} to match the boxes")
            if lab.dtype.kind not in "iuf":
                raise ModelMismatch(f"output {names['labels']!r} has dtype {lab.dtype}: expected integer class ids")
            if lab.size and (lab.min() < 0 or lab.max() >= c):
                raise ModelMismatch(f"output {names['labels']!r} gives class id {int(lab.max())}, "
                                    f"manifest has {c} labels")
        if "embedding" in out and out["embedding"].size == 0:
            raise ModelMismatch(f"output {names['embedding']!r} is empty")

    def _batches_work(self, one: np.ndarray) -> bool:
        """A symbolic batch axis is a promise some exports break (a Reshape to 1 inside): test it once."""
        two = np.concatenate([one, one])
        try:
            return all(o.shape[:1] == (2,) for o in self._run(two))
        except Exception:  # onnxruntime refuses the batch of two: run frames one by one
            return False

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self._out_names, {self.manifest.input.name: batch})

    def prepare(self, frames: list[np.ndarray]) -> np.ndarray:
        """(H, W, 3) uint8 BGR frames (any sizes) -> the model's input batch. No onnxruntime: any thread."""
        return preprocess(frames, self.manifest.input)

    def infer(self, batch: np.ndarray, frames: list[np.ndarray]) -> list[Prediction]:
        """A batch from `prepare(frames)` -> one Prediction per frame.

        The frames themselves are read only for the descriptor (when the model has no embedding) and,
        through their shapes, to map boxes back onto them."""
        return self.decode(self.run(batch), frames)

    def run(self, batch: np.ndarray) -> RawOutputs:
        """The session alone on a batch from `prepare`: onnxruntime releases the GIL while it runs, so
        a thread of its own keeps the model busy while another thread decodes and scores."""
        t0 = time.perf_counter()
        if self._per_frame:
            per_frame = [self._run(batch[i:i + 1]) for i in range(len(batch))]
        else:
            outs = self._run(batch)
            per_frame = [[o[i] for o in outs] for i in range(len(batch))]
        return RawOutputs(self, per_frame, time.perf_counter() - t0)

    def decode(self, raw: RawOutputs, frames: list[np.ndarray]) -> list[Prediction]:
        """`run`'s outputs for these frames -> one Prediction per frame."""
        if raw.runtime is not self or len(raw.per_frame) != len(frames):
            raise ValueError("decode: outputs of another model or another batch")
        t0 = time.perf_counter()
        parts = [self._decode(dict(zip(self._roles, outs)), frame) for outs, frame in zip(raw.per_frame, frames)]
        ms = (raw.seconds + time.perf_counter() - t0) * 1000 / max(1, len(frames))
        return [Prediction(probs, emb, ms, det, src) for probs, emb, det, src in parts]

    def _decode(self, out: dict[str, np.ndarray], frame: np.ndarray):
        """One frame's outputs (batch axis removed or of size 1) -> probs, embedding, detections, source."""
        c = self.manifest.num_classes
        det = None
        if self.style == "classifier":
            probs = out[self._prob_role].reshape(-1).astype(np.float32)
            if self._prob_role == "logits":
                probs = softmax(probs)
        else:
            if self.style == "detections":
                raw = detection.decode_yolo(out["detections"].reshape(out["detections"].shape[-2:]))
            else:
                raw = detection.decode_boxes(out["boxes"], out["scores"], out["labels"])
            det = detection.postprocess(*raw, frame.shape, self.manifest.input, self.detection, c)
            probs = detection.class_mix(det, c)
        if "embedding" in out:
            emb = out["embedding"].reshape(-1).astype(np.float32)
            return probs, emb / max(float(np.linalg.norm(emb)), 1e-8), det, "model"
        return probs, image_descriptor(frame), det, "descriptor"

    def predict_batch(self, frames: list[np.ndarray]) -> list[Prediction]:
        if len(frames) == 0:
            return []
        return self.infer(self.prepare(frames), frames)

    def predict(self, frame: np.ndarray) -> Prediction:
        return self.predict_batch([frame])[0]
