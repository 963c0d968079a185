"""Train the built-in image classifier on the hub, export it to ONNX with a manifest, evaluate the artifact.

    result = train(images, labels, parent_state=parent.state)        # images (N, H, W, 3) uint8 BGR
    onnx_bytes, manifest = export_onnx(result.net, version="v7", parent="v6", parity_frames=images[:16],
                                       temperature=1.4)                  # logits / 1.4 inside the graph
    report = evaluate(ModelRuntime.load(onnx_bytes, manifest), images, labels, slices)

This is the only module of edgeloop that imports torch: the device side runs the exported ONNX
through `edgeloop.shared.runtime` and must never need it. The input tensor comes from
`edgeloop.shared.preprocess.preprocess`, the very function the device uses, so train and serve agree.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...shared.errors import ModelError
from ...shared.manifest import InputSpec, ModelManifest
from ...shared.preprocess import preprocess
from ...shared.runtime import ModelRuntime
from .accuracy import evaluate  # noqa: F401 - torch-free, kept importable from here
from .frames import checked_frame

# The class names of a classifier trained without any given: ten, named by index (the seed sets of the
# simulator's classification world label by index).
LABELS = tuple(str(i) for i in range(10))
DEFAULT_INPUT = InputSpec(name="image", height=32, width=32, layout="NCHW", color="RGB", scale=1 / 255,
                          mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
EMBEDDING_DIM = 64
# Both exporters work with torch 2.13 + onnxscript 0.7. We use the TorchScript one (dynamo=False):
# 0.2 s per export instead of 4 s, quiet, and it writes to BytesIO without complaint. It is deprecated,
# but torch is pinned (pyproject: torch==2.13.0); should it go, dynamo=True with opset 18 and
# dynamic_shapes also exported this net with parity here. onnxruntime runs opset 17 since 1.14.
ONNX_OPSET = 17
PARITY_TOLERANCE = 1e-3


# --- the network ------------------------------------------------------------------------------

def _block(cin: int, cout: int) -> nn.Sequential:
    # bias=False: BatchNorm's shift makes a conv bias redundant.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ClassifierNet(nn.Module):
    """A small CNN (~80k parameters): (N, 3, H, W) float32 -> logits (N, C), embedding (N, 64).

    Per-image standardisation, five 3x3 conv + BatchNorm + ReLU layers in four resolution stages
    (32x32 -> 16x16 -> 8x8 -> 4x4 for the default input), then global average pooling gives the
    embedding the device uses for diversity sampling, and one linear layer gives the logits.
    Any H, W work (the pooling is global), but the manifest fixes them for the device.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            _block(3, 16), _block(16, 24), nn.MaxPool2d(2),  # full resolution keeps thin strokes; -> H/2
            _block(24, 48), nn.MaxPool2d(2),  # -> H/4
            _block(48, 64), nn.MaxPool2d(2),  # -> H/8: 4x4 cells, each seeing most of the object
            _block(64, EMBEDDING_DIM),
        )
        self.classifier = nn.Linear(EMBEDDING_DIM, num_classes)

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Per-image, per-channel standardisation inside the graph (so the device runs it too):
        # day, dusk and night frames of one scene then look alike, whatever their exposure and tint.
        x = (x - x.mean(dim=(2, 3), keepdim=True)) / (x.std(dim=(2, 3), keepdim=True) + 1e-3)
        embedding = self.features(x).mean(dim=(2, 3))  # global average pool: (N, 64)
        return self.classifier(embedding), embedding


def build_net(num_classes: int = 10) -> ClassifierNet:
    return ClassifierNet(num_classes)


