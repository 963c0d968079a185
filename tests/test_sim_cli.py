"""`edgeloop sim stats|video|serve`: real files, a real server process on a free port, cv2 as the client."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgeloop.sim import ScenesWorld
from edgeloop.sim.sim_cli import sim

ENTRY = "from edgeloop.sim.sim_cli import sim; sim()"


def run(*args):
    result = CliRunner().invoke(sim, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", ["stats", "video", "serve"])
def test_every_command_has_help_with_an_example(command):
    out = run(command, "--help")
    assert "Example" in out and "edgeloop sim " + command in out


def test_stats_json_keys_and_ranges():
    out = json.loads(run("stats", "--cameras", "2", "--minutes", "5", "--fps", "5", "--json"))
    assert {"empty_share", "same_as_previous_share", "dwell_median_s", "dwell_p90_s", "class_shares",
            "lighting_shares", "frames", "tracks"} <= set(out)
    assert out["frames"] == 2 * 5 * 60 * 5
    assert 0 <= out["empty_share"] <= 1 and 0 <= out["same_as_previous_share"] <= 1
    assert 0 <= out["dwell_median_s"] <= out["dwell_p90_s"] <= 5 * 60
    assert set(out["class_shares"]) == {"site-0", "site-1"}
    for shares in out["class_shares"].values():
        assert abs(sum(shares.values()) - 1) < 0.01 and set(shares) == set(ScenesWorld.classes)
    assert "empty frames" in run("stats", "--cameras", "1", "--minutes", "1")


def test_stats_refuses_the_digits_world():
    result = CliRunner().invoke(sim, ["stats", "--world", "digits"])
    assert result.exit_code != 0 and "scenes world only" in str(result.exception)


def test_video_file_and_sidecar_match_the_world(tmp_path):
    out = tmp_path / "cam.avi"
    run("video", "--camera", "cam-001", "--seconds", "6", "--fps", "5", "--start", "40", "--out", str(out),
        "--size", "160x120")
    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened()
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    assert len(frames) == 30 and frames[0].shape == (120, 160, 3)
    lines = [json.loads(x) for x in (tmp_path / "cam.avi.jsonl").read_text().splitlines()]
    assert len(lines) == 30
    w = ScenesWorld(seed=0, fps=5.0, size=(160, 120))
    for rec, img in zip(lines, frames):
        truth = w.frame("cam-001", rec["frame"])
        assert rec["frame"] in range(200, 230) and rec["captured_at"] == truth.captured_at
        assert np.allclose(rec["boxes"], truth.boxes.reshape(-1, 4), atol=0.01)
        assert rec["classes"] == [w.classes[c] for c in truth.classes] and rec["track_ids"] == truth.track_ids.tolist()
        assert rec["tags"] == truth.tags
        assert np.abs(img.astype(int) - truth.image).mean() < 8   # MJPG is lossy, but it is this frame


@pytest.fixture
def server(tmp_path):
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen([sys.executable, "-c", ENTRY, "serve", "--cameras", "2", "--port", "0", "--fps", "10",
                             "--ready-file", str(ready)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.05)
    info = json.loads(ready.read_text())
    yield info
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=20) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_streams_mjpeg_that_cv2_reads(server):
    assert server["cameras"] == ["cam-000", "cam-001"] and server["url"].startswith("http://127.0.0.1:")
    cap = cv2.VideoCapture(f"{server['url']}/cam-001", cv2.CAP_FFMPEG)
    try:
        assert cap.isOpened()
        images = []
        for _ in range(5):
            ok, img = cap.read()
            assert ok
            images.append(img)
    finally:
        cap.release()
    assert all(img.shape == (240, 320, 3) for img in images)


def test_serve_index_and_truth_pages(server):
    with urllib.request.urlopen(server["url"] + "/", timeout=10) as r:
        page = r.read().decode()
    assert "/cam-000" in page and "/cam-001" in page
    with urllib.request.urlopen(server["url"] + "/cam-000/truth", timeout=10) as r:
        rec = json.loads(r.read())
    assert rec["tags"]["camera"] == "cam-000" and len(rec["boxes"]) == len(rec["classes"])
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server["url"] + "/cam-999", timeout=10)
    assert err.value.code == 404
