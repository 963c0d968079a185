"""`edgeloop bench agent`: how close does the agent pipeline run to a bare onnxruntime loop, and at what memory?

Two arms see the same frames (a video written once: real photos, panned, MJPG in AVI, so that JPEG
decode is real work) and the same model, each in a fresh process so that its peak resident memory
is its own:

- `bare`: an onnxruntime session with the agent's settings (`--threads` intra-op threads, one
  inter-op thread), every frame decoded and preprocessed up front (untimed), then a timed loop of
  `session.run` over them. `bare_rss_mb` is the peak of that process after the model is loaded and
  has run, before the frames are decoded: python, numpy, onnxruntime and the model, nothing else
  (the frame buffer is the benchmark's, not a bare process's).
- `pipeline`: the agent's own pipeline (`edgeloop.agent.pipeline.run_pipeline`): capture and decode
  from the video file, preprocess, infer, score, select per window (1 s windows on the capture
  clock, so windows close and commit to the outbox during the run), SQLite outbox. Its process
  starts as `edgeloop agent run` does, holding glibc's mmap threshold (`agent/memory.py`).
  `rss_mb` is the peak of that process at the end of the run.
- `bare-held`: the bare loop again with the agent's allocator setting; not a target, it shows what
  the setting alone saves a bare process and costs its speed (`bare_held_rss_mb`, `bare_held_fps`).

The arms alternate `--repeats` times; each figure is the best of its repeats (a shared machine only
ever makes things slower), peak memory the highest. Separately, in the pipeline's process after its
run, `outbox_inserts_per_s` times `SqliteOutbox.put` of realistic candidates (a JPEG of a 640 x 480
frame, the model's class probabilities, a float16 embedding) into a fresh outbox: one transaction
with synchronous=FULL each, so it measures the disk's fsync, which is what an agent pays.

The default model is a MobileNetV2 defined in torch and exported to ONNX (`edgeloop.bench.mobilenet`);
`--model MODEL.onnx --manifest M.json` runs any other and needs no torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np

from .agent_video import FRAME_SIZE, VIDEO_FPS, photos, write_video

WINDOW_S = 1.0  # selection window (capture clock): short, so that windows close during the run
PER_HOUR = 7200.0  # candidates per hour of capture time: 2 per 1 s window
OUTBOX_QUOTA = 50 << 20  # the agent's default (AgentSettings.outbox_quota)
OUTBOX_PUTS = 300
WARMUP_RUNS = 5
TARGET_RATIO = 0.97  # pipeline_fps / bare_fps at least
TARGET_RSS = 1.3  # rss_mb / bare_rss_mb at most
ARM_TIMEOUT_S = 1800.0
ARMS = ("bare", "pipeline", "bare-held")


# --- the arms (each in its own process) -------------------------------------------------------

def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB.

    On Linux, VmHWM of /proc/self/status rather than getrusage's ru_maxrss: Linux carries ru_maxrss
    across fork and exec, so an arm started by the benchmark's process (which holds torch, some
    700 MB) would report that process's peak instead of its own. VmHWM belongs to the address space
    that exec created.
    """
    import resource

    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def run_bare(model: Path, manifest_path: Path, video: Path, threads: int, hold: bool = False) -> dict:
    """A bare onnxruntime loop over every frame of the video, preprocessed up front -> figures.
    hold: with the agent's allocator setting (`agent.memory.hold_mmap_threshold`)."""
    if hold:
        from edgeloop.agent.memory import hold_mmap_threshold

        hold_mmap_threshold()
    import onnxruntime as ort

    from edgeloop.shared.manifest import ModelManifest

    manifest = ModelManifest.from_json(manifest_path.read_bytes())
    opts = ort.SessionOptions()  # exactly ModelRuntime's options
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    data = model.read_bytes()  # from bytes, as the agent loads a verified artifact
    session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    del data
    # Every output the manifest names: what ModelRuntime asks for (a classifier's logits or
    # probabilities and its embedding; a detector's boxes).
    names, inp = sorted(set(manifest.outputs.values())), manifest.input.name
    zeros = np.zeros(manifest.input.shape, np.float32)
    for _ in range(WARMUP_RUNS):
        session.run(names, {inp: zeros})
    bare_rss = peak_rss_mb()  # python + numpy + onnxruntime + the model, warmed up: a bare process

    import cv2

    from edgeloop.shared.preprocess import preprocess

    cap = cv2.VideoCapture(str(video))
    inputs = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        inputs.append(preprocess(img, manifest.input))
        if len(inputs) == 1:
            session.run(names, {inp: inputs[0]})
            rss_with_decode = peak_rss_mb()  # ... plus cv2 and one decoded frame
    cap.release()
    if not inputs:
        raise click.ClickException(f"{video}: no frames decode")
    t0 = time.perf_counter()
    for x in inputs:
        session.run(names, {inp: x})
    seconds = time.perf_counter() - t0
    return {"frames": len(inputs), "seconds": seconds, "fps": len(inputs) / seconds, "rss_mb": bare_rss,
            "rss_with_decode_mb": rss_with_decode, "rss_with_frames_mb": peak_rss_mb()}