def load_state(state: bytes, num_classes: int = 10) -> ClassifierNet:
    """`TrainResult.state` bytes -> ClassifierNet in eval mode. Raises ModelError if they don't fit."""
    net = build_net(num_classes)
    try:
        # weights_only: state bytes may come from disk or a peer; never unpickle arbitrary objects.
        sd = torch.load(io.BytesIO(state), map_location="cpu", weights_only=True)
        net.load_state_dict(sd)
    except Exception as exc:  # torch raises RuntimeError, pickle/zip errors, ... for bad bytes
        raise ModelError(f"model state does not load into ClassifierNet({num_classes} classes): {exc}") from exc
    return net.eval()


class Calibrated(nn.Module):
    """A ClassifierNet whose logits are divided by a fixed temperature T > 0: what gets exported.

    The device's softmax of these logits is the calibrated confidence; argmax (and accuracy) is the
    net's. Only the export sees this wrapper: TrainResult.state stays the raw net, so children are
    fine-tuned from uncalibrated weights.
    """

    def __init__(self, net: ClassifierNet, temperature: float = 1.0):
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be finite and > 0, got {temperature}")
        self.net = net
        # A buffer, not a parameter: exported as a constant, never trained, not in the net's state.
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    @property
    def num_classes(self) -> int:
        return self.net.num_classes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, embedding = self.net(x)
        return logits / self.temperature, embedding


