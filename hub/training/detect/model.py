"""The built-in detector: a small anchor-free CenterNet-style net, and its export to YOLOv8-style ONNX.

    net = build_detector(num_classes=12)                       # DetectorNet, ~0.33M parameters
    heat, boxes, embedding = net(x)                             # x (B, 3, H, W) from shared.preprocess
    onnx_bytes, manifest = export_detector_onnx(net, version="v3", parent="v2", names=names,
                                                parity_frames=frames[:8])

The net predicts, on a grid of stride 8, a class heatmap (one logit per class and cell: "an object of
this class is centred here", CenterNet's target) and a box per cell: its centre's offset from the
cell's centre and its width and height.
The export wraps it so that the ONNX graph speaks exactly what Ultralytics YOLOv8 writes and the
agent already runs: `images` [1, 3, H, W] -> `output0` [1, 4+C, N] (cx, cy, w, h in input pixels, then
C sigmoid class scores; N = (H/8) * (W/8) cells, row-major) and `embedding` [1, 64]; no NMS inside,
the device's runtime does it (`edgeloop.shared.detection`).
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from datetime import datetime, timezone
from typing import Sequence

import numpy as np
import onnx
import torch
from torch import nn

from ....shared.errors import ModelError
from ....shared.manifest import DetectionSpec, InputSpec, ModelManifest
from ....shared.preprocess import preprocess
from ....shared.runtime import ModelRuntime

STRIDE = 8  # output grid; the deepest stage is at 16 and merged back up
# (height, width), as Ultralytics orders imgsz. 320x240 frames scale by 0.8 with no padding; a
# 6-px object becomes 5 px, still a centre cell on the stride-8 grid.
DEFAULT_IMGSZ = (192, 256)
EMBEDDING_DIM = 64
# Serving threshold for the agent's signals (detections it reports and samples on). mAP is measured
# with a runtime whose threshold is lowered instead: see evaluate.py.
SCORE_THRESHOLD = 0.25
MAX_DETECTIONS = 100
HEAT_PRIOR = 0.01  # initial sigmoid of every heatmap cell: nearly all cells are background
ONNX_OPSET = 17  # the TorchScript exporter, as in hub/training/classifier.py (fast, quiet, writes to BytesIO)
PARITY_SCORE_TOLERANCE = 1e-3  # |class score| difference, torch vs onnxruntime
# Input pixels. Coordinates reach ~256 and two float32 engines sum convolutions in different orders:
# a fine-tuned child was seen 0.054 px apart (2e-4 relative). A quarter pixel moves no IoU that mAP sees.
PARITY_BOX_TOLERANCE = 0.25


def input_spec(imgsz: tuple[int, int] = DEFAULT_IMGSZ) -> InputSpec:
    """The manifest's input for an (height, width) imgsz: letterboxed RGB scaled to [0, 1]."""
    h, w = imgsz
    if h % 16 or w % 16 or h < 32 or w < 32:
        raise ValueError(f"imgsz must be (height, width), multiples of 16 and at least 32, got {imgsz}")
    return InputSpec(name="images", height=h, width=w, layout="NCHW", color="RGB", scale=1 / 255,
                     mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), resize="letterbox")


# --- the network ------------------------------------------------------------------------------

def _conv(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    # bias=False: BatchNorm's shift makes a conv bias redundant.
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.SiLU(inplace=True))


