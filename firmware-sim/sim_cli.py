"""`edgeloop sim stats|video|serve`: look at the scenes world as streams, files and live cameras.

Thin commands over scenes_media.py; the world is `ScenesWorld` (scenes.py).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path

import click

from edgeloop.shared.errors import ConfigError

log = logging.getLogger("edgeloop.sim.cli")


def _world(seed: int, fps: float, size: str = "320x240"):
    from .scenes import ScenesWorld
    from .source import parse_size

    try:
        return ScenesWorld(seed=seed, fps=fps, size=parse_size(size, "--size"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def sim() -> None:
    """The simulated scenes world (detection): stream statistics, video files, live MJPEG cameras."""


@sim.command()
@click.option("--world", "world_name", type=click.Choice(["scenes", "digits"]), default="scenes", show_default=True,
              help="Only scenes has streams worth describing (digits frames are independent stills).")
@click.option("--cameras", default=4, show_default=True, help="Cameras cam-000 ... to look at.")
@click.option("--minutes", default=10.0, show_default=True, help="World minutes of each camera, from frame 0.")
@click.option("--fps", default=5.0, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
def stats(world_name, cameras, minutes, fps, seed, as_json) -> None:
    """What the streams are like, from ground truth only (nothing is drawn): share of frames with no
    object, share equal to the previous frame (same tracks, no box moved > 2 px), dwell of objects
    (per track: last seen - first seen), and the class shares per site.

    \b
    Example:
      edgeloop sim stats --world scenes --cameras 4 --minutes 10 --fps 5 --json
    """
    if world_name != "scenes":
        raise ConfigError("sim stats describes the scenes world only: digits frames are independent stills "
                          "with one label each (see edgeloop.sim.World)")
    from .scenes_media import stream_stats

    w = _world(seed, fps)
    out = stream_stats(w, w.camera_ids(cameras), minutes * 60.0)
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(f"{out['cameras']} cameras x {out['seconds']:g} s at {out['fps']:g} fps: {out['frames']} frames, "
               f"{out['tracks']} tracks")
    click.echo(f"  empty frames          {out['empty_share']:.1%}")
    click.echo(f"  same as previous      {out['same_as_previous_share']:.1%}")
    click.echo(f"  dwell median / p90    {out['dwell_median_s']:.1f} s / {out['dwell_p90_s']:.1f} s "
               f"(max {out['dwell_max_s']:.0f} s)")
    click.echo("  lighting              " + ", ".join(f"{k} {v:.0%}" for k, v in out["lighting_shares"].items()))
    for site, shares in out["class_shares"].items():
        top = sorted(shares.items(), key=lambda kv: -kv[1])
        click.echo(f"  {site:<21} " + ", ".join(f"{k} {v:.1%}" for k, v in top if v > 0))


@sim.command()
@click.option("--camera", default="cam-000", show_default=True)
@click.option("--seconds", default=120.0, show_default=True, help="World seconds to write.")
@click.option("--fps", default=5.0, show_default=True)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The .avi to write (MJPG); the truth goes to OUT.jsonl beside it, e.g. cam.avi.jsonl.")
@click.option("--seed", default=0, show_default=True)
@click.option("--size", default="320x240", show_default=True, help="WIDTHxHEIGHT, up to 1280x720.")
@click.option("--start", default=0.0, show_default=True, help="World second of the first frame.")
def video(camera, seconds, fps, out, seed, size, start) -> None:
    """Write a camera's frames as a video file (MJPG in .avi) and its ground truth as JSON Lines beside
    it (OUT + ".jsonl"): one line per frame {frame, captured_at, boxes [[x1, y1, x2, y2], ...],
    classes [names], track_ids, visible, tags}.

    \b
    Example (two minutes of cam-003 from world second 300: cam.avi and cam.avi.jsonl):
      edgeloop sim video --camera cam-003 --seconds 120 --fps 5 --start 300 --out cam.avi
    """
    from .scenes_media import write_video

    w = _world(seed, fps, size)
    count = int(round(seconds * fps))
    try:
        side = write_video(w, camera, out, int(round(start * fps)), count)
    except OSError as exc:
        raise ConfigError(str(exc)) from exc
    click.echo(f"wrote {count} frames to {out} and their truth to {side}")


@sim.command()
@click.option("--cameras", default=4, show_default=True, help="Cameras cam-000 ... to serve.")
@click.option("--port", default=8090, show_default=True, help="0: pick a free port (see --ready-file).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--fps", default=5.0, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--size", default="320x240", show_default=True, help="WIDTHxHEIGHT, up to 1280x720.")
@click.option("--ready-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help='Written once serving: {"url": ..., "cameras": [...]}.')
def serve(cameras, port, host, fps, seed, size, ready_file) -> None:
    """Serve each camera live as MJPEG over HTTP, paced at --fps in real time (the frame index follows
    wall time since start): GET /cam-000 is the stream, /cam-000/truth the current frame's truth as
    JSON, /cam-000/frame.jpg one frame, / lists the cameras. SIGTERM stops it.

    \b
    Example (then: ffplay http://127.0.0.1:8090/cam-001, or an agent with --source on that URL):
      edgeloop sim serve --cameras 4 --port 8090 --fps 5
    """
    from .scenes_media import MjpegServer

    w = _world(seed, fps, size)
    try:
        server = MjpegServer(w, w.camera_ids(cameras), host, port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from exc
    stopping = threading.Event()

    def stop(*_):
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, name="sim-serve-stop").start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    click.echo(f"serving {cameras} cameras at {server.url}/cam-000 ...", err=True)
    if ready_file:
        ready_file.write_text(json.dumps({"url": server.url, "cameras": server.cameras}))
    server.serve_forever()
    log.info("sim serve: stopped")
