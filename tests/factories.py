"""Test data builders shared by the test suites.

    from factories import make_candidate
    c = make_candidate(value=0.9, image_bytes=b"\\xff\\xd8" + bytes(1000), camera_id="cam-2")

A candidate built here always decodes: valid ULID, ids matching the protocol's id pattern,
float32 probabilities summing to 1, and `image_sha256` computed from `image_bytes` (unless you
override `image_sha256` on purpose). Its default image is a real JPEG, which the hub takes; bytes
of your own are stored by agents and relays, which never decode them, but refused by the hub.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeloop.shared.ids import new_sample_id
from edgeloop.shared.images import encode_jpeg
from edgeloop.shared.protocol import Candidate, Receipt, SampleBatch, decode, encode

# A small real JPEG (the hub decodes every image it is sent and refuses one that does not decode).
FAKE_JPEG = encode_jpeg(np.full((8, 8, 3), 128, np.uint8))


def receipting(received: list):
    """on_message for a test's collector that stands in for the relay: it keeps each SampleBatch and
    answers with the relay's receipt (agent/uplink.py), so the agent deletes what was delivered."""
    def on_message(client, userdata, msg):
        batch = decode(msg.payload, SampleBatch)
        received.append(batch)
        site, device = msg.topic.split("/")[1:3]
        client.publish(f"edgeloop/{site}/{device}/received",
                       encode(Receipt("collector", tuple(c.sample_id for c in batch.samples))), qos=1)

    return on_message


def make_candidate(value: float = 0.5, image_bytes: bytes = FAKE_JPEG, **overrides: Any) -> Candidate:
    """A valid Candidate; any Candidate field can be overridden by keyword."""
    fields: dict[str, Any] = {
        "sample_id": new_sample_id(),
        "device_id": "dev-1",
        "camera_id": "cam-1",
        "captured_at": 1_700_000_000.0,
        "model_version": "m-1",
        "probs": np.array([0.7, 0.2, 0.1], dtype=np.float32),
        "embedding": None,
        "image": image_bytes,
        "image_sha256": hashlib.sha256(image_bytes).hexdigest(),
        "tags": {},
        "scores": {},
        "reasons": (),
        "value": float(value),
        "detections": None,
    }
    unknown = set(overrides) - set(fields)
    if unknown:
        raise TypeError(f"make_candidate: unknown field(s) {sorted(unknown)}")
    if "image" in overrides and "image_sha256" not in overrides:
        overrides["image_sha256"] = hashlib.sha256(overrides["image"]).hexdigest()
    fields.update(overrides)
    return Candidate(**fields)


def signed_models(folder, seeds: dict[str, int]) -> tuple[dict[str, bytes], "Path", bytes]:
    """Real (untrained, seeded) ClassifierNets exported to ONNX, packed and signed by ONE fresh hub key.

    Two versions with the same seed hold the same weights. Needs the hub extra (torch).
    -> ({version: artifact bytes}, hub.pub path, the private key PEM to sign more with).
    """
    from pathlib import Path

    import torch

    from edgeloop.hub.training.classifier import build_net, export_onnx
    from edgeloop.shared.artifact import pack, sign_artifact
    from edgeloop.shared.signing import generate_keypair, load_private_key

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    private_pem, public_pem = generate_keypair()
    key = load_private_key(private_pem)
    out = {}
    for version, seed in seeds.items():
        torch.manual_seed(seed)
        onnx, manifest = export_onnx(build_net(), version=version, parent=None)
        out[version] = sign_artifact(pack(manifest, onnx), key)
    pub = folder / "hub.pub"
    pub.write_bytes(public_pem)
    (folder / "hub.key").write_bytes(private_pem)  # beside it, for tests that sign desired statements
    return out, pub, private_pem


def signed_model(folder, version: str = "v0", seed: int = 0):
    """One signed model, as a file: -> (artifact path, public key path)."""
    arts, pub, _ = signed_models(folder, {version: seed})
    artifact = pub.parent / f"{version}.model"
    artifact.write_bytes(arts[version])
    return artifact, pub


HUB_TOKEN = "test-token"


