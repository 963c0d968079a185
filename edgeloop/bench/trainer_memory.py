"""`edgeloop bench trainer-memory`: the built-in trainer's peak memory against the labeled set's size.

For each size (1k, 5k, 20k frames by default) the benchmark writes a labeled set as the hub hands it
to a trainer (COCO annotations.json, images/ as JPEG files; the scenes world's frames and boxes, a
pool of distinct frames repeated to reach the size) and runs two arms, each in a fresh process,
for `--epochs` epochs:

- `streamed`: the built-in trainer of the contract as the hub runs it
  (`python -m edgeloop.hub.training.builtin detect --data ... --parent ... --out ...`), which reads
  frames a batch at a time (hub/training/frames.py).
- `in-ram`: the same training, fed every decoded frame at once (what the trainer did before):
  the baseline that shows what the set's pixels cost.

Peak memory is the trainer process's VmHWM (/proc/PID/status), read every 50 ms while it runs:
getrusage's ru_maxrss would carry the benchmark's own memory across fork and exec. Ratios are
against the streamed arm at the smallest size, measured in the same run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

ARMS = ("streamed", "in-ram")
POOL = 400  # distinct frames; larger sets repeat them (memory does not care that pixels repeat)
SAMPLE_S = 0.05


def write_set(pool, n: int, data: Path) -> dict:
    """The first n frames of the repeated pool, as the hub writes them -> sizes of what was written."""
    from edgeloop.shared.images import encode_jpeg

    (data / "images").mkdir(parents=True, exist_ok=True)
    jpegs = [encode_jpeg(img) for img in pool.images]
    images, annotations = [], []
    for k in range(n):
        j = k % len(jpegs)
        name = f"images/{k:06d}.jpg"
        (data / name).write_bytes(jpegs[j])
        h, w = pool.images[j].shape[:2]
        images.append({"id": k + 1, "file_name": name, "width": w, "height": h})
        for (x1, y1, x2, y2), c in zip(pool.boxes[j], pool.classes[j]):
            annotations.append({"id": len(annotations) + 1, "image_id": k + 1, "category_id": int(c) + 1,
                                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                                "area": float((x2 - x1) * (y2 - y1)), "iscrowd": 0})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(pool.names)]
    (data / "annotations.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                       "categories": categories}))
    h, w = pool.images[0].shape[:2]
    return {"frames": n, "boxes": len(annotations), "jpeg_bytes": sum(len(jpegs[k % len(jpegs)]) for k in range(n)),
            "decoded_bytes": n * h * w * 3}


def peak_of(argv: list[str], log: Path) -> dict:
    """Run argv to its end, sampling its VmHWM -> {"peak_rss_mb", "seconds", "returncode"}."""
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        peak_kb = 0
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak_kb = max(peak_kb, int(line.split()[1]))
            except (OSError, ValueError):
                pass
            time.sleep(SAMPLE_S)
    return {"peak_rss_mb": round(peak_kb / 1024, 1), "seconds": round(time.perf_counter() - t0, 1),
            "returncode": proc.returncode}


def arm_argv(arm: str, data: Path, parent: Path, out: Path, epochs: int) -> list[str]:
    common = ["--data", str(data), "--parent", str(parent), "--out", str(out), "--epochs", str(epochs)]
    if arm == "streamed":
        return [sys.executable, "-m", "edgeloop.hub.training.builtin", "detect", *common]
    return [sys.executable, "-m", "edgeloop.bench.trainer_memory", *common]


def in_ram_main(argv: list[str]) -> int:
    """The baseline arm: read every frame of the set into memory, then train exactly as `builtin detect`."""
    import argparse

    from edgeloop.hub.training import builtin
    from edgeloop.shared.images import decode_image

    p = argparse.ArgumentParser(prog="python -m edgeloop.bench.trainer_memory")
    for flag in ("--data", "--parent", "--out"):
        p.add_argument(flag, type=Path, required=True)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    _, images, _ = builtin.read_coco(args.data)
    loaded = [decode_image((args.data / i["file_name"]).read_bytes()) for i in images]
    return builtin.detect(args, frames=loaded) or 0


def run(sizes: list[int], epochs: int, arms: tuple[str, ...], work: Path, status) -> dict:
    from edgeloop.sim import ScenesWorld

    status(f"rendering a pool of {POOL} frames")
    pool = ScenesWorld(seed=0, fps=2).seed_set(n=POOL)
    rows = []
    for n in sizes:
        data = work / f"data-{n}"
        shutil.rmtree(data, ignore_errors=True)
        status(f"writing {n} frames")
        written = write_set(pool, n, data)
        (work / "parent").mkdir(exist_ok=True)
        for arm in arms:
            status(f"{arm}: training on {n} frames, {epochs} epoch(s)")
            out = work / f"out-{arm}-{n}"
            shutil.rmtree(out, ignore_errors=True)
            fig = peak_of(arm_argv(arm, data, work / "parent", out, epochs), work / f"{arm}-{n}.log")
            if fig["returncode"] != 0:
                tail = (work / f"{arm}-{n}.log").read_text()[-1500:]
                raise click.ClickException(f"{arm} on {n} frames exited {fig['returncode']}: {tail}")
            rows.append({"arm": arm, **written, **fig})
        shutil.rmtree(data, ignore_errors=True)
    base = next(r for r in rows if r["arm"] == arms[0] and r["frames"] == sizes[0])["peak_rss_mb"]
    for r in rows:
        r["rss_vs_base"] = round(r["peak_rss_mb"] / base, 3)
    return {"epochs": epochs, "pool": POOL, "baseline": f"{arms[0]} at {sizes[0]} frames", "rows": rows}


@click.command("trainer-memory")
@click.option("--sizes", default="1000,5000,20000", show_default=True, help="Labeled-set sizes, frames.")
@click.option("--epochs", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--arms", default=",".join(ARMS), show_default=True, help=f"Of {', '.join(ARMS)}.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/bench"), show_default=True)
def trainer_memory(sizes, epochs, arms, out) -> None:
    """The built-in detector trainer's peak RSS against the labeled set's size, streamed vs all in RAM.

    Writes OUT/trainer_memory.json: per arm and size the frames, boxes, JPEG and decoded bytes, the
    trainer's peak RSS (MiB), seconds, and the ratio to the streamed arm at the smallest size.

    \b
    Example:
      edgeloop bench trainer-memory --out runs/bench
      edgeloop bench trainer-memory --sizes 500,2000 --arms streamed --out runs/bench
    """
    from rich.console import Console

    sizes_n = sorted({int(s) for s in sizes.split(",") if s.strip()})
    arm_list = tuple(a.strip() for a in arms.split(",") if a.strip())
    if not sizes_n or min(sizes_n) < 1:
        raise click.BadParameter("expected positive sizes, e.g. 1000,5000", param_hint="--sizes")
    if not arm_list or set(arm_list) - set(ARMS):
        raise click.BadParameter(f"expected arms of {', '.join(ARMS)}", param_hint="--arms")
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    work = Path(tempfile.mkdtemp(prefix="trainer-memory-"))
    try:
        with console.status("starting") as spinner:
            fig = run(sizes_n, epochs, arm_list, work, lambda text: spinner.update(text))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in fig["rows"]:
        click.echo(f"{r['arm']:>9} {r['frames']:>6} frames ({r['decoded_bytes'] / 2**20:7.0f} MiB decoded): "
                   f"peak RSS {r['peak_rss_mb']:7.1f} MiB = {r['rss_vs_base']:.2f}x baseline, {r['seconds']:.0f} s")
    (out / "trainer_memory.json").write_text(json.dumps(fig, indent=1))
    click.echo(f"wrote {out / 'trainer_memory.json'}")


if __name__ == "__main__":
    sys.exit(in_ram_main(sys.argv[1:]))
