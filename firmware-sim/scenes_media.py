"""The scenes world as media: stream statistics, video files with a ground-truth sidecar, live MJPEG.

The library side of `edgeloop sim stats|video|serve` (sim_cli.py holds only the commands).

    stream_stats(world, cameras, seconds)    what the streams are like, from truth() alone
    write_video(world, camera, ...)          an MJPG .avi plus one JSON line of truth per frame
    MjpegServer(world, cameras, ...)         every camera live over HTTP, paced in real time
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, defaultdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

from .scenes import ScenesWorld, SceneFrame

log = logging.getLogger("edgeloop.sim.media")

SAME_PX = 2.0          # a frame "equals" the previous one if no box moved more than this
BOUNDARY = "edgeloopframe"
JPEG_QUALITY = 80


def stream_stats(world: ScenesWorld, cameras: list[str], seconds: float) -> dict:
    """Statistics of `seconds` of world time from each camera, from ground truth only.

    -> {"cameras", "seconds", "fps", "frames", "empty_share" (frames with no box), "same_as_previous_share"
    (same track ids as the previous frame of the camera and no box moved more than SAME_PX), "tracks",
    "dwell_median_s", "dwell_p90_s", "dwell_max_s" (per track: last seen - first seen), "lighting_shares"
    (of frames), "class_shares" {site: {class: share of that site's tracks}}}."""
    n = int(round(seconds * world.fps))
    frames = empty = same = 0
    lighting: Counter = Counter()
    seen: dict[tuple[str, int], list] = {}          # (camera, track) -> [first t, last t, class, site]
    for cam in cameras:
        prev = None
        for i in range(n):
            f = world.truth(cam, i)
            frames += 1
            lighting[f.tags["lighting"]] += 1
            empty += len(f.track_ids) == 0
            if prev is not None and _same(prev, f):
                same += 1
            t = i / world.fps
            for tid, c in zip(f.track_ids.tolist(), f.classes.tolist()):
                rec = seen.setdefault((cam, tid), [t, t, c, f.tags["site"]])
                rec[1] = t
            prev = f
    dwell = np.asarray([r[1] - r[0] for r in seen.values()]) if seen else np.zeros(1)
    by_site: dict[str, Counter] = defaultdict(Counter)
    for _, _, c, site in seen.values():
        by_site[site][world.classes[c]] += 1
    shares = {site: {name: round(cnt[name] / max(1, sum(cnt.values())), 4) for name in world.classes}
              for site, cnt in sorted(by_site.items())}
    return {"cameras": len(cameras), "seconds": seconds, "fps": world.fps, "frames": frames,
            "empty_share": round(empty / max(1, frames), 4),
            "same_as_previous_share": round(same / max(1, frames - len(cameras)), 4),
            "tracks": len(seen), "dwell_median_s": round(float(np.median(dwell)), 2),
            "dwell_p90_s": round(float(np.percentile(dwell, 90)), 2), "dwell_max_s": round(float(dwell.max()), 2),
            "lighting_shares": {k: round(v / max(1, frames), 4) for k, v in sorted(lighting.items())},
            "class_shares": shares}


def _same(a: SceneFrame, b: SceneFrame) -> bool:
    if len(a.track_ids) != len(b.track_ids) or set(a.track_ids.tolist()) != set(b.track_ids.tolist()):
        return False
    if not len(a.track_ids):
        return True
    ia, ib = np.argsort(a.track_ids), np.argsort(b.track_ids)
    return bool(np.abs(a.boxes[ia] - b.boxes[ib]).max() <= SAME_PX)


def truth_record(world: ScenesWorld, f: SceneFrame) -> dict:
    """One frame's ground truth as JSON-ready values (class names, not ids)."""
    return {"frame": f.index, "captured_at": f.captured_at,
            "boxes": [[round(float(v), 2) for v in b] for b in f.boxes],
            "classes": [world.classes[c] for c in f.classes.tolist()], "track_ids": f.track_ids.tolist(),
            "visible": [round(float(v), 3) for v in f.visible], "tags": f.tags}


def sidecar_path(video: Path) -> Path:
    """cam.avi -> cam.avi.jsonl"""
    return video.with_name(video.name + ".jsonl")


def write_video(world: ScenesWorld, camera: str, out: Path, start: int, count: int) -> Path:
    """Frames start .. start+count-1 of a camera as an MJPG .avi at the world's fps, and their truth,
    a JSON line per frame, in sidecar_path(out). -> the sidecar's path."""
    w, h = world.size
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), world.fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"cv2.VideoWriter could not open {out} (MJPG in an .avi container expected)")
    side = sidecar_path(out)
    try:
        with open(side, "w") as f:
            for i in range(start, start + count):
                frame = world.frame(camera, i)
                writer.write(frame.image)
                f.write(json.dumps(truth_record(world, frame)) + "\n")
    finally:
        writer.release()
    return side


class _Clock:
    """Frame index of every camera from wall time: start + floor((now - t0) * fps)."""

    def __init__(self, fps: float, start: int):
        self.fps, self.start, self.t0 = fps, start, time.monotonic()

    def index(self) -> int:
        return self.start + int((time.monotonic() - self.t0) * self.fps)

    def wait_for(self, index: int, stop: threading.Event) -> bool:
        """Sleep until frame `index` is due; False if stopped first."""
        delay = (index - self.start) / self.fps - (time.monotonic() - self.t0)
        return not stop.wait(max(0.0, delay))


class MjpegServer:
    """Every camera live: GET /CAMERA is multipart/x-mixed-replace JPEG at the world's fps, GET
    /CAMERA/truth the current frame's truth as JSON, GET / an index page. Threads per client (stdlib)."""

    def __init__(self, world: ScenesWorld, cameras: list[str], host: str = "127.0.0.1", port: int = 0,
                 start: int = 0):
        self.world, self.cameras = world, list(cameras)
        self.clock = _Clock(world.fps, start)
        self.stop_event = threading.Event()
        self._latest: dict[str, tuple[int, bytes]] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(_Handler):
            owner = server

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def jpeg(self, camera: str, index: int) -> bytes:
        """The JPEG of a frame; the latest one per camera is shared by every client watching it."""
        with self._lock:
            hit = self._latest.get(camera)
            if hit is not None and hit[0] == index:
                return hit[1]
        ok, buf = cv2.imencode(".jpg", self.world.frame(camera, index).image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        data = buf.tobytes()
        with self._lock:
            self._latest[camera] = (index, data)
        return data

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        """Stop accepting, end every stream, close the socket. Call from another thread than serve_forever."""
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    owner: MjpegServer
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):  # through logging, not stderr
        log.debug("%s %s", self.address_string(), fmt % args)

    def do_GET(self):
        s = self.owner
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("", "/index.html"):
            links = "".join(f'<li><a href="/{c}">{c}</a> (<a href="/{c}/truth">truth</a>)</li>' for c in s.cameras)
            return self._send(HTTPStatus.OK, "text/html; charset=utf-8",
                              f"<!doctype html><title>edgeloop sim</title><h1>Cameras</h1><ul>{links}</ul>".encode())
        cam, _, rest = path.lstrip("/").partition("/")
        if cam not in s.cameras or rest not in ("", "truth", "frame.jpg"):
            return self._send(HTTPStatus.NOT_FOUND, "text/plain", f"no such camera or page: {path}\n".encode())
        if rest == "truth":
            body = json.dumps(truth_record(s.world, s.world.truth(cam, s.clock.index()))).encode()
            return self._send(HTTPStatus.OK, "application/json", body)
        if rest == "frame.jpg":
            return self._send(HTTPStatus.OK, "image/jpeg", s.jpeg(cam, s.clock.index()))
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        index = s.clock.index()
        try:
            while s.clock.wait_for(index, s.stop_event):
                data = s.jpeg(cam, index)
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n"
                                 f"X-Frame-Index: {index}\r\n\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
                index = max(index + 1, s.clock.index())   # a slow client skips frames, never lags
        except (BrokenPipeError, ConnectionResetError):
            pass  # the viewer went away

    def _send(self, status, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