def predict_logits(net: nn.Module, images: np.ndarray, spec: InputSpec = DEFAULT_INPUT, batch: int = 256) -> np.ndarray:
    """images (N, H, W, 3) uint8 BGR -> logits (N, C) float32 from torch, fed by the device's preprocess."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = [net(torch.from_numpy(preprocess(images[i:i + batch], spec)))[0].numpy()
                   for i in range(0, len(images), batch)]
    finally:
        net.train(was_training)
    return np.concatenate(out) if out else np.empty((0, net.num_classes), np.float32)


def _state_bytes(net: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    return buf.getvalue()


# --- training ---------------------------------------------------------------------------------

@dataclass
class TrainResult:
    net: ClassifierNet  # in eval mode
    state: bytes  # torch.save(state_dict) bytes, loadable by load_state()
    epochs: int
    train_loss: float  # mean training loss of the last epoch (nan when epochs == 0)
    seconds: float
    # What train() was called with (epochs, seed, batch_size, lr, augment, from_parent): the model card's record.
    settings: dict = dataclasses.field(default_factory=dict)


def _augment(x: torch.Tensor, spec: InputSpec, gen: torch.Generator) -> torch.Tensor:
    """Light, label-preserving jitter of a normalised (N, 3, H, W) batch.

    Geometry: shift up to ~3 px, scale 0.9..1.1, rotate up to 8 degrees (no flips: a flipped 2 is no 2).
    Photometry: contrast 0.7..1.3, exposure 0.5..1.5, white balance +-10% in *pixel* space, mild noise,
    to cover day, dusk and night lighting.
    """
    n, _, h, w = x.shape
    u = lambda lo, hi, *shape: torch.empty(*shape).uniform_(lo, hi, generator=gen)  # noqa: E731
    angle = u(-8, 8, n) * math.pi / 180
    scale = u(0.9, 1.1, n)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([
        torch.stack([cos, -sin, u(-6 / w, 6 / w, n)], 1),  # 6/w in [-1, 1] coordinates = 3 px
        torch.stack([sin, cos, u(-6 / h, 6 / h, n)], 1),
    ], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    # Undo the normalisation so brightness/contrast act on pixel values as a camera would change them.
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    top = 255.0 * spec.scale
    p = x * std + mean
    mu = p.mean(dim=(1, 2, 3), keepdim=True)
    p = (p - mu) * u(0.7, 1.3, n, 1, 1, 1) + mu  # contrast
    # Exposure and white balance are multiplicative: an additive shift would crush night frames to black.
    p = p * u(0.5, 1.5, n, 1, 1, 1) * u(0.9, 1.1, n, 3, 1, 1)
    p = p + torch.randn(p.shape, generator=gen) * u(0.0, 0.03, n, 1, 1, 1) * top  # sensor noise
    return (p.clamp(0.0, top) - mean) / std


def train(images: np.ndarray | Sequence[np.ndarray], labels: np.ndarray, *, spec: InputSpec = DEFAULT_INPUT,
          parent_state: bytes | None = None, epochs: int = 15, seed: int = 0, batch_size: int = 64, lr: float = 3e-3,
          augment: bool = True, progress: Callable[[int, int, float], None] | None = None,
          num_classes: int = len(LABELS)) -> TrainResult:
    """Train a ClassifierNet of num_classes on images, N of (H, W, 3) uint8 BGR, with labels (N,) in 0..C-1.

    images may be any sequence, e.g. one that decodes a file per item (builtin.FrameFiles): it is read
    a batch at a time, so memory holds the model and a batch, not the set. parent_state: start from
    the parent's weights (the loop trains each model from its parent on everything labeled so far)
    instead of a fresh initialisation. progress(epoch, epochs, loss) is called after every epoch
    (epoch counts from 1). Deterministic for a seed on a given machine.
    """
    labels = np.asarray(labels)
    if isinstance(images, np.ndarray) and (images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8):
        raise ValueError(f"train: images must be (N, H, W, 3) uint8 BGR, got {images.shape} {images.dtype}")
    if len(images) == 0 or labels.shape != (len(images),):
        raise ValueError(f"train: need N >= 1 images and N labels, got {len(images)} images, labels {labels.shape}")
    if spec.layout != "NCHW":
        raise ValueError(f"train: ClassifierNet takes NCHW input, spec has layout {spec.layout!r}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"train: labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    # Tiny convolutions gain nothing from more threads than cores, and a 2-core hub also serves requests.
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    try:
        # fork_rng: seed locally without disturbing the caller's global torch RNG.
        with torch.random.fork_rng(devices=[]):
            net, loss_value = _fit(images, labels, spec, parent_state, epochs, seed, batch_size, lr, augment, progress,
                                   num_classes)
    finally:
        torch.set_num_threads(threads)
    settings = {"epochs": epochs, "seed": seed, "batch_size": batch_size, "lr": lr, "augment": augment,
                "from_parent": parent_state is not None}
    return TrainResult(net=net, state=_state_bytes(net), epochs=epochs, train_loss=loss_value,
                       seconds=time.perf_counter() - t0, settings=settings)


def _fit(images: Sequence[np.ndarray], labels: np.ndarray, spec: InputSpec, parent_state: bytes | None, epochs: int, seed: int,
         batch_size: int, lr: float, augment: bool,
         progress: Callable[[int, int, float], None] | None, num_classes: int) -> tuple[ClassifierNet, float]:
    """The training loop of train(); returns the net in eval mode and the last epoch's mean loss."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = load_state(parent_state, num_classes) if parent_state is not None else build_net(num_classes)
    y_all = torch.from_numpy(labels.astype(np.int64))
    n = len(images)
    batch_size = min(batch_size, n)
    # Drop the ragged last batch: a handful of samples gives BatchNorm noisy statistics.
    # Each epoch reshuffles, so every sample is still seen.
    steps = max(1, n // batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    # Warm-up then cosine decay: the warm-up keeps a fine-tuned child from being knocked far off its parent.
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, epochs * steps), pct_start=0.15)
    loss_value = float("nan")
    for epoch in range(1, epochs + 1):
        net.train()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(steps):
            idx = order[i * batch_size:(i + 1) * batch_size]
            # The device's preprocess, a batch at a time; augmentation then works on tensors.
            xb = torch.from_numpy(preprocess([checked_frame(images, j, "train") for j in idx.tolist()], spec))
            yb = y_all[idx]
            if augment:
                xb = _augment(xb, spec, gen)
            logits, _ = net(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        loss_value = total / steps
        if progress is not None:
            progress(epoch, epochs, loss_value)
    return net.eval(), loss_value


# --- export -----------------------------------------------------------------------------------

def export_onnx(net: ClassifierNet, *, version: str, parent: str | None, spec: InputSpec = DEFAULT_INPUT,
                class_counts: Sequence[int] = (), metrics: dict | None = None,
                parity_frames: np.ndarray | None = None, temperature: float = 1.0,
                labels: Sequence[str] = LABELS) -> tuple[bytes, ModelManifest]:
    """ClassifierNet -> (ONNX bytes, manifest), after checking onnxruntime agrees with torch.

    The ONNX model takes `spec.name` (N, 3, H, W) float32 (N dynamic) and returns "logits" (N, C), one
    per name in `labels`, and "embedding" (N, 64); the logits are the net's divided by `temperature`
    (see Calibrated), so the device's softmax gives calibrated confidences. parity_frames (M, H', W', 3) uint8 BGR go
    through the same Calibrated module in torch and through ModelRuntime; a max |logits diff| above
    1e-3 raises ModelError. The max diff is recorded in manifest.metrics["onnx_parity_max_abs_diff"].
    """
    labels = tuple(str(n) for n in labels)
    if net.num_classes != len(labels):
        raise ModelError(f"export: net has {net.num_classes} classes, labels has {len(labels)}")
    if spec.layout != "NCHW":
        raise ValueError(f"export: ClassifierNet takes NCHW input, spec has layout {spec.layout!r}")
    model = Calibrated(net, temperature)
    was_training = net.training
    model.eval()  # BatchNorm must use running statistics in the exported graph
    try:
        buf = io.BytesIO()
        dummy = torch.zeros(2, 3, spec.height, spec.width)
        batch_axis = {0: "batch"}
        with warnings.catch_warnings():
            # The legacy exporter announces its own deprecation on every call; see ONNX_OPSET above.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (dummy,), buf, input_names=[spec.name], output_names=["logits", "embedding"],
                              dynamic_axes={spec.name: batch_axis, "logits": batch_axis, "embedding": batch_axis},
                              opset_version=ONNX_OPSET, dynamo=False)
        onnx_bytes = buf.getvalue()

        manifest = ModelManifest(
            version=version, task="classification", input=spec, outputs={"logits": "logits", "embedding": "embedding"},
            labels=labels, parent=parent, class_counts=tuple(int(c) for c in class_counts), metrics=dict(metrics or {}),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        if parity_frames is None:
            parity_frames = np.random.default_rng(0).integers(0, 256, (16, spec.height, spec.width, 3), dtype=np.uint8)
        diff = _parity(model, onnx_bytes, manifest, parity_frames)
    finally:
        net.train(was_training)
    if not diff <= PARITY_TOLERANCE:  # `not <=` also catches nan
        raise ModelError(f"export {version}: onnxruntime and torch logits differ by up to {diff:.3g} "
                         f"(tolerance {PARITY_TOLERANCE:g})")
    manifest = dataclasses.replace(manifest, metrics={**manifest.metrics, "onnx_parity_max_abs_diff": diff})
    # Validate exactly as a device will: catches bad class_counts or metrics that are not JSON.
    try:
        return onnx_bytes, ModelManifest.from_json(manifest.to_json())
    except TypeError as exc:
        raise ModelError(f"export {version}: manifest metrics are not JSON-serialisable: {exc}") from exc


def _parity(net: nn.Module, onnx_bytes: bytes, manifest: ModelManifest, frames: np.ndarray) -> float:
    """Max |logits(torch) - logits(onnxruntime)| over frames, both fed by the device's preprocess."""
    batch = preprocess(frames, manifest.input)
    with torch.no_grad():
        want = net(torch.from_numpy(batch))[0].numpy()
    rt = ModelRuntime.load(onnx_bytes, manifest)  # also checks the model against the manifest
    got = rt.session.run([manifest.outputs["logits"]], {manifest.input.name: batch})[0]
    return float(np.max(np.abs(want - got)))