def start_hub(root, *extra: str, name: str = "hub", data=None):
    """A real `edgeloop hub serve` on a free port, with a tiny golden set (nothing here evaluates a
    model on it), the admin token HUB_TOKEN and the suite's database (tests/hubdb.py).
    -> (Service, url); the caller stops it. root: a folder for the golden set, logs and (default) data."""
    import hubdb
    from edgeloop.procs import Service

    data = data or root / "data"
    golden = root / "golden.npz"
    rng = np.random.default_rng(0)
    np.savez(golden, images=rng.integers(0, 255, (6, 64, 64, 3), dtype=np.uint8), labels=np.arange(6),
             slices=np.array(["day", "dusk", "night"] * 2))
    svc = Service.edgeloop(name, ["hub", "serve", "--data", str(data), "--golden", str(golden), "--port", "0",
                                  "--token", HUB_TOKEN, *extra, *hubdb.args(data)], root / "logs", ready=True).start()
    return svc, svc.wait_ready(timeout=60)["url"]


def fixed_box_detector_onnx(path, boxes: np.ndarray, num_classes: int, side: int = 64) -> bytes:
    """A real YOLOv8-style detector ONNX (torch export) that answers the same boxes for every frame:
    `boxes` (K, 6) rows x1, y1, x2, y2 normalised, score, class -> output0 (1, 4+C, K) in model pixels."""
    import warnings

    import torch

    xyxy = boxes[:, :4] * side
    cls = np.full((num_classes, len(boxes)), 0.01, np.float32)
    cls[boxes[:, 5].astype(int), np.arange(len(boxes))] = boxes[:, 4]
    table = np.concatenate([((xyxy[:, :2] + xyxy[:, 2:]) / 2).T, (xyxy[:, 2:] - xyxy[:, :2]).T, cls])

    class FixedYolo(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("table", torch.from_numpy(table.astype(np.float32)))

        def forward(self, x):
            return (self.table + 0 * x.mean()).unsqueeze(0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(FixedYolo().eval(), (torch.zeros(1, 3, side, side),), str(path), input_names=["images"],
                          output_names=["output0"], opset_version=17, dynamo=False)
    return Path(path).read_bytes()


def ultralytics_style(onnx_bytes: bytes, names: Sequence[str], imgsz: tuple[int, int] | None, task: str = "detect",
                      keep: Sequence[str] = ("output0",), drop: Sequence[str] = (), **extra: str) -> bytes:
    """An ONNX as Ultralytics' exporter leaves it: only the outputs in `keep`, and metadata_props with
    str() values (names a dict literal, imgsz a list), no manifest anywhere. imgsz None and the keys
    in `drop` are left out."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    outputs = [o for o in model.graph.output if o.name in keep]
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    meta = {"description": "Ultralytics YOLOv8n model", "author": "Ultralytics", "version": "8.3.0",
            "license": "AGPL-3.0 License (https://ultralytics.com/license)", "stride": "8", "task": task,
            "batch": "1", "names": str(dict(enumerate(names))), **extra}
    if imgsz is not None:
        meta["imgsz"] = str(list(imgsz))
    del model.metadata_props[:]
    for k, v in meta.items():
        if k not in drop:
            model.metadata_props.add(key=k, value=v)
    return model.SerializeToString()


def signed_desired(private_pem: bytes, desired, site: str, device: str | None = None, seq: int = 1,
                   expires_in: float = 3600.0):
    """`desired` (a DesiredModel) carrying the statement a hub holding `private_pem` signs for it: for
    `device` of `site` (None: the site's default), sequence `seq`, expiring `expires_in` s from now."""
    import dataclasses
    import time

    from edgeloop.shared.signing import load_private_key
    from edgeloop.shared.statement import ShadowRef, Statement, sign

    sh = desired.shadow
    st = Statement(site=site, device=device, version=desired.version, sha256=desired.sha256, size=desired.size,
                   seq=seq, expires_at=time.time() + expires_in,
                   shadow=None if sh is None else ShadowRef(sh.version, sh.sha256, sh.size, sh.fraction),
                   max_latency_ms=desired.max_latency_ms, rollout_id=desired.rollout_id)
    data, sig = sign(load_private_key(private_pem), st)
    return dataclasses.replace(desired, statement=data, signature=sig)


def small_tmpfs(folder: Path, size: str):
    """A real tmpfs of `size` ("4m") mounted at folder/disk -> a context manager giving that path: a disk
    that fills for real (needs root; CI runs as root)."""
    import contextlib
    import os
    import subprocess

    import pytest

    @contextlib.contextmanager
    def mounted():
        if os.geteuid() != 0:
            pytest.fail("this test mounts a tmpfs: it needs root (CI runs as root)")
        disk = Path(folder) / "disk"
        disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], check=True)
        try:
            yield disk
        finally:
            subprocess.run(["umount", "-l", str(disk)], check=False)
    return mounted()
