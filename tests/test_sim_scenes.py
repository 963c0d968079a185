"""The scenes world: determinism, ground truth, the long tail, streams, lighting, drift, data sets."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.sim import CLASSES, LIGHTINGS, DetectionDataset, SceneFrame, ScenesWorld
from edgeloop.sim import scenes as scenes_mod
from edgeloop.sim import scenes_data
from edgeloop.sim.scenes_media import stream_stats
from edgeloop.sim.world import SIM_EPOCH, WEATHER

SEED = 3
cameras = st.integers(0, 999).map(lambda i: f"cam-{i:03d}")
indices = st.integers(0, 200_000)
few = settings(max_examples=25, deadline=None)
NPZ_KEYS = {"images", "slices", "weather", "site", "camera", "box_image", "box_xyxy", "box_class", "names", "task"}


@pytest.fixture(scope="module")
def world() -> ScenesWorld:
    return ScenesWorld(seed=SEED)


@pytest.fixture(scope="module")
def twin() -> ScenesWorld:
    return ScenesWorld(seed=SEED)


@pytest.fixture(scope="module")
def tracks() -> dict:
    """(camera, track) -> (class, site) over 8 cameras x 40 world minutes, truth once a second."""
    w = ScenesWorld(seed=SEED, fps=1.0)
    out = {}
    for cam in w.camera_ids(8):
        for i in range(2400):
            f = w.truth(cam, i)
            for tid, c in zip(f.track_ids.tolist(), f.classes.tolist()):
                out[(cam, tid)] = (CLASSES[c], f.tags["site"])
    return out


@pytest.fixture(scope="module")
def streams(world) -> dict:
    return stream_stats(world, world.camera_ids(2), 600.0)


# ---- frames --------------------------------------------------------------------------------

def test_frame_fields(world):
    f = world.frame("cam-002", 1234)
    assert isinstance(f, SceneFrame)
    assert f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8
    assert f.captured_at == SIM_EPOCH + 1234 / 5.0
    assert f.boxes.dtype == np.float32 and f.boxes.shape == (len(f.classes), 4)
    assert f.classes.dtype == np.int64 and f.track_ids.dtype == np.int64 and f.visible.dtype == np.float32
    assert set(f.tags) == {"lighting", "weather", "camera", "site", "frame"}
    assert f.tags["frame"] == "1234" and f.tags["camera"] == "cam-002" and f.tags["site"] == world.site_of("cam-002")
    assert f.tags["lighting"] in LIGHTINGS and f.tags["weather"] in WEATHER
    assert len(world.classes) == 12 == len(set(world.classes))


@few
@given(cam=cameras, index=indices)
def test_frames_are_pure_functions_of_seed_camera_index(world, twin, cam, index):
    a = world.frame(cam, index)
    twin.frame(cam, index + 7)                      # out of order, other state in the caches
    b = twin.frame(cam, index)
    assert np.array_equal(a.image, b.image)
    for field in ("boxes", "classes", "track_ids", "visible"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert a.tags == b.tags and a.captured_at == b.captured_at


@few
@given(cam=cameras, index=indices)
def test_truth_equals_the_frames_boxes_and_lies_in_the_frame(world, cam, index):
    f, t = world.frame(cam, index), world.truth(cam, index)
    assert t.image is None
    for field in ("boxes", "classes", "track_ids", "visible"):
        assert np.array_equal(getattr(f, field), getattr(t, field))
    assert f.tags == t.tags
    b = t.boxes
    assert np.all(b[:, 0] >= 0) and np.all(b[:, 1] >= 0) and np.all(b[:, 2] <= 320) and np.all(b[:, 3] <= 240)
    assert np.all(b[:, 2] - b[:, 0] >= scenes_mod.MIN_BOX) and np.all(b[:, 3] - b[:, 1] >= scenes_mod.MIN_BOX)
    assert np.all(t.visible >= scenes_mod.MIN_VISIBLE) and np.all(t.visible <= 1)
    assert len(set(t.track_ids.tolist())) == len(t.track_ids)


@few
@given(cam=cameras, second=st.integers(0, 20_000))
def test_the_world_is_defined_in_world_time_not_frames(cam, second):
    slow, fast = ScenesWorld(seed=SEED, fps=2.0), ScenesWorld(seed=SEED, fps=10.0)
    a, b = slow.truth(cam, 2 * second), fast.truth(cam, 10 * second)
    assert np.array_equal(a.track_ids, b.track_ids) and np.array_equal(a.classes, b.classes)
    assert np.allclose(a.boxes, b.boxes, atol=1e-3) and a.tags["lighting"] == b.tags["lighting"]


def test_frame_size_is_a_setting():
    f = ScenesWorld(seed=SEED, size=(1280, 720)).frame("cam-001", 900)
    assert f.image.shape == (720, 1280, 3)
    assert np.all(f.boxes[:, 2] <= 1280) and np.all(f.boxes[:, 3] <= 720)


@pytest.mark.parametrize("kwargs", [{"fps": 0.5}, {"fps": 31}, {"size": (2000, 100)}, {"seed": -1},
                                    {"drift": {"cam-000": ("tilt", 5)}}, {"day_seconds": 10}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        ScenesWorld(**kwargs)


# ---- the long tail and the sites -------------------------------------------------------------

def test_class_shares_are_long_tailed(tracks):
    counts = Counter(c for c, _ in tracks.values())
    total = sum(counts.values())
    assert total > 1000
    shares = {c: counts[c] / total for c in CLASSES}
    assert max(shares.values()) >= 0.30 and max(shares, key=shares.get) == "car"
    rare = [c for c, s in shares.items() if 0 < s < 0.02]
    assert len(rare) >= 3, shares
    assert all(counts[c] > 0 for c in CLASSES)


def test_some_classes_are_seen_only_at_some_sites(tracks):
    sites_of = {c: {s for cc, s in tracks.values() if cc == c} for c in CLASSES}
    only = {c: s for c, s in sites_of.items() if len(s) == 1}
    assert len(only) >= 2, sites_of
    assert sites_of["cart"] == {"site-0"} and sites_of["forklift"] == {"site-1"}


def test_cameras_spread_over_sites(world):
    assert [world.site_of(c) for c in world.camera_ids(4)] == ["site-0", "site-1", "site-0", "site-1"]
    assert ScenesWorld(sites=3).site_of("cam-005") == "site-2"


# ---- streams ---------------------------------------------------------------------------------

def test_streams_have_empty_frames_repeats_and_parked_objects(streams):
    assert 0.0 < streams["empty_share"] < 0.6
    assert 0.0 < streams["same_as_previous_share"] < 1.0
    assert streams["dwell_max_s"] >= 120, "nothing parked for minutes"
    assert 0 < streams["dwell_median_s"] < streams["dwell_p90_s"]


def test_night_is_emptier_than_day(world):
    empty = Counter()
    frames = Counter()
    for cam in world.camera_ids(4):
        for i in range(0, 3000, 5):
            t = world.truth(cam, i)
            frames[t.tags["lighting"]] += 1
            empty[t.tags["lighting"]] += len(t.classes) == 0
    assert empty["night"] / frames["night"] > empty["day"] / frames["day"]


def test_every_lighting_occurs_within_a_day_in_the_planned_shares(world):
    for cam in world.camera_ids(3):
        seen = Counter(world.truth(cam, i).tags["lighting"] for i in range(0, int(600 * 5), 5))
        assert {k: round(v / sum(seen.values()), 2) for k, v in seen.items()} == {"day": 0.5, "dusk": 0.2,
                                                                                 "night": 0.3}


def test_night_is_darker_than_day(world):
    def mean_at(lighting):
        for i in range(0, 3000, 25):
            f = world.frame("cam-000", i)
            if f.tags["lighting"] == lighting:
                return f.image.mean()
    assert mean_at("night") < 0.6 * mean_at("day")


# ---- drift -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sodium", "knocked", "sensor"])
def test_drift_changes_only_the_drifted_camera_after_its_start(world, kind):
    start = 700.0
    drifted = ScenesWorld(seed=SEED, drift={"cam-001": (kind, start)})
    # cam-001's frames after the start, at night for sodium (it relights nights only)
    after = [i for i in range(int(start * 5), int(start * 5) + 3000, 50)
             if kind != "sodium" or world.truth("cam-001", i).tags["lighting"] == "night"][:3]
    assert after
    for i in after:
        assert not np.array_equal(world.frame("cam-001", i).image, drifted.frame("cam-001", i).image)
    if kind == "sodium":
        assert drifted.truth("cam-001", after[0]).tags["lighting"] == "sodium"
    for cam, i in [("cam-001", 0), ("cam-001", int(start * 5) - 1), ("cam-000", after[0]), ("cam-002", after[-1])]:
        a, b = world.frame(cam, i), drifted.frame(cam, i)
        assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes) and a.tags == b.tags


def test_a_knocked_camera_moves_its_boxes(world):
    drifted = ScenesWorld(seed=SEED, drift={"cam-002": ("knocked", 0.0)})
    moved = 0
    for i in range(0, 3000, 20):
        a, b = world.truth("cam-002", i), drifted.truth("cam-002", i)
        common = np.intersect1d(a.track_ids, b.track_ids)
        for tid in common:
            moved += not np.allclose(a.boxes[a.track_ids == tid], b.boxes[b.track_ids == tid], atol=1)
    assert moved > 0


# ---- data sets -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def golden(world) -> DetectionDataset:
    return world.golden_set(per_condition=40)


def test_golden_set_is_balanced_and_covers_sites_classes_and_empty_frames(golden):
    assert len(golden) == 120
    assert Counter(golden.slices) == {"day": 40, "dusk": 40, "night": 40}
    assert {t["site"] for t in golden.tags} == {"site-0", "site-1"}
    seen = set(np.concatenate(golden.classes).tolist())
    assert len(seen) >= 10
    assert any(len(c) == 0 for c in golden.classes)


@few
@given(cam=cameras, salt=st.integers(0, 2**32), lighting=st.sampled_from(LIGHTINGS))
def test_golden_frames_come_from_held_out_time_in_the_asked_lighting(world, cam, salt, lighting):
    index = scenes_data.time_in(world, cam, lighting, scenes_mod.GOLDEN_T0, scenes_mod._hash(salt))
    world_time = index / world.fps  # seconds of world time, not a measured duration
    assert world_time >= scenes_mod.GOLDEN_T0
    assert world.truth(cam, index).tags["lighting"] == lighting


def test_seed_set_has_no_night(world):
    s = world.seed_set(n=30)
    assert len(s) == 30 and set(s.slices) <= {"day", "dusk"} and "dusk" in s.slices
    assert len({t["camera"] for t in s.tags}) >= 8
    with pytest.raises(ValueError):
        world.seed_set(n=3, conditions=("noon",))


def test_dataset_save_load_round_trip_with_the_exact_keys(golden, tmp_path):
    path = tmp_path / "golden.data"
    golden.save(path)
    assert path.exists() and not (tmp_path / "golden.data.npz").exists()
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == NPZ_KEYS
        assert str(z["task"]) == "detect" and z["task"].ndim == 0
        assert z["box_image"].dtype == np.int64 and z["box_class"].dtype == np.int64
        assert z["box_xyxy"].dtype == np.float32 and z["box_xyxy"].shape == (len(z["box_class"]), 4)
        assert tuple(z["names"]) == CLASSES and z["images"].shape == golden.images.shape
    back = DetectionDataset.load(path)
    assert len(back) == len(golden) and np.array_equal(back.images, golden.images)
    assert back.names == golden.names and back.tags == golden.tags
    for a, b, c, d in zip(back.boxes, golden.boxes, back.classes, golden.classes):
        assert np.array_equal(a, b) and np.array_equal(c, d)


def test_the_hub_reads_the_dataset(golden, tmp_path):
    hub_golden = pytest.importorskip("edgeloop.hub.training.golden")
    golden.save(tmp_path / "g.npz")
    loaded = hub_golden.load_detection_set(tmp_path / "g.npz")
    assert len(loaded) == len(golden) and tuple(loaded.names) == CLASSES
    assert sum(len(c) for c in loaded.classes) == sum(len(c) for c in golden.classes)