def _candidates(video: Path, n: int, num_classes: int, dim: int) -> list:
    """n realistic candidates: JPEGs of the video's frames, probabilities, a float16 embedding."""
    import cv2

    from edgeloop.shared.ids import frame_sample_id
    from edgeloop.shared.images import encode_jpeg, sha256
    from edgeloop.shared.protocol import Candidate
    from edgeloop.shared.runtime import softmax

    cap = cv2.VideoCapture(str(video))
    jpegs = []
    while len(jpegs) < 16:
        ok, img = cap.read()
        if not ok:
            break
        jpegs.append(encode_jpeg(img))
    cap.release()
    rng = np.random.default_rng(1)
    t0 = time.time()
    out = []
    for i in range(n):
        jpeg = jpegs[i % len(jpegs)]
        emb = rng.normal(size=dim).astype(np.float32)
        probs = softmax(rng.normal(0, 3, num_classes).astype(np.float32))
        out.append(Candidate(
            sample_id=frame_sample_id(t0 + i / VIDEO_FPS, "bench", "cam0", i), device_id="bench", camera_id="cam0",
            captured_at=t0 + i / VIDEO_FPS, model_version="bench", probs=probs,
            embedding=(emb / np.linalg.norm(emb)).astype(np.float16), image=jpeg, image_sha256=sha256(jpeg),
            tags={"site": "bench"}, scores={"least_confidence": float(1 - probs.max())},
            reasons=("least_confidence",), value=float(1 - probs.max())))
    return out


def time_outbox_puts(path: Path, video: Path, n: int = OUTBOX_PUTS, num_classes: int = 1000,
                     dim: int = 1280) -> dict:
    """SqliteOutbox.put of n candidates into a fresh outbox at path (quota: no eviction) -> figures."""
    from edgeloop.shared.outbox import SqliteOutbox

    cands = _candidates(video, n, num_classes, dim)
    box = SqliteOutbox(path, quota_bytes=1 << 40)
    try:
        t0 = time.perf_counter()
        for c in cands:
            box.put(c, c.value)
        seconds = time.perf_counter() - t0
    finally:
        box.close()
    return {"puts": n, "seconds": seconds, "inserts_per_s": n / seconds,
            "candidate_bytes": int(np.mean([c.nbytes for c in cands]))}


def run_pipeline_arm(model: Path, manifest_path: Path, video: Path, threads: int, work: Path) -> dict:
    """The agent's pipeline over the video, then the outbox insert rate -> figures."""
    from edgeloop.agent.memory import hold_mmap_threshold

    held = hold_mmap_threshold()  # first, as `edgeloop agent run` does
    from edgeloop.agent.pipeline import run_pipeline
    from edgeloop.agent.sources import open_source
    from edgeloop.shared.config import Budget, SamplingConfig
    from edgeloop.shared.manifest import ModelManifest
    from edgeloop.shared.outbox import SqliteOutbox
    from edgeloop.shared.runtime import ModelRuntime

    manifest = ModelManifest.from_json(manifest_path.read_bytes())
    runtime = ModelRuntime.load(model.read_bytes(), manifest, threads=threads)
    sampling = SamplingConfig(budget=Budget(per_hour=PER_HOUR, window_s=WINDOW_S))
    outbox = SqliteOutbox(work / "pipeline-outbox.sqlite", OUTBOX_QUOTA)
    try:
        stats = run_pipeline(open_source(str(video), camera_id="cam0"), runtime, sampling, outbox,
                             device_id="bench", site="bench", max_frames=None)
        rss = peak_rss_mb()
        in_outbox = len(outbox)
    finally:
        outbox.close()
    if not stats.frames:
        raise click.ClickException(f"{video}: the pipeline processed no frames")
    emb = runtime.predict(np.zeros((manifest.input.height, manifest.input.width, 3), np.uint8)).embedding
    puts = time_outbox_puts(work / "put-outbox.sqlite", video, num_classes=manifest.num_classes,
                            dim=128 if emb is None else emb.size)
    return {"frames": stats.frames, "seconds": stats.seconds, "fps": stats.frames / stats.seconds,
            "sampling_seconds": stats.sampling_seconds,
            "sampling_us_per_frame": stats.sampling_seconds / stats.frames * 1e6,
            "model_ms_per_frame": stats.model_seconds / stats.frames * 1e3,
            "kept": stats.kept, "corrupt": stats.corrupt, "in_outbox": in_outbox, "rss_mb": rss,
            "mmap_threshold_held": held,
            "outbox_inserts_per_s": puts["inserts_per_s"], "outbox_put": puts}


