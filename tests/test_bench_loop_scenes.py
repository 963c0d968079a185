"""`edgeloop bench loop --world scenes --task detect` on a tiny configuration: the report's shape, equal
label budgets, the bytes accounting, the fps sweep, the plot, and the pure helpers behind the figures.

Figures are not asserted (a tiny run is noise); timing never is.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgeloop.bench.loop_scenes import SCENES_ARMS, SCENES_EXTRA_ARMS, ScenesLoopConfig, run_scenes_bench
from edgeloop.bench.loop_scenes_truth import gets_wrong, near_duplicate, to_target
from edgeloop.sim import ScenesWorld

TINY = ScenesLoopConfig(seeds=1, rounds=2, labels=8, cameras=2, sites=2, minutes=0.5, fps=(2.0,), epochs=1,
                        seed_epochs=4, seed_set=32, golden_per_condition=4, agent_per_hour=480,
                        relay_per_hour_per_agent=240, threshold_per_hour=480,
                        arms=SCENES_ARMS + ("oracle", "edgeloop_plain"))  # edgeloop_tracks: the command's test


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-scenes")
    return out, run_scenes_bench(TINY, out)


def test_the_json_has_every_arm_and_figure(tiny):
    out, report = tiny
    saved = json.loads((out / "loop.json").read_text())
    assert set(saved["arms"]) == set(TINY.arms) and set(SCENES_EXTRA_ARMS) > {"oracle", "edgeloop_plain"}
    assert 0 <= saved["target"] <= 1 and saved["settings"]["world"] == "scenes"
    for arm, a in saved["arms"].items():
        for key in ("labels", "boxes", "near_duplicate_share"):
            assert len(a[key]) == TINY.rounds, (arm, key)
        for key in ("map50_mean", "map50_std", "labels_used", "boxes_used"):
            assert len(a[key]) == TINY.rounds + 1, (arm, key)
        assert all(0 <= v <= 1 for v in a["map50_mean"] + a["near_duplicate_share"])
        assert all(v >= 0 for v in a["map50_std"])
        assert "labels_to_target" in a and "boxes_to_target" in a
        if a["labels_to_target"] is not None:
            assert 0 <= a["labels_to_target"] <= TINY.rounds * TINY.labels
    assert set(saved["by_fps"]) == {"2"} and set(saved["sweep"]) == set(saved["arms"])
    assert len(saved["lines"]) == len(TINY.fps) * len(saved["arms"])


def test_every_arm_has_the_same_label_budget_and_never_exceeds_it(tiny):
    _, report = tiny
    for rep in report["by_fps"].values():
        for arm, a in rep["arms"].items():
            assert a["labels_used"][0] == TINY.seed_set
            for i, rd in enumerate(a["rounds"]):
                assert rd["budgets"]["labels"] == TINY.labels
                assert rd["labels"] <= min(TINY.labels, rd["relay_kept"])
                assert rd["relay_kept"] <= rd["agent_kept"] <= rd["frames"]
                assert a["labels_used"][i + 1] == a["labels_used"][i] + rd["labels"]
                assert a["boxes_used"][i + 1] == a["boxes_used"][i] + rd["boxes"]
                if rd["budgets"]["agent"] is not None:
                    assert rd["agent_kept"] <= rd["budgets"]["agent"]
        # arms whose hub sees every frame spend the whole budget
        for arm in ("central", "oracle", "random"):
            assert all(rd["labels"] == TINY.labels for rd in rep["arms"][arm]["rounds"]), arm


def test_bytes_are_accounted_per_tier(tiny):
    _, report = tiny
    for rep in report["by_fps"].values():
        arms = rep["arms"]
        for arm, a in arms.items():
            b = a["bytes_uplinked"]
            assert b["total"] == b["agent_to_relay"] + b["relay_to_hub"]
            assert b["relay_to_hub"] <= b["agent_to_relay"]
            if arm in ("every_nth", "threshold", "central", "oracle"):  # no relay stage: both links carry it
                assert b["relay_to_hub"] == b["agent_to_relay"]
        assert arms["central"]["bytes_uplinked"]["total"] > arms["edgeloop"]["bytes_uplinked"]["total"] > 0
        assert arms["central"]["bytes_uplinked"] == arms["oracle"]["bytes_uplinked"]
        frames = TINY.cameras * TINY.minutes * 60 * rep["fps"]
        assert all(rd["frames"] == frames == rd["agent_kept"] for rd in arms["central"]["rounds"])


def test_every_nth_uplinks_about_as_many_frames_as_edgeloops_agents(tiny):
    _, report = tiny
    for rep in report["by_fps"].values():
        for e, n in zip(rep["arms"]["edgeloop"]["rounds"], rep["arms"]["every_nth"]["rounds"]):
            assert n["agent_kept"] == pytest.approx(e["agent_kept"], rel=0.5, abs=TINY.cameras)


def test_the_plot_is_a_png(tiny):
    out, _ = tiny
    img = cv2.imread(str(out / "loop.png"))
    assert img is not None and img.ndim == 3 and min(img.shape[:2]) > 100


class _F:
    def __init__(self, cam="cam-000", tracks=(), boxes=(), lighting="day", weather="clear"):
        self.camera_id, self.track_ids = cam, np.asarray(tracks, np.int64)
        self.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        self.tags = {"lighting": lighting, "weather": weather}


@pytest.mark.parametrize("a, b, dup", [
    (_F(), _F(), True),                                                        # the same empty view
    (_F(), _F(cam="cam-001"), False),
    (_F(), _F(lighting="night"), False),
    (_F(tracks=[1], boxes=[[0, 0, 10, 10]]), _F(tracks=[1], boxes=[[1, 0, 11, 10]]), True),   # parked car
    (_F(tracks=[1], boxes=[[0, 0, 10, 10]]), _F(tracks=[1], boxes=[[8, 0, 18, 10]]), False),  # it moved
    (_F(tracks=[1], boxes=[[0, 0, 10, 10]]), _F(tracks=[2], boxes=[[0, 0, 10, 10]]), False),  # another car
    (_F(tracks=[1], boxes=[[0, 0, 10, 10]]), _F(), False),
])
def test_near_duplicates_by_ground_truth(a, b, dup):
    assert near_duplicate(a, b) is dup and near_duplicate(b, a) is dup


def test_near_duplicates_in_a_real_stream():
    world = ScenesWorld(seed=0, fps=5)
    f = world.truth("cam-000", 100)
    assert near_duplicate(f, world.truth("cam-000", 100))


@pytest.mark.parametrize("det, wrong", [
    ([], False),
    ([[0, 0, 10, 10, 0.9, 0]], True),                                          # a false box
    ([[0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.8, 1]], False),
    ([[0, 0, 10, 10, 0.9, 1], [20, 20, 30, 30, 0.8, 0]], True),                # classes swapped
    ([[0, 0, 10, 10, 0.9, 0], [0, 0, 10, 10, 0.8, 0]], True),                  # one box twice, one missed
])
def test_gets_wrong(det, wrong):
    truth = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    classes = np.array([0, 1])
    if not det:
        assert gets_wrong(truth[:0], classes[:0], np.zeros((0, 6))) is wrong
    else:
        assert gets_wrong(truth, classes, np.array(det, np.float32)) is wrong


def test_to_target_interpolates():
    assert to_target([0, 10, 20], [0.1, 0.3, 0.5], 0.4) == pytest.approx(15)
    assert to_target([0, 10], [0.5, 0.6], 0.4) == 0
    assert to_target([0, 10], [0.1, 0.2], 0.4) is None


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="fps"):
        ScenesLoopConfig(fps=(60.0,))
    with pytest.raises(ValueError, match="unknown arms"):
        ScenesLoopConfig(arms=("random", "psychic"))


def test_the_command_sweeps_the_frame_rate_on_the_scenes_world(tmp_path):
    result = CliRunner().invoke(
        __import__("edgeloop.cli", fromlist=["main"]).main,
        ["bench", "loop", "--world", "scenes", "--task", "detect", "--fps", "1,2", "--minutes", "0.25", "--seeds", "1",
         "--rounds", "1", "--labels", "4", "--cameras", "2", "--epochs", "1", "--seed-epochs", "1", "--seed-set", "16",
         "--golden", "2", "--arms", "random,edgeloop_tracks", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if "labels_to_target" in ln]
    assert sorted(ln.split(":")[0] for ln in lines) == ["fps 1 edgeloop_tracks", "fps 1 random",
                                                         "fps 2 edgeloop_tracks", "fps 2 random"]
    saved = json.loads((tmp_path / "loop.json").read_text())
    assert set(saved["by_fps"]) == {"1", "2"} and saved["fps"] == 1.0
    # the same minutes of world time: twice the frames at twice the rate
    frames = {f: r["arms"]["random"]["rounds"][0]["frames"] for f, r in saved["by_fps"].items()}
    assert frames["2"] == 2 * frames["1"] == 2 * 2 * 15
    assert set(saved["sweep"]["edgeloop_tracks"]) == {"1", "2"}
    assert (tmp_path / "loop.png").exists()


def test_the_pseudo_label_arm_counts_its_pseudo_labels_apart_from_human_labels(tmp_path):
    cfg = ScenesLoopConfig(seeds=1, rounds=1, labels=6, cameras=2, minutes=0.5, fps=(2.0,), epochs=1, seed_epochs=1,
                           seed_set=16, golden_per_condition=2, agent_per_hour=3000.0,
                           relay_per_hour_per_agent=3000.0, arms=("edgeloop", "edgeloop_pseudo"))
    out = run_scenes_bench(cfg, tmp_path)
    for arm in ("edgeloop", "edgeloop_pseudo"):
        (rnd,) = out["by_fps"]["2"]["arms"][arm]["rounds"]
        assert rnd["labels"] == 6 and 0 <= rnd["pseudo_right"] <= rnd["pseudo_labels"]
    plain = out["by_fps"]["2"]["arms"]["edgeloop"]["rounds"][0]
    pseudo = out["by_fps"]["2"]["arms"]["edgeloop_pseudo"]["rounds"][0]
    assert plain["pseudo_labels"] == 0 and pseudo["pseudo_labels"] <= pseudo["relay_kept"] - pseudo["labels"]
    # the loop's labels are the human ones, whatever the pseudo-labels added
    assert out["by_fps"]["2"]["arms"]["edgeloop_pseudo"]["labels_used"] == [16, 22]


def test_the_scenes_world_refuses_the_classify_task():
    result = CliRunner().invoke(__import__("edgeloop.cli", fromlist=["main"]).main,
                                ["bench", "loop", "--world", "scenes", "--task", "classify"])
    assert result.exit_code != 0 and "detect" in result.output


def test_a_round_renders_each_frame_once_and_each_model_predicts_it_once():
    import torch

    from edgeloop.bench.loop_scenes import _Seen
    from edgeloop.hub.training.detect import build_detector, export_detector_onnx
    from edgeloop.shared.runtime import ModelRuntime

    world = ScenesWorld(seed=0, fps=2.0, size=(160, 120), sites=1)
    cam = world.camera_ids(1)[0]
    runtimes = []
    for s in (1, 2):  # two models with different weights
        torch.manual_seed(s)
        runtimes.append(ModelRuntime.load(*export_detector_onnx(build_detector(len(world.classes)).eval(), version=f"v{s}",
                                                                parent=None, names=world.classes), threads=1))
    seen = _Seen(world)
    frames = [seen.frame(cam, i) for i in range(3)]
    assert all(seen.frame(cam, i) is f for i, f in enumerate(frames))
    assert all(np.array_equal(f.image, world.frame(cam, i).image) for i, f in enumerate(frames))
    first = seen.predict(runtimes[0], frames)
    assert all(a is b for a, b in zip(seen.predict(runtimes[0], frames[::-1]), first[::-1]))  # not predicted again
    for rt in runtimes:  # each model's own predictions, as it makes them
        direct = rt.predict_batch([f.image for f in frames])
        for got, want in zip(seen.predict(rt, frames), direct):
            assert np.array_equal(got.embedding, want.embedding) and np.array_equal(got.detections, want.detections)
    assert not np.array_equal(seen.predict(runtimes[1], frames)[0].embedding, first[0].embedding)
