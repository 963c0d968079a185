"""Train the built-in detector: frames and their boxes in, a DetectorNet and its state bytes out.

    result = train_detector(images, boxes, classes, names, parent_state=parent.state)
    onnx_bytes, manifest = export_detector_onnx(result.net, version="v3", parent="v2", names=names)

Targets follow CenterNet: each class's heatmap holds a Gaussian at every object's centre cell (exactly
1 there), trained with its penalty-reduced focal loss; boxes are trained with GIoU at the cells
where that Gaussian is not negligible, so that any cell the heatmap lights up also draws a good box
(the runtime's NMS then keeps the best of them). Frames go through `edgeloop.shared.preprocess`, the
device's own function, and boxes through `letterbox_geometry`, so train and serve agree.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ....shared.detection import letterbox_geometry
from ....shared.manifest import InputSpec
from ....shared.preprocess import preprocess, resize
from ..frames import checked_frame
from .model import DEFAULT_IMGSZ, STRIDE, DetectorNet, build_detector, input_spec, load_detector_state, state_bytes

BOX_LOSS_WEIGHT = 2.0  # GIoU against the focal loss, about CenterNet's/TTFNet's balance
GAUSSIAN_ALPHA = 0.54  # TTFNet: sigma = alpha * box size / 6, in cells
MIN_SIGMA = 0.4  # cells: a 5-px object still gets a centre cell of 1 with a thin rim
BOX_CELL_MIN_HEAT = 0.1  # boxes are trained where the object's Gaussian exceeds this


@dataclass
class DetTrainResult:
    net: DetectorNet  # in eval mode
    state: bytes  # torch.save(state_dict) bytes, loadable by load_detector_state()
    epochs: int
    train_loss: float  # mean training loss of the last epoch (nan when epochs == 0)
    seconds: float
    # What train_detector() was called with: the model card's record.
    settings: dict = dataclasses.field(default_factory=dict)


def train_detector(images: np.ndarray | Sequence[np.ndarray], boxes: Sequence[np.ndarray],
                   classes: Sequence[np.ndarray], names: Sequence[str], *, parent_state: bytes | None = None,
                   epochs: int = 12, seed: int = 0, batch_size: int = 32, lr: float = 3e-3,
                   imgsz: tuple[int, int] = DEFAULT_IMGSZ, augment: bool = True,
                   progress: Callable[[int, int, float], None] | None = None) -> DetTrainResult:
    """Train a DetectorNet on frames (N of (H, W, 3) uint8 BGR, sizes may differ) and their objects.

    images may be any sequence, e.g. one that decodes a file per item (builtin.FrameFiles): frames are
    read, letterboxed and given their targets a batch at a time, so memory holds the model and a
    batch, not the set. boxes[i] (K, 4) float32 x1, y1, x2, y2 in frame pixels, classes[i] (K,) int64 in 0..len(names)-1; K may
    be 0 (a frame with nothing in it is a valid negative). parent_state: start from the parent's weights
    (same names) instead of a fresh initialisation. imgsz = (height, width) of the model input.
    progress(epoch, epochs, loss) after every epoch (from 1). Deterministic for a seed on a given machine.
    """
    # --- the contract (each frame is checked as it is read) --------------------------------------
    names = tuple(str(n) for n in names)
    if not len(images) or len(boxes) != len(images) or len(classes) != len(images):
        raise ValueError(f"train_detector: need N >= 1 images with N box and class arrays, got "
                         f"{len(images)}, {len(boxes)}, {len(classes)}")
    boxes = [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]
    classes = [np.asarray(c, np.int64).reshape(-1) for c in classes]
    for i, (b, c) in enumerate(zip(boxes, classes)):
        if len(b) != len(c) or (len(c) and (c.min() < 0 or c.max() >= len(names))):
            raise ValueError(f"train_detector: image {i}: {len(b)} boxes, classes {c.tolist()} "
                             f"(must be as many, each in 0..{len(names) - 1})")
    spec = input_spec(imgsz)

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    # Small convolutions gain nothing from more threads than cores, and a 2-core hub also serves requests.
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    try:
        # fork_rng: seed locally without disturbing the caller's global torch RNG.
        with torch.random.fork_rng(devices=[]):
            net, loss_value = _fit(images, boxes, classes, len(names), spec, parent_state, epochs, seed,
                                   batch_size, lr, augment, progress)
    finally:
        torch.set_num_threads(threads)
    settings = {"epochs": epochs, "seed": seed, "batch_size": batch_size, "lr": lr, "augment": augment,
                "bf16": bf16_training(),
                "imgsz": list(imgsz), "from_parent": parent_state is not None, "images": len(images),
                "objects": int(sum(len(c) for c in classes))}
    return DetTrainResult(net=net, state=state_bytes(net), epochs=epochs, train_loss=loss_value,
                          seconds=time.perf_counter() - t0, settings=settings)


def _fit(images: Sequence[np.ndarray], boxes: list[np.ndarray], classes: list[np.ndarray], num_classes: int,
         spec: InputSpec, parent_state: bytes | None, epochs: int, seed: int, batch_size: int, lr: float,
         augment: bool, progress: Callable[[int, int, float], None] | None) -> tuple[DetectorNet, float]:
    """The training loop of train_detector(); returns the net in eval mode and the last epoch's mean loss."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = load_detector_state(parent_state, num_classes) if parent_state is not None else build_detector(num_classes)
    # channels_last: about a tenth faster for these small convolutions on CPU; the weights are the same.
    net = net.to(memory_format=torch.channels_last)
    n = len(images)
    batch_size = min(batch_size, n)
    # Drop the ragged last batch: a handful of frames gives BatchNorm noisy statistics. Each epoch
    # reshuffles, so every frame is still seen.
    steps = max(1, n // batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    # Warm-up then cosine decay: the warm-up keeps a fine-tuned child from being knocked far off its parent.
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, epochs * steps), pct_start=0.15)
    loss_value = float("nan")
    amp = bf16_training()
    for epoch in range(1, epochs + 1):
        net.train()
        order = torch.randperm(n, generator=gen).tolist()
        total = 0.0
        for i in range(steps):
            idx = order[i * batch_size:(i + 1) * batch_size]
            # A batch is read, letterboxed and given its targets (in input pixels on the output grid;
            # flips below transform them with the frame) here, then goes through the device's preprocess.
            frames = [checked_frame(images, j, "train_detector") for j in idx]
            heat_t, box_t, weight_t = (torch.stack(t) for t in zip(*(
                _targets(boxes[j], classes[j], f.shape[:2], spec, num_classes) for j, f in zip(idx, frames))))
            x = torch.from_numpy(preprocess([resize(f, spec) for f in frames], spec))
            if augment:
                x, heat_t, box_t, weight_t = _augment(x, heat_t, box_t, weight_t, gen)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                heat, box, _ = net(x.contiguous(memory_format=torch.channels_last))
            loss = _focal_loss(heat.float(), heat_t) + BOX_LOSS_WEIGHT * _giou_loss(box.float(), box_t, weight_t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        loss_value = total / steps
        if progress is not None:
            progress(epoch, epochs, loss_value)
    return net.to(memory_format=torch.contiguous_format).eval(), loss_value


def bf16_training() -> bool:
    """Whether the convolutions run in bfloat16 (autocast; weights, BatchNorm and losses stay float32):
    on CPUs with native bf16 (AVX512-BF16, AMX) that is ~1.5x faster; elsewhere it would be emulated
    and slower. EDGELOOP_TRAIN_BF16=0 turns it off."""
    if os.environ.get("EDGELOOP_TRAIN_BF16", "1") == "0":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# --- targets and losses -----------------------------------------------------------------------

def _targets(boxes: np.ndarray, classes: np.ndarray, frame_hw: tuple[int, int], spec: InputSpec,
             num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One frame's objects -> heat (C, h, w) in [0, 1], boxes (4, h, w) xyxy input px, box weight (h, w).

    A cell trains the box of the object whose Gaussian is highest there, weighted by that value."""
    gh, gw = spec.height // STRIDE, spec.width // STRIDE
    heat = np.zeros((num_classes, gh, gw), np.float32)
    box_t = np.zeros((4, gh, gw), np.float32)
    weight = np.zeros((gh, gw), np.float32)
    left, top, nw, nh = letterbox_geometry(frame_hw, spec)
    scale = np.array([nw / frame_hw[1], nh / frame_hw[0]] * 2, np.float32)
    xyxy = boxes * scale + np.array([left, top, left, top], np.float32)
    ys, xs = np.mgrid[0:gh, 0:gw].astype(np.float32)
    for (x1, y1, x2, y2), c in zip(xyxy, classes):
        if x2 <= x1 or y2 <= y1:
            continue
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        ix, iy = min(gw - 1, max(0, int(cx // STRIDE))), min(gh - 1, max(0, int(cy // STRIDE)))
        sx = max(MIN_SIGMA, GAUSSIAN_ALPHA * (x2 - x1) / STRIDE / 6)
        sy = max(MIN_SIGMA, GAUSSIAN_ALPHA * (y2 - y1) / STRIDE / 6)
        g = np.exp(-((xs - ix) ** 2 / (2 * sx * sx) + (ys - iy) ** 2 / (2 * sy * sy)))
        g[iy, ix] = 1.0  # exactly 1: the focal loss's positives
        heat[c] = np.maximum(heat[c], g)
        take = (g > BOX_CELL_MIN_HEAT) & (g > weight)
        box_t[:, take] = np.array([x1, y1, x2, y2], np.float32)[:, None]
        weight[take] = g[take]
    return torch.from_numpy(heat), torch.from_numpy(box_t), torch.from_numpy(weight)


def _focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4), normalised by the number of centres."""
    pos = target.eq(1.0).float()
    p = logits.sigmoid()
    pos_loss = -F.logsigmoid(logits) * (1 - p) ** 2 * pos
    neg_loss = -F.logsigmoid(-logits) * p ** 2 * (1 - target) ** 4 * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


def _giou_loss(pred_cxcywh: torch.Tensor, target_xyxy: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """1 - GIoU between (B, 4, h, w) predicted cx, cy, w, h and target x1, y1, x2, y2, weighted by (B, h, w)."""
    mask = weight > 0
    if not mask.any():
        return pred_cxcywh.sum() * 0.0  # a batch of empty frames: no box to learn, keep the graph
    p = pred_cxcywh.permute(0, 2, 3, 1)[mask]
    t = target_xyxy.permute(0, 2, 3, 1)[mask]
    w = weight[mask]
    px1, py1, px2, py2 = p[:, 0] - p[:, 2] / 2, p[:, 1] - p[:, 3] / 2, p[:, 0] + p[:, 2] / 2, p[:, 1] + p[:, 3] / 2
    tx1, ty1, tx2, ty2 = t.unbind(1)
    iw = (torch.min(px2, tx2) - torch.max(px1, tx1)).clamp(min=0)
    ih = (torch.min(py2, ty2) - torch.max(py1, ty1)).clamp(min=0)
    inter = iw * ih
    union = p[:, 2] * p[:, 3] + (tx2 - tx1) * (ty2 - ty1) - inter
    iou = inter / union.clamp(min=1e-6)
    hull = (torch.max(px2, tx2) - torch.min(px1, tx1)) * (torch.max(py2, ty2) - torch.min(py1, ty1))
    giou = iou - (hull - union) / hull.clamp(min=1e-6)
    return ((1 - giou) * w).sum() / w.sum()


# --- augmentation -----------------------------------------------------------------------------

def _augment(x: torch.Tensor, heat: torch.Tensor, box: torch.Tensor, weight: torch.Tensor,
             gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Label-preserving jitter of an input batch (B, 3, H, W) in [0, 1] and its targets.

    Geometry: horizontal flip of half the frames (cars and people have no handedness); the targets flip
    with them, box x's mirrored about the input's width. Photometry: contrast 0.6..1.4, exposure
    0.4..1.5 (multiplicative: an additive shift would crush night frames to black), white balance
    +-10%, sensor noise up to 4% — to cover day, dusk and night.
    """
    b, _, _, width = x.shape
    u = lambda lo, hi, *shape: torch.empty(*shape).uniform_(lo, hi, generator=gen)  # noqa: E731
    flip = torch.rand(b, generator=gen) < 0.5
    if flip.any():
        x, heat, box, weight = x.clone(), heat.clone(), box.clone(), weight.clone()
        x[flip] = x[flip].flip(-1)
        heat[flip] = heat[flip].flip(-1)
        weight[flip] = weight[flip].flip(-1)
        fb = box[flip].flip(-1)
        box[flip] = torch.stack([width - fb[:, 2], fb[:, 1], width - fb[:, 0], fb[:, 3]], dim=1)
    mu = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mu) * u(0.6, 1.4, b, 1, 1, 1) + mu
    x = x * u(0.4, 1.5, b, 1, 1, 1) * u(0.9, 1.1, b, 3, 1, 1)
    x = x + torch.randn(x.shape, generator=gen) * u(0.0, 0.04, b, 1, 1, 1)
    return x.clamp(0.0, 1.0), heat, box, weight