class DetectorNet(nn.Module):
    """(B, 3, H, W) float32 in [0, 1] -> heat (B, C, H/8, W/8) logits, boxes (B, 4, H/8, W/8), embedding (B, 64).

    Per-image standardisation, a backbone of four stride-2 stages (16, 32, 64, 96 channels), the stride-16
    features upsampled and added to the stride-8 ones (a one-level FPN: large objects need the wider
    view, 5-px ones the finer grid), then two small heads. boxes are cx, cy, w, h in input pixels: the
    centre is the cell's centre plus an unconstrained offset (a 5-px object's centre may lie outside
    the cell's own 8x8 square, which l, t, r, b distances could not express), the size a softplus
    (always positive). The embedding, used by the device for diversity sampling, is the global
    average of the merged features.
    """

    def __init__(self, num_classes: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"a detector needs at least one class, got {num_classes}")
        self.stem = _conv(3, 16, 2)  # /2
        self.stage2 = nn.Sequential(_conv(16, 32, 2), _conv(32, 32))  # /4
        self.stage3 = nn.Sequential(_conv(32, 64, 2), _conv(64, 64))  # /8
        self.stage4 = nn.Sequential(_conv(64, 96, 2), _conv(96, 96))  # /16
        self.lateral8 = _conv(64, EMBEDDING_DIM, k=1)
        self.lateral16 = _conv(96, EMBEDDING_DIM, k=1)
        self.merge = _conv(EMBEDDING_DIM, EMBEDDING_DIM)
        self.heat = nn.Sequential(_conv(EMBEDDING_DIM, 64), nn.Conv2d(64, num_classes, 1))
        self.box = nn.Sequential(_conv(EMBEDDING_DIM, 64), nn.Conv2d(64, 4, 1))
        # Start every cell at a low score (focal loss's prior): otherwise the background's loss swamps
        # the first steps. Boxes start centred on their cell, about 5.5 px wide (softplus(0) * 8).
        nn.init.constant_(self.heat[-1].bias, float(np.log(HEAT_PRIOR / (1 - HEAT_PRIOR))))
        nn.init.zeros_(self.box[-1].bias)

    @property
    def num_classes(self) -> int:
        return self.heat[-1].out_channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Per-image, per-channel standardisation inside the graph (so the device runs it too): day, dusk
        # and night frames of one scene then look alike, whatever their exposure.
        x = (x - x.mean(dim=(2, 3), keepdim=True)) / (x.std(dim=(2, 3), keepdim=True) + 1e-3)
        c8 = self.stage3(self.stage2(self.stem(x)))
        c16 = self.stage4(c8)
        up = nn.functional.interpolate(self.lateral16(c16), size=c8.shape[-2:], mode="nearest")
        p8 = self.merge(self.lateral8(c8) + up)
        raw = self.box(p8)
        centre = cell_centres(*raw.shape[-2:]).to(raw.dtype)
        boxes = torch.cat([centre + raw[:, :2] * STRIDE, nn.functional.softplus(raw[:, 2:]) * STRIDE], dim=1)
        return self.heat(p8), boxes, p8.mean(dim=(2, 3))


def build_detector(num_classes: int) -> DetectorNet:
    return DetectorNet(num_classes)


def load_detector_state(state: bytes, num_classes: int) -> DetectorNet:
    """`DetTrainResult.state` bytes -> DetectorNet in eval mode. Raises ModelError if they don't fit."""
    net = build_detector(num_classes)
    try:
        # weights_only: state bytes may come from disk or a peer; never unpickle arbitrary objects.
        sd = torch.load(io.BytesIO(state), map_location="cpu", weights_only=True)
        net.load_state_dict(sd)
    except Exception as exc:  # torch raises RuntimeError, pickle/zip errors, ... for bad bytes
        raise ModelError(f"model state does not load into DetectorNet({num_classes} classes): {exc}") from exc
    return net.eval()


