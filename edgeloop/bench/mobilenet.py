"""A MobileNetV2-sized classifier for `edgeloop bench agent`, defined here in torch and exported to ONNX.

MobileNetV2 (Sandler et al. 2018) at width 1.0 on 224 x 224 RGB input: a stride-2 stem, seventeen
inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 linear projection; a skip connection when
the shape is unchanged), a 1x1 conv to 1280 channels, global average pooling and a 1000-way linear
classifier. About 300 M multiply-adds per frame (`count_macs` counts them; the paper's "300 MFLOPs"
counts a multiply-add as one operation), 3.5 M parameters.

The weights are random (fixed seed), never downloaded: the benchmark measures the cost of running a
network of this shape, not what it predicts. BatchNorm statistics are calibrated on a few frames so
that activations keep a realistic scale through the depth of the net (with BatchNorm left at its
identity initialisation they drift, and tiny values turn into denormals that slow a CPU down).

    onnx_path, manifest_path = export(Path("runs/bench"), calibration=frames)   # needs torch
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeloop.shared.errors import ModelError
from edgeloop.shared.manifest import InputSpec, ModelManifest
from edgeloop.shared.preprocess import preprocess

VERSION = "mobilenetv2-bench"
NUM_CLASSES = 1000
EMBEDDING = 1280
SEED = 0
ONNX_OPSET = 17  # as edgeloop.hub.training: the legacy exporter, which onnxruntime >= 1.14 runs
# ImageNet normalisation, applied by the device's preprocess (shared.preprocess) from the manifest.
INPUT = InputSpec(name="input", height=224, width=224, layout="NCHW", color="RGB", scale=1.0 / 255.0,
                  mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
# (expansion t, output channels c, repeats n, first stride s) per stage, from the paper's Table 2.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
PARITY_TOLERANCE = 1e-3  # max |logits(torch) - logits(onnxruntime)|, relative to max |logits|


def _conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """x (N, cin, H, W) -> (N, cout, H/stride, W/stride): expand t x, depthwise 3x3, project (no activation)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [_conv_bn(cin, hidden)]
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, act=False)]
        self.body = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.skip else y


class MobileNetV2(nn.Module):
    """(N, 3, 224, 224) normalised RGB -> (logits (N, 1000), embedding (N, 1280): the pooled features)."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        blocks: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in STAGES:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        blocks.append(_conv_bn(cin, EMBEDDING))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(EMBEDDING, num_classes)
        self.num_classes = num_classes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.features(x).mean(dim=(2, 3))
        return self.classifier(emb), emb


def build(seed: int = SEED) -> MobileNetV2:
    """A MobileNetV2 with random weights drawn from `seed` (the same net on every machine)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MobileNetV2()


def count_macs(net: nn.Module, height: int = INPUT.height, width: int = INPUT.width) -> int:
    """Multiply-adds of one (1, 3, height, width) forward pass, counted over every Conv2d and Linear."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        else:
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, height, width))
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    return total


def calibrate(net: MobileNetV2, frames: np.ndarray, batch: int = 16) -> None:
    """Set every BatchNorm's running statistics to the cumulative average over `frames` (N, H, W, 3) BGR."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every batch counts the same
    net.train()
    with torch.no_grad():
        for i in range(0, len(frames), batch):
            net(torch.from_numpy(preprocess(list(frames[i:i + batch]), INPUT)))
    net.eval()


def _smooth_noise(n: int, seed: int = SEED) -> np.ndarray:
    """n (224, 224, 3) uint8 images of blurred noise: calibration input when no frames are given."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = rng.integers(0, 256, (INPUT.height, INPUT.width, 3), dtype=np.uint8)
        out.append(cv2.GaussianBlur(img, (0, 0), 3))
    return np.stack(out)


def export(path_dir: str | Path, calibration: np.ndarray | None = None,
           seed: int = SEED) -> tuple[Path, Path]:
    """Build, calibrate and export the classifier -> (PATH_DIR/mobilenetv2-bench.onnx, .../mobilenetv2-bench.json).

    calibration: (N, H, W, 3) uint8 BGR frames for the BatchNorm statistics (32 of blurred noise if
    None). The ONNX model takes "input" (N, 3, 224, 224) float32 (N dynamic) and returns "logits"
    (N, 1000) and "embedding" (N, 1280). The manifest records the multiply-adds, the parameters and
    the torch / onnxruntime parity in `metrics`, and passes `ModelManifest.from_json`.
    """
    from edgeloop.shared.runtime import ModelRuntime

    path_dir = Path(path_dir)
    path_dir.mkdir(parents=True, exist_ok=True)
    net = build(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        calibrate(net, _smooth_noise(32, seed) if calibration is None else calibration)
    macs = count_macs(net)
    buf = io.BytesIO()
    batch_axis = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter announces its own deprecation
        torch.onnx.export(net, (torch.zeros(1, 3, INPUT.height, INPUT.width),), buf, input_names=[INPUT.name],
                          output_names=["logits", "embedding"],
                          dynamic_axes={INPUT.name: batch_axis, "logits": batch_axis, "embedding": batch_axis},
                          opset_version=ONNX_OPSET, dynamo=False)
    onnx_bytes = buf.getvalue()
    manifest = ModelManifest(
        version=VERSION, task="classification", input=INPUT, outputs={"logits": "logits", "embedding": "embedding"},
        labels=tuple(f"class-{i}" for i in range(NUM_CLASSES)),
        metrics={"macs": macs, "flops": 2 * macs, "params": sum(p.numel() for p in net.parameters()), "seed": seed},
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    # Parity on a couple of frames, fed exactly as a device feeds them (ModelRuntime also checks the
    # model against the manifest).
    probe = (_smooth_noise(2, seed + 1) if calibration is None else calibration[:2])
    x = preprocess(list(probe), INPUT)
    with torch.no_grad():
        want = net(torch.from_numpy(x))[0].numpy()
    rt = ModelRuntime.load(onnx_bytes, manifest)
    got = rt.session.run([manifest.outputs["logits"]], {INPUT.name: x})[0]
    diff = float(np.max(np.abs(want - got)) / max(1e-6, float(np.max(np.abs(want)))))
    if not diff <= PARITY_TOLERANCE:  # `not <=` also catches nan
        raise ModelError(f"export {VERSION}: onnxruntime and torch logits differ by {diff:.3g} relative "
                         f"(tolerance {PARITY_TOLERANCE:g})")
    manifest = dataclasses.replace(manifest, metrics={**manifest.metrics, "onnx_parity_rel_diff": diff})
    onnx_path, manifest_path = path_dir / f"{VERSION}.onnx", path_dir / f"{VERSION}.json"
    onnx_path.write_bytes(onnx_bytes)
    manifest_path.write_bytes(manifest.to_json())
    ModelManifest.from_json(manifest_path.read_bytes())  # as a device will read it
    return onnx_path, manifest_path
