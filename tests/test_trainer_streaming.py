"""The built-in trainers read their set a batch at a time: a frame is asked for when its batch
comes, each once per epoch, never the whole set at once; a frame that is no frame is named; the
hub's trainer runner is local or a Ray cluster, and nothing else."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from edgeloop.hub.training.classifier import train
from edgeloop.hub.training.contract import TrainerError
from edgeloop.hub.training.detect import train_detector
from edgeloop.hub.training.frames import FrameFiles, checked_frame
from edgeloop.hub.training.ray_runner import ray_address
from edgeloop.shared.images import encode_jpeg
from test_detector import NAMES, make_scenes


class Frames:
    """A sequence that counts what is read of it, and refuses to be listed whole."""

    def __init__(self, images):
        self.images, self.reads = images, Counter()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, j):
        self.reads[j] += 1
        return self.images[j]

    def __iter__(self):
        raise AssertionError("the trainer iterated the whole set")


def test_the_detector_trainer_reads_each_frame_once_per_epoch_a_batch_at_a_time():
    data = make_scenes(16, seed=2)
    frames = Frames(data.images)
    batches = []
    result = train_detector(frames, data.boxes, data.classes, NAMES, epochs=2, batch_size=8, seed=1,
                            progress=lambda e, n, loss: batches.append(sum(frames.reads.values())))
    assert sum(frames.reads.values()) == 2 * 16 and set(frames.reads.values()) == {2}
    assert batches == [16, 32]  # each epoch reads the set once, no more
    same = train_detector(list(data.images), data.boxes, data.classes, NAMES, epochs=2, batch_size=8, seed=1)
    assert same.state == result.state  # a lazy set trains exactly as one in memory


def test_the_classifier_trainer_reads_each_frame_once_per_epoch():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(24) % 3
    frames = Frames(images)
    lazy = train(frames, labels, epochs=2, batch_size=8, seed=0, num_classes=3)
    assert set(frames.reads.values()) == {2} and len(frames.reads) == 24
    eager = train(images, labels, epochs=2, batch_size=8, seed=0, num_classes=3)
    assert lazy.state == eager.state


def test_frame_files_decode_on_demand_and_a_bad_frame_is_named(tmp_path):
    frame = np.full((24, 32, 3), 90, np.uint8)
    paths = []
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(encode_jpeg(frame))
        paths.append(tmp_path / f"{i}.jpg")
    files = FrameFiles(paths)
    assert len(files) == 3 and files[1].shape == (24, 32, 3) and len(files[:2]) == 2
    with pytest.raises(ValueError, match=r"images\[1\] must be \(H, W, 3\) uint8 BGR, got \(4, 4\) uint8"):
        checked_frame([frame, np.zeros((4, 4), np.uint8)], 1, "train")
    boxes = [np.zeros((0, 4), np.float32)] * 2
    with pytest.raises(ValueError, match=r"train_detector: images\[1\]"):
        train_detector([frame, np.zeros((24, 32), np.uint8)], boxes, [np.zeros(0, np.int64)] * 2, NAMES,
                       epochs=1, batch_size=2)


@pytest.mark.parametrize("runner, address", [("local", None), ("ray:http://127.0.0.1:8265", "http://127.0.0.1:8265"),
                                             ("ray:https://ray.example:443", "https://ray.example:443")])
def test_a_runner_is_local_or_a_ray_dashboard(runner, address):
    assert ray_address(runner) == address


@pytest.mark.parametrize("runner", ["", "ray", "ray:127.0.0.1:8265", "k8s:default", "LOCAL"])
def test_any_other_runner_is_refused_by_name(runner):
    with pytest.raises(TrainerError, match="expected local or ray:http://HEAD:8265"):
        ray_address(runner)


def test_hub_serve_refuses_an_unknown_runner_before_it_starts(tmp_path):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "edgeloop", "hub", "serve", "--data", str(tmp_path), "--runner", "k8s"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "--runner" in run.stderr and "expected local or ray:" in run.stderr