def state_bytes(net: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    return buf.getvalue()


def cell_centres(h: int, w: int) -> torch.Tensor:
    """-> (2, h, w) x, y of each stride-8 cell's centre, in input pixels."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([xs, ys]) * STRIDE + STRIDE / 2


class YoloHead(nn.Module):
    """A DetectorNet speaking YOLOv8's output: x -> ([B, 4+C, N] cx, cy, w, h, sigmoid scores; [B, 64]).

    What gets exported. Scores are independent per class (sigmoid, as YOLOv8's), not a softmax."""

    def __init__(self, net: DetectorNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heat, boxes, embedding = self.net(x)
        b, c, h, w = heat.shape
        out = torch.cat([boxes, heat.sigmoid()], dim=1).reshape(b, 4 + c, h * w)
        return out, embedding


# --- export -----------------------------------------------------------------------------------

def export_detector_onnx(net: DetectorNet, *, version: str, parent: str | None, names: Sequence[str],
                         class_counts: Sequence[int] = (), metrics: dict | None = None,
                         parity_frames: np.ndarray | Sequence[np.ndarray] | None = None,
                         imgsz: tuple[int, int] = DEFAULT_IMGSZ,
                         score_threshold: float = SCORE_THRESHOLD) -> tuple[bytes, ModelManifest]:
    """DetectorNet -> (ONNX bytes, manifest), after checking onnxruntime agrees with torch.

    The graph takes `images` [1, 3, H, W] (imgsz = (H, W); batch fixed at 1, as Ultralytics exports)
    and returns `output0` [1, 4+C, N] and `embedding` [1, 64] (see YoloHead). Its metadata_props are
    Ultralytics': names "{0: 'car', ...}", imgsz "[H, W]", stride "8", task "detect", batch "1".
    parity_frames (uint8 BGR frames, any size) go through YoloHead in torch and through the agent's
    ModelRuntime: a score difference above 1e-3 or a box difference above 0.05 px raises ModelError;
    both maxima are recorded in manifest.metrics. The manifest is validated as a device would read it.
    """
    names = tuple(str(n) for n in names)
    if net.num_classes != len(names):
        raise ModelError(f"export {version}: net has {net.num_classes} classes, names has {len(names)}")
    spec = input_spec(imgsz)
    model = YoloHead(net)
    was_training = net.training
    model.eval()  # BatchNorm must use running statistics in the exported graph
    try:
        buf = io.BytesIO()
        with warnings.catch_warnings():
            # The legacy exporter announces its own deprecation on every call; see ONNX_OPSET.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (torch.zeros(1, 3, spec.height, spec.width),), buf, input_names=["images"],
                              output_names=["output0", "embedding"], opset_version=ONNX_OPSET, dynamo=False)
        proto = onnx.load_from_string(buf.getvalue())
        # Ultralytics' metadata, so that tools that read YOLOv8 files (and people) recognise this one.
        onnx.helper.set_model_props(proto, {
            "description": f"edgeloop built-in detector {version}",
            "author": "edgeloop hub",
            "task": "detect",
            "stride": str(STRIDE),
            "batch": "1",
            "imgsz": str([spec.height, spec.width]),
            "names": str(dict(enumerate(names))),
        })
        onnx_bytes = proto.SerializeToString()

        manifest = ModelManifest(
            version=version, task="detection", input=spec, outputs={"detections": "output0", "embedding": "embedding"},
            labels=names, parent=parent, class_counts=tuple(int(c) for c in class_counts), metrics=dict(metrics or {}),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            detection=DetectionSpec(score_threshold=score_threshold, max_detections=MAX_DETECTIONS),
        )
        if parity_frames is None:
            parity_frames = np.random.default_rng(0).integers(0, 256, (4, spec.height, spec.width, 3), dtype=np.uint8)
        score_diff, box_diff = _parity(model, onnx_bytes, manifest, parity_frames)
    finally:
        net.train(was_training)
    if not (score_diff <= PARITY_SCORE_TOLERANCE and box_diff <= PARITY_BOX_TOLERANCE):  # `not <=` catches nan
        raise ModelError(f"export {version}: onnxruntime and torch differ by up to {score_diff:.3g} in scores "
                         f"(tolerance {PARITY_SCORE_TOLERANCE:g}) and {box_diff:.3g} px in boxes "
                         f"(tolerance {PARITY_BOX_TOLERANCE:g})")
    manifest = dataclasses.replace(manifest, metrics={**manifest.metrics, "onnx_parity_max_abs_diff": score_diff,
                                                      "onnx_parity_max_box_px": box_diff})
    try:
        return onnx_bytes, ModelManifest.from_json(manifest.to_json())
    except TypeError as exc:
        raise ModelError(f"export {version}: manifest metrics are not JSON-serialisable: {exc}") from exc


def _parity(model: YoloHead, onnx_bytes: bytes, manifest: ModelManifest, frames) -> tuple[float, float]:
    """Max |score diff| and max |box diff| (px) between torch and onnxruntime over frames, one at a time."""
    rt = ModelRuntime.load(onnx_bytes, manifest)  # also checks the model against the manifest, as a device does
    score_diff = box_diff = 0.0
    for frame in frames:
        x = preprocess(frame, manifest.input)
        with torch.no_grad():
            want = model(torch.from_numpy(x))[0].numpy()
        got = rt.session.run(["output0"], {"images": x})[0]
        d = np.abs(want - got)
        score_diff = max(score_diff, float(d[:, 4:].max()))
        box_diff = max(box_diff, float(d[:, :4].max()))
    return score_diff, box_diff
