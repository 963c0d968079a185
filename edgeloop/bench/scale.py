"""`edgeloop bench scale`: fleet-scale throughput, each figure a ratio against a limit measured in the
same run on the same box, and a sizing model for 1,000 and 10,000 cameras from the measured costs.

Parts (`--parts`, all by default):
- `search`: per hub size (`--sizes`), in a process of its own: the ANN index behind "more like this"
  (p50 / p95 ms, recall@10 against the exact scan, whose p50 is the limit it replaces) and hybrid
  selection of each k (`--ks`): seconds and peak RSS (bench/scale_search.py);
- `relay`: candidates/s one relay process stores vs. a bare paho subscriber on the same mosquitto
  (bench/scale_ingest.py);
- `hub`: samples/s hub processes store from relay batches, on SQLite and PostgreSQL, vs. a bare loop
  writing the same rows and blobs (bench/scale_hub.py);
- `agent`: `bench agent`'s pipeline / bare onnxruntime ratio and memory, and where the pipeline's
  frame time goes (the model's runs beside the capture thread, against the bare loop's).

Beside each ingest ratio, how busy the whole box was in each pass (bench/cpu_use.py): on a shared
2-core box that, with the CPU each arm spent, is what says why a ratio misses its target.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click

from . import scale_sizing

TARGETS = {"relay_x_raw": 0.5, "hub_sqlite_x_raw": 0.5, "two_hubs_x_one": 1.5, "selection_s": 60.0,
           "selection_gb": 4.0, "similar_p95_ms": 50.0, "recall_at_10": 0.95, "agent_ratio": 0.97, "agent_rss_x": 1.3}
PARTS = ("search", "relay", "hub", "agent")


def _mark(ok: bool) -> str:
    return "met" if ok else "NOT met"


def run_search(sizes: list[int], ks: list[int], echo) -> list[dict]:
    out = []
    for n in sizes:
        echo(f"  search: {n} samples ...")
        proc = subprocess.run([sys.executable, "-m", "edgeloop.bench.scale_search", str(n), "--ks",
                               ",".join(map(str, ks))], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise click.ClickException(f"scale_search {n} failed:\n{proc.stderr[-2000:]}")
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def search_lines(results: list[dict]) -> list[str]:
    lines = []
    for r in results:
        s = r.get("similar")
        if s:
            lines.append(f"similar  n={r['n']:>8}: p50 {s['p50_ms']:.2f} ms, p95 {s['p95_ms']:.2f} ms "
                         f"(limit {TARGETS['similar_p95_ms']:g} ms: {s['p95_ms'] / TARGETS['similar_p95_ms']:.3f}x, "
                         f"{_mark(s['p95_ms'] < TARGETS['similar_p95_ms'])}); recall@10 {s['recall_at_10']:.3f} "
                         f"({_mark(s['recall_at_10'] >= TARGETS['recall_at_10'])}); index/scan "
                         f"{s['p50_ms'] / s['scan_p50_ms']:.3f}x (scan p50 {s['scan_p50_ms']:.1f} ms); "
                         f"index build {r['index_add_us_per_sample']:.0f} us/sample")
        for sel in r["selection"]:
            gb = sel["peak_rss_mb"] / 1024
            lines.append(f"selection hybrid {sel['k']:>5} of {r['n']:>8}: {sel['seconds']:.1f} s "
                         f"({sel['seconds'] / TARGETS['selection_s']:.2f}x of {TARGETS['selection_s']:g} s), "
                         f"peak RSS {gb:.2f} GB ({gb / TARGETS['selection_gb']:.2f}x of {TARGETS['selection_gb']:g} GB)"
                         f"{' via the ANN index' if sel['indexed'] else ''}")
    return lines


def sizing(report: dict) -> list[dict]:
    relay = (report.get("relay") or {}).get("relay_per_s")
    hub = {e: v.get("hub_per_s") for e, v in (report.get("hub") or {}).items() if isinstance(v, dict)}
    agent = (report.get("agent") or {}).get("pipeline_fps")
    big = [r for r in report.get("search") or [] if r.get("index_bytes_per_sample")]
    index_b = big[-1]["index_bytes_per_sample"] if big else None
    add_us = big[-1]["index_add_us_per_sample"] if big else None
    return [scale_sizing.plan(n, relay, hub or {"sqlite": None, "postgresql": None}, agent, index_b, add_us)
            for n in scale_sizing.FLEETS]


@click.command("scale")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/bench"), show_default=True,
              help="Output folder: scale.json.")
@click.option("--parts", default=",".join(PARTS), show_default=True, help="Which parts to run, comma-separated.")
@click.option("--sizes", default="10000,100000,1000000", show_default=True,
              help="Hub sizes (samples) for search and selection, comma-separated.")
@click.option("--ks", default="100,1000", show_default=True, help="Selection sizes k, comma-separated.")
@click.option("--messages", default=3000, show_default=True, type=click.IntRange(min=10),
              help="Candidates published to the relay and to the bare subscriber, each.")
@click.option("--hub-samples", default=4000, show_default=True, type=click.IntRange(min=10),
              help="Samples posted to the hub per engine and arm.")
@click.option("--agent-frames", default=300, show_default=True, type=click.IntRange(min=10),
              help="Frames per arm of the agent part.")
def scale(out, parts, sizes, ks, messages, hub_samples, agent_frames) -> None:
    """Fleet-scale throughput as ratios against limits measured in the same run, and a sizing model.

    Prints one line per figure and writes OUT/scale.json. Search and selection at 10^6 samples take
    several minutes and ~2 GB: use --sizes for a quick run.

    \b
    Example:
      edgeloop bench scale --out runs/bench
      edgeloop bench scale --parts search --sizes 10000,100000 --out runs/quick
      edgeloop bench scale --parts relay,hub --messages 1000 --hub-samples 1000 --out runs/quick
    """
    chosen = [p.strip() for p in parts.split(",") if p.strip()]
    unknown = set(chosen) - set(PARTS)
    if unknown:
        raise click.BadParameter(f"unknown part(s) {', '.join(sorted(unknown))} (known: {', '.join(PARTS)})",
                                 param_hint="--parts")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    report: dict = {"machine": {"cpus": os.cpu_count(), "loadavg_1min_start": os.getloadavg()[0]},
                    "targets": TARGETS}
    lines: list[str] = []
    echo = click.echo
    if "search" in chosen:
        report["search"] = run_search([int(s) for s in sizes.split(",")], [int(k) for k in ks.split(",")], echo)
        lines += search_lines(report["search"])
    if "relay" in chosen:
        from .scale_ingest import relay_ingest, relay_line

        echo("  relay: publishing ...")
        report["relay"] = relay_ingest(messages, out / "scale-work")
        lines.append(relay_line(report["relay"], TARGETS["relay_x_raw"]))
    if "hub" in chosen:
        from .scale_hub import hub_ingest, hub_lines

        echo("  hub: posting ...")
        report["hub"] = hub_ingest(hub_samples, out / "scale-work")
        lines += hub_lines(report["hub"], TARGETS)
    if "agent" in chosen:
        from .agent import frame_time, run_agent_bench

        echo("  agent: two arms ...")
        a = run_agent_bench(out / "scale-agent", frames=agent_frames)
        report["agent"] = {k: a[k] for k in ("bare_fps", "pipeline_fps", "ratio", "rss_mb", "bare_rss_mb", "frame_ms")}
        rss_x = a["rss_mb"] / a["bare_rss_mb"]
        lines.append(f"agent: pipeline/bare {a['ratio']:.3f}x ({a['pipeline_fps']:.1f} / {a['bare_fps']:.1f} fps; "
                     f"target >= {TARGETS['agent_ratio']}: {_mark(a['ratio'] >= TARGETS['agent_ratio'])}), "
                     f"peak RSS {rss_x:.2f}x bare ({a['rss_mb']:.0f} / {a['bare_rss_mb']:.0f} MB; "
                     f"target <= {TARGETS['agent_rss_x']}: {_mark(rss_x <= TARGETS['agent_rss_x'])}); "
                     f"{frame_time(a)}")
    report["sizing"] = {"assumptions": scale_sizing.ASSUMPTIONS, "fleets": sizing(report)}
    lines += scale_sizing.lines(report["sizing"]["fleets"])
    report["machine"]["loadavg_1min_end"] = os.getloadavg()[0]
    report["seconds"] = round(time.monotonic() - t0, 1)
    report["lines"] = lines
    (out / "scale.json").write_text(json.dumps(report, indent=1))
    for line in lines:
        echo(line)
    echo(f"wrote {out / 'scale.json'} in {report['seconds']}s")
