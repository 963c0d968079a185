"""The agent's frame pipeline on real ONNX models: what reaches the outbox, and why."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edgeloop.agent.pipeline import FramePipeline, FrameSampler, run_pipeline
from edgeloop.agent.sources import SourceFrame
from edgeloop.shared import config
from edgeloop.shared.descriptor import DESCRIPTOR_DIM
from edgeloop.shared.outbox import SqliteOutbox
from edgeloop.shared.runtime import ModelRuntime

from test_model_outputs import YOLO_OUTPUTS, Classifier, Yolo, export, manifest

pytest.importorskip("torch")  # the models are built with torch (the hub extra)


def sampling(toml: str) -> config.SamplingConfig:
    return config.loads(toml).sampling


def frames(images, t0: float = 1_000_000.0, dt: float = 1.0):
    return [SourceFrame(img, t0 + i * dt, "cam0", i, {"weather": "rain" if i % 2 else "clear"})
            for i, img in enumerate(images)]


def photo(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def queued(box: SqliteOutbox):
    items = box.lease(1000, 1 << 30)
    return {c.sample_id: c for c in items}


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline-models")
    return {
        "plain": ModelRuntime.load(export(Classifier(False), root / "c.onnx", (1, 3, 32, 32), ["logits"]), manifest()),
        "big": ModelRuntime.load(export(Classifier(False), root / "c48.onnx", (1, 3, 48, 48), ["logits"]),
                                 manifest(height=48, width=48)),
        "yolo": ModelRuntime.load(export(Yolo(), root / "y.onnx", (1, 3, 64, 64), ["output0"]),
                                  manifest("detection", YOLO_OUTPUTS, height=64, width=64)),
    }


def test_a_detector_sends_its_detections_and_a_descriptor_embedding(runtimes, tmp_path):
    box = SqliteOutbox(tmp_path / "o.db", 1 << 30)
    cfg = sampling('[sampling]\nmin_value = 0.5\n[[sampling.signals]]\nkind = "detection_count"\nmin_count = 3\n')
    stats = run_pipeline(frames([photo(i) for i in range(6)]), runtimes["yolo"], cfg, box)
    assert stats.frames == 6 and stats.kept == 6 and stats.corrupt == 0
    for c in queued(box).values():
        assert c.detections.shape == (4, 6)  # the fixed detector: four boxes survive NMS on a 48x64 frame
        assert c.embedding.shape == (DESCRIPTOR_DIM,)  # the model has no embedding: the descriptor stands in
        assert c.reasons == ("detection_count",) and c.model_version == "m-1"


def test_novelty_remembers_what_was_kept(runtimes, tmp_path):
    box = SqliteOutbox(tmp_path / "o.db", 1 << 30)
    cfg = sampling('[sampling]\nmin_value = 0.5\nbudget = { window_s = 1 }\n'
                   '[[sampling.signals]]\nkind = "novelty"\nmin_distance = 0.05\n')
    a, b = photo(1), photo(2)
    run_pipeline(frames([a, a, a, b, a]), runtimes["plain"], cfg, box)
    kept = sorted(queued(box).values(), key=lambda c: c.captured_at)
    # The first frame is new; its repeats are not once it was kept; b is; a again is not.
    assert [int(c.captured_at - 1_000_000) for c in kept] == [0, 3]
    assert all(c.reasons == ("novelty",) for c in kept)


def test_metadata_rule_and_every_nth(runtimes, tmp_path):
    box = SqliteOutbox(tmp_path / "o.db", 1 << 30)
    cfg = sampling('[sampling]\nmin_value = 0.5\n'
                   '[[sampling.signals]]\nkind = "metadata"\ntag = "weather"\nvalues = ["rain"]\n'
                   '[[sampling.signals]]\nkind = "every_nth"\nn = 4\n')
    run_pipeline(frames([photo(i) for i in range(8)]), runtimes["plain"], cfg, box)
    by_index = {int(c.captured_at - 1_000_000): c.reasons for c in queued(box).values()}
    assert by_index == {0: ("every_nth",), 1: ("metadata:weather=rain",), 3: ("metadata:weather=rain",),
                        4: ("every_nth",), 5: ("metadata:weather=rain",), 7: ("metadata:weather=rain",)}


def test_corrupt_frames_are_counted_and_skipped(runtimes, tmp_path):
    box = SqliteOutbox(tmp_path / "o.db", 1 << 30)
    bad = [np.zeros((48, 64), np.uint8), np.zeros((48, 64, 3), np.float32), np.zeros((0, 64, 3), np.uint8)]
    images = [photo(0), *bad, photo(1)]
    cfg = sampling("[sampling]\nmin_value = 0.0\n")
    stats = run_pipeline(frames(images), runtimes["plain"], cfg, box)
    assert stats.frames == 2 and stats.corrupt == 3 and len(box) == 2


def test_a_model_swap_between_prefetch_and_inference_reprepares_the_frame(runtimes, tmp_path):
    small, big = runtimes["plain"], runtimes["big"]
    current = {"rt": small}
    box = SqliteOutbox(tmp_path / "o.db", 1 << 30)
    pipe = FramePipeline(frames([photo(i) for i in range(4)]), FrameSampler(sampling("[sampling]\n"), "d", "s"), box,
                         get_runtime=lambda: current["rt"])
    pipe.start()
    try:
        assert pipe.step(small) is True
        current["rt"] = big  # frames already prefetched were prepared for the small model
        while (done := pipe.step(big)) is not None:
            assert done in (True, False)
        pipe.flush()
    finally:
        pipe.stop()
    assert pipe.frames == 4 and pipe.corrupt == 0
    got = queued(box)
    last = max(got.values(), key=lambda c: c.captured_at)
    np.testing.assert_allclose(last.probs, big.predict(photo(3)).probs, atol=1e-5)


def test_the_model_runs_in_a_thread_of_its_own_with_the_same_predictions(runtimes, tmp_path, monkeypatch):
    rt = runtimes["plain"]
    images = [photo(i) for i in range(6)]
    want = [rt.predict(img).probs for img in images]
    ran_in = []
    run = rt._run

    def recording(batch):
        ran_in.append(threading.current_thread().name)
        return run(batch)

    monkeypatch.setattr(rt, "_run", recording)
    box = SqliteOutbox(tmp_path / "o.db", 1 << 30)
    stats = run_pipeline(frames(images), rt, sampling("[sampling]\nmin_value = 0.0\n"), box)
    assert stats.frames == 6
    # The frame loop (this thread) decodes, scores and selects while the next frame is inferred.
    assert ran_in == ["inference"] * 6
    got = sorted(queued(box).values(), key=lambda c: c.captured_at)
    assert len(got) == 6
    for c, probs in zip(got, want):
        np.testing.assert_allclose(c.probs, probs, atol=1e-6)


def test_a_failed_run_in_the_inference_thread_is_run_again_where_it_is_reported(runtimes, tmp_path, monkeypatch):
    rt = runtimes["plain"]
    run, calls = rt._run, []

    def failing_once_per_frame(batch):
        calls.append(threading.current_thread().name)
        if threading.current_thread().name == "inference":
            raise RuntimeError("onnxruntime: out of memory")
        return run(batch)

    monkeypatch.setattr(rt, "_run", failing_once_per_frame)
    box = SqliteOutbox(tmp_path / "o.db", 1 << 30)
    stats = run_pipeline(frames([photo(i) for i in range(3)]), rt, sampling("[sampling]\nmin_value = 0.0\n"), box)
    assert stats.frames == 3 and len(box) == 3  # every frame inferred after all, none lost
    assert sorted(calls) == sorted(["inference", threading.current_thread().name] * 3)


def test_a_window_pool_is_bounded_by_the_budget(runtimes, tmp_path):
    box = SqliteOutbox(tmp_path / "o.db", 1 << 30)
    cfg = sampling("[sampling]\nbudget = { per_hour = 120, window_s = 60 }\n")  # 2 per minute of capture
    t0 = 60.0 * 16_667  # on a window boundary: 120 frames a second apart fill exactly two windows
    stats = run_pipeline(frames([photo(i % 7) for i in range(120)], t0=t0), runtimes["plain"], cfg, box)
    assert stats.frames == 120 and stats.kept == 4  # two windows of two


class EndlessCamera:
    """A live source: frames until closed (what `fleet drain` and `agent stop` close)."""

    def __init__(self):
        self.closed = threading.Event()

    def __iter__(self):
        i = 0
        while not self.closed.is_set():
            yield SourceFrame(photo(i % 5), 1_000_000.0 + i, "cam0", i, {})
            i += 1

    def close(self):
        self.closed.set()


def test_a_stopped_camera_ends_the_frame_loop_with_what_was_captured(runtimes, tmp_path):
    box = SqliteOutbox(tmp_path / "o.db", 1 << 30)
    pipe = FramePipeline(EndlessCamera(), FrameSampler(sampling("[sampling]\n"), "d", "s"), box,
                         get_runtime=lambda: runtimes["plain"])
    pipe.start()
    try:
        for _ in range(3):
            assert pipe.step(runtimes["plain"], timeout=10) is True
        pipe.stop()  # a fleet draining: the cameras end, each agent sends what it queued
        steps = []
        while len(steps) < 10 and (not steps or steps[-1] is not None):
            steps.append(pipe.step(runtimes["plain"], timeout=5))
    finally:
        pipe.stop()
    assert steps[-1] is None, steps  # the source's end reached the frame loop
    assert all(s is True for s in steps[:-1])  # after the frames in flight, each once
    assert not pipe.prefetch.is_alive() and not pipe.inference.is_alive()
