"""Detection end to end, the way a real camera reaches an agent: a video file written by `edgeloop sim
video`, and a live MJPEG stream served by `edgeloop sim serve` (opened by cv2.VideoCapture like an IP
camera). Real mosquitto, a relay and a hub whose seed model is the built-in detector; the candidates'
boxes must reach the hub's database."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from edgeloop.onebox import AGENT_SIGNALS, OneBox, OneBoxSettings, sampling_toml
from edgeloop.procs import Service

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    out = tmp_path_factory.mktemp("detect-box")
    s = OneBoxSettings(out=out, task="detect", agents=0, relays=1, broker="mosquitto", seed_set=160,
                       golden_per_condition=10, epochs=8, relay_per_hour_per_agent=None)
    box = OneBox(s)
    box.start_services()
    # A generous budget: this test is about boxes travelling, not about selection.
    (out / "agent.toml").write_text(sampling_toml(20_000, AGENT_SIGNALS, 0))
    yield box
    box.stop()


def agent(box: OneBox, name: str, source: str, *extra: str) -> Service:
    svc = Service.edgeloop(name, [
        "agent", "run", "--device", name, "--site", box.sites[0], "--broker", box.broker_url, "--source", source,
        "--camera", "cam-003", "--data", str(box.s.out / name), "--pubkey", str(box.public_key_path),
        "--config", str(box.s.out / "agent.toml"), "--state-interval", "0.5", *extra], box.logs)
    return box._add(svc.start())


def hub_rows(box: OneBox, device: str) -> list[tuple[str, np.ndarray]]:
    with sqlite3.connect(box.s.out / "hub" / "hub.sqlite") as db:
        rows = db.execute("SELECT sample_id, detections FROM samples WHERE device_id = ?", [device]).fetchall()
    return [(sid, np.frombuffer(det or b"", "<f4").reshape(-1, 6)) for sid, det in rows]


def carry_boxes(rows) -> bool:
    return bool(rows) and sum(len(d) for _, d in rows) > 0


def test_an_agent_consumes_a_sim_video_file_and_its_boxes_reach_the_hub(box, tmp_path):
    video = tmp_path / "cam.avi"
    subprocess.run([sys.executable, "-m", "edgeloop", "sim", "video", "--camera", "cam-003", "--seconds", "30",
                    "--fps", "5", "--out", str(video)], check=True, capture_output=True)
    svc = agent(box, "dev-video", str(video))
    assert svc.proc.wait(timeout=240) == 0  # a file is processed to its end, what was kept is sent, then it exits
    box.services.remove(svc)  # exited as it should: not a failure for box.wait
    box.wait("the relay to forward the video's candidates", lambda: carry_boxes(hub_rows(box, "dev-video")), 60)
    rows = hub_rows(box, "dev-video")
    boxes = np.concatenate([d for _, d in rows])
    assert np.all((boxes[:, :4] >= 0) & (boxes[:, :4] <= 1)) and np.all(boxes[:, 2:4] > boxes[:, :2])
    assert set(np.unique(boxes[:, 5]).astype(int)) <= set(range(len(box.world().classes)))


def test_an_agent_consumes_a_live_mjpeg_stream_and_its_boxes_reach_the_hub(box, tmp_path):
    server = box._add(Service.edgeloop("sim-serve", ["sim", "serve", "--cameras", "4", "--port", "0", "--fps", "5"],
                                       box.logs, ready=True).start())
    url = server.wait_ready(timeout=60)["url"].rstrip("/")
    agent(box, "dev-stream", f"{url}/cam-003", "--max-fps", "5")
    box.wait("the stream's candidates with boxes at the hub", lambda: carry_boxes(hub_rows(box, "dev-stream")), 240)
