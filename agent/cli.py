"""`edgeloop agent ...`: thin commands over the daemon."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from edgeloop.shared import config as cfg


@click.group()
def agent() -> None:
    """The device daemon and its tools."""


@agent.command("run")
@click.option("--device", "device_id", required=True, help="Device id; also its MQTT username.")
@click.option("--site", required=True, help="Site id: the relay that serves this device.")
@click.option("--broker", default="mqtt://127.0.0.1:1883", show_default=True,
              help="The site broker: mqtt://HOST:PORT, or mqtts://HOST:PORT for TLS (see --ca).")
@click.option("--source", default="sim:cam-000", show_default=True,
              help="sim:CAMERA (simulated), a video file, a device index (0) or a URL (rtsp://...).")
@click.option("--camera", "camera_id", default=None, help="Camera id for a non-simulated source.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True,
              help="Folder for the outbox database and the models.")
@click.option("--pubkey", "pubkey_path", type=click.Path(path_type=Path), required=True,
              help="The hub's public key (hub.pub): only models it signed are loaded.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None, help="TOML config file.")
@click.option("--quota", default="50MB", show_default=True, help="Outbox byte quota.")
@click.option("--outbox-journal", is_flag=True,
              help="Keep every committed and evicted sample id in the outbox file, without bound (audits).")
@click.option("--max-fps", default=0.0, show_default=True, help="Process at most this many frames a second (0: no cap).")
@click.option("--frames-per-model", default=0, show_default=True,
              help="Simulation: process N frames per model version, then wait for the next model (0: run on).")
@click.option("--sim-seed", default=0, show_default=True, help="Seed of the simulated world.")
@click.option("--threads", default=1, show_default=True, help="onnxruntime intra-op threads.")
@click.option("--state-interval", default=2.0, show_default=True, help="Seconds between state reports.")
@click.option("--password", envvar="EDGELOOP_MQTT_PASSWORD", default=None,
              help="MQTT password; the username is the device id (env EDGELOOP_MQTT_PASSWORD).")
@click.option("--ca", "ca_file", envvar="EDGELOOP_MQTT_CA", default=None,
              type=click.Path(dir_okay=False, path_type=Path),
              help="CA certificate (PEM) that signed an mqtts:// broker's (env EDGELOOP_MQTT_CA; "
                   "default: the system's CAs).")
@click.option("--api", "api", default=None, metavar="HOST:PORT",
              help="Serve the local API (feedback, recent frames, Prometheus /metrics) here, e.g. 127.0.0.1:8780.")
@click.option("--recent-frames", default=64, show_default=True, help="Recent frames held for application feedback.")
@click.option("--recent-bytes", default="32MB", show_default=True, help="Memory bound of the recent frames.")
@click.option("--ready-file", type=click.Path(path_type=Path), default=None,
              help="Write {port, url} of the local API here once running.")
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The signed model artifact the device was provisioned with: it runs and collects from the "
                   "first minute, offline, until the relay's desired state brings another (a model already "
                   "installed by OTA is kept).")
def run(device_id, site, broker, source, camera_id, data_dir, pubkey_path, config_path, quota, outbox_journal,
        max_fps, frames_per_model, sim_seed, threads, state_interval, password, ca_file, api, recent_frames,
        recent_bytes, ready_file, model_path) -> None:
    """Capture, infer, keep the frames worth a label, and uplink them.

    A video file is processed to its end, then the agent sends what it kept and exits; cameras and
    streams run until stopped (SIGTERM), reconnecting when they drop. With --api, the application
    flags a wrong prediction with POST /feedback (or publishes the same JSON to the MQTT topic
    edgeloop/SITE/DEVICE/feedback), and the frame goes up with the reason feedback:wrong.

    \b
    Example (a simulated camera; --model: the artifact it was provisioned with, so it collects before
    any relay is reachable):
      edgeloop agent run --device dev-1 --site site-0 --source sim:cam-001 \\
          --pubkey /etc/edgeloop/hub.pub --data /var/lib/edgeloop/agent --api 127.0.0.1:8780 \\
          --model /etc/edgeloop/v0.artifact
      curl -d '{"sample_id": "01J...", "verdict": "wrong"}' http://127.0.0.1:8780/feedback
    """
    from edgeloop.shared.signing import load_public_key

    from .daemon import Agent, AgentSettings
    from .memory import hold_mmap_threshold

    hold_mmap_threshold()  # before the model loads: freed frames go back to the system (memory.py)
    try:
        public_key = load_public_key(pubkey_path.read_bytes())
    except OSError as exc:
        raise cfg.ConfigError(f"--pubkey {pubkey_path}: {exc.strerror}") from exc
    conf = cfg.load(config_path)
    settings = AgentSettings(
        device_id=device_id, site=site, broker=broker, source=source, camera_id=camera_id, data_dir=data_dir,
        sampling=conf.sampling, sim_seed=sim_seed, outbox_quota=cfg.parse_size(quota, "--quota"),
        outbox_journal=outbox_journal,
        max_fps=max_fps, frames_per_model=frames_per_model, threads=threads, state_interval=state_interval,
        public_key=public_key, password=password, ca_file=ca_file, api=_host_port(api) if api else None,
        recent_frames=recent_frames, recent_bytes=cfg.parse_size(recent_bytes, "--recent-bytes"), model=model_path)
    daemon = Agent(settings)
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop())
    daemon.run(ready_file)


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise cfg.ConfigError(f"--api: expected HOST:PORT such as 127.0.0.1:8780, got {value!r}")
    return host or "127.0.0.1", int(port)


@agent.command("check-model")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--manifest", "manifest_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Manifest JSON for a bare .onnx file (not needed for a packed artifact).")
@click.option("--runs", default=50, show_default=True, help="Test inferences to time.")
@click.option("--threads", default=1, show_default=True, help="onnxruntime intra-op threads.")
def check_model(model, manifest_path, runs, threads) -> None:
    """Validate a model against its manifest, run test inferences, print its specs and latency.

    MODEL is a packed artifact, an .onnx file with --manifest, or a bare .onnx whose metadata says what
    it is (as Ultralytics exports write: task, names, imgsz): the manifest is then inferred and the
    inference printed. A mismatch between model and manifest is an error here, before it could ever
    reach a device.

    \b
    Examples:
      edgeloop agent check-model model.onnx --manifest manifest.json
      edgeloop agent check-model yolov8n.onnx          # an Ultralytics export, no manifest
    """
    import time

    import numpy as np

    from edgeloop.shared.onnx_metadata import load_model_file
    from edgeloop.shared.runtime import ModelRuntime

    onnx, manifest, notes = load_model_file(model.read_bytes(),
                                            manifest_path.read_bytes() if manifest_path else None)
    rt = ModelRuntime.load(onnx, manifest, threads=threads)
    spec = manifest.input
    click.echo(f"model {manifest.version} ({manifest.task}, {manifest.num_classes} labels, parent {manifest.parent or '-'})")
    for note in notes:
        click.echo(f"  {note}")
    click.echo(f"classes {', '.join(manifest.labels)}")
    click.echo(f"input  {spec.name}: {list(spec.shape)} {spec.layout} {spec.color} scale={spec.scale:.5g} "
               f"mean={list(spec.mean)} std={list(spec.std)} resize={spec.resize}")
    for o in rt.session.get_outputs():
        role = next((r for r, n in manifest.outputs.items() if n == o.name), "-")
        click.echo(f"output {o.name}: {o.shape} {o.type} role={role}")
    frame = np.random.default_rng(0).integers(0, 255, (spec.height, spec.width, 3), dtype=np.uint8)
    times = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        pred = rt.predict(frame)
        times.append((time.perf_counter() - t0) * 1000)
    p50, p95 = np.percentile(times, [50, 95])
    if pred.detections is not None:
        d = rt.detection
        style = {"detections": "YOLOv8-style detections [1, 4+C, N]", "boxes": "boxes + scores + labels"}[rt.style]
        click.echo(f"detector: {style}, score >= {d.score_threshold:g}, NMS IoU > {d.iou_threshold:g} suppressed, "
                   f"at most {d.max_detections}; the test frame gave {len(pred.detections)} detections")
    dim = pred.embedding.shape[0]
    emb = f"{dim}-d (model)" if pred.embedding_source == "model" else f"descriptor ({dim}-d)"
    click.echo(f"ok: {runs} test inferences, latency p50 {p50:.2f} ms, p95 {p95:.2f} ms (frame to prediction), "
               f"embedding {emb}")
