"""Frame sources: the simulated camera and what cv2.VideoCapture opens."""

from __future__ import annotations

import itertools
import threading
import time

import cv2
import numpy as np
import pytest

from edgeloop.agent.sources import CaptureSource, SourceError, open_source
from edgeloop.shared.errors import ConfigError


def test_a_video_file_yields_its_frames_in_order(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 32))
    for i in range(12):
        writer.write(np.full((32, 48, 3), i * 20, np.uint8))
    writer.release()
    frames = list(open_source(str(path), camera_id="door"))
    assert len(frames) == 12
    assert [f.index for f in frames] == list(range(12))
    assert all(f.image.shape == (32, 48, 3) and f.camera_id == "door" for f in frames)
    means = [float(f.image.mean()) for f in frames]
    assert means == sorted(means)  # brightening clip comes back in order


@pytest.mark.parametrize("spec", ["/nonexistent/clip.mp4", "97", "rtsp://127.0.0.1:1/none"])
def test_a_source_that_never_opens_is_a_clear_error(spec):
    with pytest.raises(SourceError, match="did not open"):
        open_source(spec)


def test_an_unknown_plugin_names_the_installed_ones():
    with pytest.raises(SourceError, match=r"no source plug-in named 'nosuch' \(installed: .*scenes.*sim"):
        open_source("nosuch:cam-1")


def test_the_agent_reaches_simulated_cameras_only_through_the_plugin_registry():
    """The agent's code never names the simulator: `sim:` resolves through the entry-point group."""
    import subprocess
    import sys

    code = ("import sys; from edgeloop.agent.sources import open_source; import edgeloop.agent.daemon; "
            "assert 'edgeloop.sim' not in sys.modules, 'agent imported the simulator'; "
            "next(iter(open_source('sim:cam-000'))); print(sorted(m for m in sys.modules if m.startswith('edgeloop.sim')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "edgeloop.sim.source" in out  # loaded by the plug-in registry, on demand


def test_the_simulated_camera_resumes_where_it_stopped():
    a = open_source("sim:cam-002", sim_seed=3)
    first = [f for f, _ in zip(a, range(5))]
    b = open_source("sim:cam-002", sim_seed=3, start=3)
    again = next(iter(b))
    assert again.index == 3 and np.array_equal(again.image, first[3].image)
    assert first[3].tags["frame"] == "3" and "lighting" in first[3].tags


def write_clip(path, n=12, size=(48, 32)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), i * 20 % 256, np.uint8))
    writer.release()
    return path


def test_a_live_source_that_drops_is_reopened_and_frames_go_on(tmp_path):
    # A file opened as "live" drops at its end, like a camera whose stream ends: it must come back.
    src = CaptureSource(str(write_clip(tmp_path / "c.avi")), "door", reconnect=True, backoff=(0.01, 0.05))
    frames = [f for f, _ in zip(src, range(30))]
    assert src.reconnects >= 2
    assert [f.index for f in frames] == list(range(30))  # numbering goes on across reconnects


def test_a_live_source_that_stays_down_retries_until_closed(tmp_path):
    path = write_clip(tmp_path / "c.avi", n=3)
    src = CaptureSource(str(path), "door", reconnect=True, backoff=(0.01, 0.05))
    path.unlink()  # the camera goes away for good
    got = []
    worker = threading.Thread(target=lambda: got.extend(src))
    worker.start()
    time.sleep(0.5)
    assert worker.is_alive() and len(got) == 3 and src.reconnects == 0  # still retrying, not crashed
    src.close()
    worker.join(timeout=5)
    assert not worker.is_alive()


def ticking(step: float):
    """A clock that advances `step` seconds each time it is read: the cap's arithmetic, not the machine's speed."""
    ticks = itertools.count()
    return lambda: next(ticks) * step


def test_the_fps_cap_skips_live_frames_without_decoding_them(tmp_path):
    src = CaptureSource(str(write_clip(tmp_path / "c.avi", n=200)), "door", max_fps=20, reconnect=True,
                        backoff=(0.01, 0.05))
    src.clock = ticking(1 / 64)  # a grab every 15.6 ms (exact in binary), a frame due every 50 ms
    frames = list(itertools.islice(src, 6))
    assert [f.index for f in frames] == list(range(6))
    assert src.skipped == 5 * 3  # three grabs (47 ms) skipped between two frames taken (62.5 ms apart)


def test_the_fps_cap_paces_an_on_demand_source():
    src = open_source("sim:cam-000", max_fps=40)
    src.clock = ticking(1 / 256)
    waits = []
    src.closed.wait = lambda timeout: waits.append(timeout) or False  # record the pauses instead of taking them
    frames = list(itertools.islice(src, 5))
    assert [f.index for f in frames] == list(range(5)) and src.skipped == 0
    # the first frame at once, then each 25 ms after the last (one clock tick of which has already passed)
    assert waits == [0.0] + [pytest.approx(1 / 40 - 1 / 256)] * 4


def test_a_negative_fps_cap_is_a_config_error():
    with pytest.raises(ConfigError, match="max-fps"):
        open_source("sim:cam-000", max_fps=-1)


def wall_paced(spec: str, start: int, now: float, max_fps: float = 2.0):
    """A simulated camera opened at cursor `start`, its wall clock stopped at `now`, its pauses recorded."""
    src = open_source(spec, start=start, max_fps=max_fps)
    src.wall_clock = lambda: now
    src.waits = []
    src.closed.wait = lambda timeout: src.waits.append(timeout) or False
    return src


@pytest.mark.parametrize("spec", ["sim:cam-000?wall=1000&every=10", "scenes:cam-000?wall=1000&size=64x48"])
def test_a_wall_paced_camera_resumes_at_the_frame_due_now_not_at_its_cursor(spec):
    # Down from frame 10 to 60 s after frame 0 at 2 fps: frames 10..119 passed unseen; 120 is due now.
    src = wall_paced(spec, start=10, now=1060.0)
    f = next(iter(src))
    assert f.index == 120 and src.skipped == 110 and src.waits == [0.0]
    if "every" in spec:  # capture time follows the frame index, so the camera is back at its site's time
        assert f.captured_at == src.world.epoch + 120 * 10


def test_a_wall_paced_camera_waits_for_each_frame_on_the_wall_clock():
    src = wall_paced("sim:cam-000?wall=1000", start=0, now=1000.2)  # 0.2 s after frame 0, at 2 fps
    frames = list(itertools.islice(src, 3))
    assert [f.index for f in frames] == [0, 1, 2] and src.skipped == 0
    # frame 0 at once (it is late), then frame 1 at 1000.5 and frame 2 at 1001.0, the clock standing at 1000.2
    assert src.waits == [0.0, pytest.approx(0.3), pytest.approx(0.8)]


def test_a_camera_ahead_of_the_wall_clock_does_not_go_back():
    src = wall_paced("sim:cam-000?wall=1000", start=50, now=1001.0)  # its cursor is past the frame due now
    assert next(iter(src)).index == 50 and src.skipped == 0


def test_wall_pace_needs_an_fps_cap():
    with pytest.raises(ConfigError, match="wall=1000.*max-fps"):
        open_source("sim:cam-000?wall=1000")