def _arm_main(argv: list[str] | None = None) -> None:
    """Entry of an arm's process: `ARM MODEL MANIFEST VIDEO THREADS WORK` -> one JSON line on stdout."""
    from edgeloop.shared.errors import EdgeloopError

    arm, model, manifest, video, threads, work = argv if argv is not None else sys.argv[1:]
    try:
        if arm in ("bare", "bare-held"):
            out = run_bare(Path(model), Path(manifest), Path(video), int(threads), hold=arm == "bare-held")
        else:
            out = run_pipeline_arm(Path(model), Path(manifest), Path(video), int(threads), Path(work))
    except (EdgeloopError, click.ClickException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(out), flush=True)


def run_arm(arm: str, model: Path, manifest: Path, video: Path, threads: int, work: Path) -> dict:
    """Run one arm in a fresh python process -> its figures."""
    work.mkdir(parents=True, exist_ok=True)
    # `-c`, not `-m edgeloop.bench.agent`: the bench package imports this module to register the
    # command, and runpy warns about running a module that is already imported.
    cmd = [sys.executable, "-c", "from edgeloop.bench.agent import _arm_main; _arm_main()",
           arm, str(model), str(manifest), str(video), str(threads), str(work)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=ARM_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise click.ClickException(f"the {arm} arm did not finish within {ARM_TIMEOUT_S:.0f} s") from exc
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip()[-3000:] or "(no output)"
        raise click.ClickException(f"the {arm} arm failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1])


# --- the benchmark ----------------------------------------------------------------------------

def default_model(out: Path, calibration: list[np.ndarray]) -> tuple[Path, Path]:
    """Export the built-in MobileNetV2 into OUT -> (onnx path, manifest path); needs torch."""
    try:
        from . import mobilenet
    except ImportError as exc:
        if (exc.name or "").split(".")[0] != "torch":
            raise
        raise click.UsageError("the built-in MobileNetV2 is defined in torch, which is not installed: pass "
                               "--model MODEL.onnx --manifest M.json, or install the hub extra "
                               "(pip install 'edgeloop[hub]')") from exc
    return mobilenet.export(out, calibration=np.stack(calibration))


def run_agent_bench(out: Path, frames: int = 300, repeats: int = 2, threads: int = 1,
                    model: Path | None = None, manifest: Path | None = None,
                    progress: Callable[[str], None] | None = None) -> dict:
    """Write the frames, export the default model unless one is given, run the arms -> the report.

    The report is also written to OUT/agent.json.
    """
    from edgeloop.shared.manifest import ModelManifest

    step = progress or (lambda msg: None)
    t_start = time.monotonic()
    load_start = os.getloadavg()[0]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    video = out / "agent-frames.avi"
    step(f"writing {frames} frames ({FRAME_SIZE[0]}x{FRAME_SIZE[1]} MJPG) to {video}")
    builtin = model is None
    calibration = write_video(video, frames, keep=32 if builtin else 0)
    if builtin:
        step("exporting the MobileNetV2 classifier to ONNX")
        model, manifest = default_model(out, calibration)
    del calibration
    man = ModelManifest.from_json(Path(manifest).read_bytes())
    macs = man.metrics.get("macs") if builtin else None  # counted on the torch net at export
    runs = []
    work = Path(tempfile.mkdtemp(prefix="agent-work-", dir=out))  # same disk as OUT: fsync is the real one
    try:
        for r in range(repeats):
            row = {"repeat": r + 1}
            for arm in ARMS:  # interleaved, so that a slow spell of the machine hits both arms
                step(f"repeat {r + 1}/{repeats}: {arm} arm")
                row[arm] = run_arm(arm, model, Path(manifest), video, threads, work / f"{arm}-{r + 1}")
            runs.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = summarise(runs, model=man.version, frames=frames, threads=threads, macs=macs)
    report["video"] = {"path": str(video), "bytes_per_frame": round(video.stat().st_size / frames),
                       "source": photos()[1]}
    report["model_path"] = str(model)
    # Other work on the machine slows the two-thread pipeline more than the one-thread bare loop:
    # the load average says how quiet the machine was.
    report["machine"] = {"cpus": os.cpu_count(), "loadavg_1min_start": load_start,
                         "loadavg_1min_end": os.getloadavg()[0]}
    report["seconds"] = round(time.monotonic() - t_start, 1)
    (out / "agent.json").write_text(json.dumps(report, indent=1))
    return report


def summarise(runs: list[dict], model: str, frames: int, threads: int, macs: int | None) -> dict:
    """Per-repeat figures -> the report: best fps of each arm, highest peak memory."""
    bare_fps = max(r["bare"]["fps"] for r in runs)
    pipeline_fps = max(r["pipeline"]["fps"] for r in runs)
    rss = max(r["pipeline"]["rss_mb"] for r in runs)
    bare_rss = max(r["bare"]["rss_mb"] for r in runs)
    ratio, rss_ratio = pipeline_fps / bare_fps, rss / bare_rss
    best = max(runs, key=lambda r: r["pipeline"]["fps"])["pipeline"]
    # Where the pipeline's frame time goes, from its best run: the model's own run, slower or not
    # beside the capture thread than alone (the bare loop's), and everything else.
    frame_ms, bare_ms = 1e3 / pipeline_fps, 1e3 / bare_fps
    model_ms = best.get("model_ms_per_frame")
    return {
        "model": model, "bare_fps": bare_fps, "pipeline_fps": pipeline_fps, "ratio": ratio,
        "sampling_us_per_frame": min(r["pipeline"]["sampling_us_per_frame"] for r in runs),
        "frame_ms": {"pipeline": frame_ms, "bare": bare_ms, "pipeline_model": model_ms,
                     "pipeline_other": None if model_ms is None else frame_ms - model_ms},
        "outbox_inserts_per_s": max(r["pipeline"]["outbox_inserts_per_s"] for r in runs),
        "rss_mb": rss, "bare_rss_mb": bare_rss,
        "bare_held_rss_mb": max(r["bare-held"]["rss_mb"] for r in runs),
        "bare_held_fps": max(r["bare-held"]["fps"] for r in runs),
        "frames": frames, "threads": threads, "repeats": len(runs),
        "flops": None if macs is None else 2 * macs,  # a multiply-add is 2 FLOPs
        "macs": macs,
        "targets": {"ratio": {"min": TARGET_RATIO, "value": ratio, "met": ratio >= TARGET_RATIO},
                    "rss": {"max_x_bare": TARGET_RSS, "value": rss_ratio, "met": rss_ratio <= TARGET_RSS}},
        "runs": runs,
    }


# --- the command ------------------------------------------------------------------------------

def _met(ok: bool) -> str:
    return "[green]met[/green]" if ok else "[red]not met[/red]"


def frame_time(report: dict) -> str:
    """Where the pipeline's frame time goes (its best run): the model's run, and the rest."""
    f = report.get("frame_ms") or {}
    if f.get("pipeline_model") is None:
        return "unknown"
    return (f"{f['pipeline']:.2f} ms a frame = the model {f['pipeline_model']:.2f} (alone, bare: {f['bare']:.2f}, "
            f"{f['pipeline_model'] / f['bare'] - 1:+.1%}) + the rest {f['pipeline_other']:.2f}")


def print_report(report: dict, console) -> None:
    from rich.table import Table

    t = report["targets"]
    table = Table(title=f"edgeloop bench agent: {report['model']}, {report['frames']} frames, "
                        f"{report['threads']} thread(s), best of {report['repeats']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target")
    if report["macs"]:
        table.add_row("model cost", f"{report['macs'] / 1e9:.2f} G multiply-adds ({report['flops'] / 1e9:.2f} GFLOPs)",
                      "")
    table.add_row("bare onnxruntime", f"{report['bare_fps']:.1f} fps", "")
    table.add_row("agent pipeline", f"{report['pipeline_fps']:.1f} fps", "")
    table.add_row("pipeline / bare", f"{report['ratio']:.2f}x", f">= {TARGET_RATIO:.2f}x: {_met(t['ratio']['met'])}")
    table.add_row("pipeline frame time", frame_time(report), "")
    table.add_row("score + select", f"{report['sampling_us_per_frame']:.0f} µs/frame", "")
    table.add_row("outbox put (fsync)", f"{report['outbox_inserts_per_s']:.0f} /s", "")
    table.add_row("peak RSS, pipeline", f"{report['rss_mb']:.0f} MB", "")
    table.add_row("peak RSS, bare", f"{report['bare_rss_mb']:.0f} MB", "")
    table.add_row("RSS pipeline / bare", f"{t['rss']['value']:.2f}x", f"<= {TARGET_RSS:.1f}x: {_met(t['rss']['met'])}")
    table.add_row("bare, agent's allocator setting", f"{report['bare_held_fps']:.1f} fps, "
                  f"{report['bare_held_rss_mb']:.0f} MB", "(not a target)")
    m = report.get("machine")
    if m:
        table.caption = (f"{m['cpus']} CPUs, 1-min load average {m['loadavg_1min_start']:.2f} at the start, "
                         f"{m['loadavg_1min_end']:.2f} at the end")
    console.print(table)


@click.command("agent")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/bench"),
              show_default=True, help="Output folder: agent.json, the video, the exported model.")
@click.option("--frames", default=300, show_default=True, type=click.IntRange(min=1),
              help="Frames in the video both arms run over.")
@click.option("--repeats", default=2, show_default=True, type=click.IntRange(min=1),
              help="Times each arm runs (alternating); the best fps counts.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="onnxruntime intra-op threads, in both arms (the agent's --threads).")
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="An ONNX model to run instead of the built-in MobileNetV2 (with --manifest).")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The model's manifest JSON (with --model).")
def agent_bench(out, frames, repeats, threads, model, manifest) -> None:
    """Agent pipeline against a bare onnxruntime loop: throughput ratio and peak memory.

    Writes a video of panning photos, then runs over it, each in a fresh process, a bare
    onnxruntime loop (frames preprocessed up front) and the agent's whole pipeline (decode,
    preprocess, infer, score, select, outbox), alternating --repeats times. Prints fps of each,
    their ratio (target >= 0.97), the cost of scoring and selection per frame, outbox inserts per
    second (fsync'd) and peak resident memory of each (target: pipeline <= 1.3 x bare), and writes
    OUT/agent.json. The pipeline's process holds glibc's mmap threshold as `agent run` does; a
    third arm runs the bare loop with that setting too, for comparison. The default model is a
    MobileNetV2 (0.3 G multiply-adds) defined in torch.

    \b
    Example:
      edgeloop bench agent --out runs/bench
      edgeloop bench agent --model model.onnx --manifest model.json --frames 600 --threads 2
    """
    from rich.console import Console

    from edgeloop.shared.errors import ManifestError
    from edgeloop.shared.manifest import ModelManifest

    if (model is None) != (manifest is None):
        raise click.UsageError("--model and --manifest go together: an ONNX model and its manifest JSON "
                               "(or neither, for the built-in MobileNetV2)")
    if manifest is not None:
        try:
            ModelManifest.from_json(manifest.read_bytes())
        except ManifestError as exc:
            raise click.BadParameter(str(exc), param_hint="--manifest") from exc
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
    with console.status("bench agent") as status:
        def step(msg: str) -> None:
            console.log(msg)
            status.update(msg)

        report = run_agent_bench(out, frames=frames, repeats=repeats, threads=threads, model=model,
                                 manifest=manifest, progress=step)
    print_report(report, Console(width=None if sys.stdout.isatty() else 120))
    click.echo(f"pipeline/bare {report['ratio']:.2f}x ({report['pipeline_fps']:.1f} / {report['bare_fps']:.1f} fps); "
               f"rss {report['targets']['rss']['value']:.2f}x ({report['rss_mb']:.0f} / {report['bare_rss_mb']:.0f} MB)")
    click.echo(f"wrote {Path(out) / 'agent.json'} in {report['seconds']}s")
