"""An onnxruntime session driven by a manifest.

    rt = ModelRuntime.load(onnx_bytes, manifest)   # raises ModelMismatch at load, never mid-stream
    pred = rt.predict(frame)                         # Prediction(probs (C,), embedding (D,) | None)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from .errors import ModelError, ModelMismatch
from .manifest import ModelManifest
from .preprocess import preprocess


@dataclass(frozen=True)
class Prediction:
    probs: np.ndarray  # (C,) float32, sums to 1
    embedding: np.ndarray | None  # (D,) float32, L2-normalised, or None when the model has none
    latency_ms: float

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


class ModelRuntime:
    def __init__(self, session: ort.InferenceSession, manifest: ModelManifest):
        self.session = session
        self.manifest = manifest
        self._prob_role = "probabilities" if "probabilities" in manifest.outputs else "logits"
        self._out_names = [manifest.outputs[self._prob_role]]
        if "embedding" in manifest.outputs:
            self._out_names.append(manifest.outputs["embedding"])

    @property
    def version(self) -> str:
        return self.manifest.version

    @classmethod
    def load(cls, onnx: bytes | str, manifest: ModelManifest, threads: int = 1) -> "ModelRuntime":
        """Open the model and check it against the manifest, then run one test inference."""
        if manifest.task != "classification":
            raise ModelMismatch(f"task {manifest.task!r} is not supported by this runtime yet")
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
        shape = inputs[spec.name].shape
        want = spec.shape
        if len(shape) != 4 or any(isinstance(d, int) and d != w for d, w in zip(shape[1:], want[1:])):
            raise ModelMismatch(f"model input {spec.name!r} has shape {shape}, manifest says {list(want)}")
        outputs = {o.name for o in session.get_outputs()}
        for role, name in manifest.outputs.items():
            if name not in outputs:
                raise ModelMismatch(f"manifest.outputs.{role} = {name!r} is not an output of the model (has {sorted(outputs)})")
        rt = cls(session, manifest)
        try:
            probe = rt._run(np.zeros(want, np.float32))
        except Exception as exc:  # onnxruntime's own errors: the model cannot run on this input
            raise ModelMismatch(f"a test inference failed: {exc}") from exc
        if probe[0].shape[-1] != manifest.num_classes:
            raise ModelMismatch(f"model gives {probe[0].shape[-1]} classes, manifest has {manifest.num_classes} labels")
        return rt

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self._out_names, {self.manifest.input.name: batch})

    def predict_batch(self, frames: list[np.ndarray]) -> list[Prediction]:
        t0 = time.perf_counter()
        outs = self._run(preprocess(frames, self.manifest.input))
        ms = (time.perf_counter() - t0) * 1000 / max(1, len(frames))
        probs = outs[0].astype(np.float32)
        if self._prob_role == "logits":
            probs = softmax(probs)
        emb = None
        if len(outs) > 1:
            emb = outs[1].reshape(len(frames), -1).astype(np.float32)
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-8)
        return [Prediction(probs[i], None if emb is None else emb[i], ms) for i in range(len(frames))]

    def predict(self, frame: np.ndarray) -> Prediction:
        return self.predict_batch([frame])[0]
