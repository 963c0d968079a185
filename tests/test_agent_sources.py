"""Frame sources: the simulated camera and what cv2.VideoCapture opens."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgeloop.agent.sources import SourceError, open_source


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


def test_the_simulated_camera_resumes_where_it_stopped():
    a = open_source("sim:cam-002", sim_seed=3)
    first = [f for f, _ in zip(a, range(5))]
    b = open_source("sim:cam-002", sim_seed=3, start=3)
    again = next(iter(b))
    assert again.index == 3 and np.array_equal(again.image, first[3].image)
    assert first[3].tags["frame"] == "3" and "lighting" in first[3].tags
