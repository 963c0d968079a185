"""The simulated world: determinism, ground truth, the held-out split, conditions, datasets."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.sim import CONDITIONS, WEATHER, Dataset, Frame, World
from edgeloop.sim import world as world_mod

SEED = 7
S = 64

cameras = st.integers(0, 999).map(lambda i: f"cam-{i:03d}")
indices = st.integers(0, 1_000_000)
few = settings(max_examples=40, deadline=None)


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=SEED)


@pytest.fixture(scope="module")
def twin() -> World:
    """A second, independent instance with the same seed."""
    return World(seed=SEED)


@pytest.fixture(scope="module")
def golden(world) -> Dataset:
    return world.golden_set(per_condition=60)


@pytest.fixture(scope="module")
def official_targets() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().target


# ---- frames --------------------------------------------------------------------------------

def test_frame_shape_dtype_and_fields(world):
    f = world.frame("cam-003", 17)
    assert isinstance(f, Frame)
    assert f.image.shape == (S, S, 3) and f.image.dtype == np.uint8
    assert f.camera_id == "cam-003" and f.index == 17
    assert isinstance(f.label, int) and 0 <= f.label <= 9
    assert f.captured_at == world_mod.SIM_EPOCH + 17 / world.camera("cam-003").fps
    assert f.tags["camera"] == "cam-003"
    assert f.tags["lighting"] in CONDITIONS and f.tags["weather"] in WEATHER
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in f.tags.items())


def test_frame_size_is_configurable():
    f = World(seed=1, frame_size=32).frame("cam-000", 0)
    assert f.image.shape == (32, 32, 3)


@few
@given(cam=cameras, index=indices)
def test_frame_is_deterministic_across_instances(world, twin, cam, index):
    a = world.frame(cam, index)
    world.frame(cam, index + 1)  # access order must not matter
    b = twin.frame(cam, index)
    c = world.frame(cam, index)
    for other in (b, c):
        assert np.array_equal(a.image, other.image)
        assert (a.label, a.captured_at, a.tags) == (other.label, other.captured_at, other.tags)


def test_other_seed_gives_another_world(world):
    other = World(seed=SEED + 1)
    assert not np.array_equal(world.frame("cam-000", 5).image, other.frame("cam-000", 5).image)
    assert not np.array_equal(world.holdout_indices, other.holdout_indices)


@few
@given(cam=cameras, index=indices)
def test_truth_matches_frame_label_and_digit_instance(world, official_targets, cam, index):
    f = world.frame(cam, index)
    assert world.truth(cam, index) == f.label
    # The label is the class of the digit instance drawn, per the official loader.
    assert official_targets[world.digit_index(cam, index)] == f.label


def test_frames_iterator(world):
    it = world.frames("cam-001", start=100)
    got = [next(it) for _ in range(5)]
    assert [f.index for f in got] == [100, 101, 102, 103, 104]
    assert np.array_equal(got[2].image, world.frame("cam-001", 102).image)
    times = [f.captured_at for f in got]
    assert np.allclose(np.diff(times), 1.0 / world.camera("cam-001").fps)


def test_negative_index_rejected(world):
    with pytest.raises(ValueError):
        world.frame("cam-000", -1)


def test_camera_ids(world):
    assert world.camera_ids(3) == ["cam-000", "cam-001", "cam-002"]


# ---- held-out split ------------------------------------------------------------------------

def test_split_is_a_stratified_partition(world, official_targets):
    held, train = world.holdout_indices, world.train_indices
    assert len(np.intersect1d(held, train)) == 0
    assert np.array_equal(np.union1d(held, train), np.arange(len(official_targets)))
    for c in range(10):
        n_c = int((official_targets == c).sum())
        assert int((official_targets[held] == c).sum()) == round(0.3 * n_c)


def test_split_is_deterministic(world, twin):
    assert np.array_equal(world.holdout_indices, twin.holdout_indices)


def test_held_out_digits_never_reach_cameras(world):
    held = set(world.holdout_indices.tolist())
    used = {world.digit_index(cam, i) for cam in world.camera_ids(20) for i in range(400)}
    assert not used & held
    assert len(used) > 500  # and the cameras do range over the training pool


def test_seed_set_uses_training_digits_only_and_no_night(world, official_targets):
    ds = world.seed_set(n=200)
    assert len(ds) == 200 and ds.images.shape == (200, S, S, 3) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64
    assert "night" not in ds.slices
    assert Counter(ds.slices) == {"day": 100, "dusk": 100}
    assert Counter(ds.labels.tolist()) == {c: 20 for c in range(10)}
    assert np.isin(ds.digits, world.train_indices).all()
    assert np.array_equal(official_targets[ds.digits], ds.labels)


def test_seed_set_conditions(world):
    assert set(world.seed_set(n=12, conditions=("night",)).slices) == {"night"}
    with pytest.raises(ValueError):
        world.seed_set(n=4, conditions=("midnight",))


def test_golden_set_is_held_out_and_balanced(world, golden, official_targets):
    assert len(golden) == 180 and golden.images.shape == (180, S, S, 3)
    assert Counter(golden.slices) == {c: 60 for c in CONDITIONS}
    for c in CONDITIONS:
        labels = golden.labels[np.array(golden.slices) == c]
        assert Counter(labels.tolist()) == {d: 6 for d in range(10)}
    assert np.isin(golden.digits, world.holdout_indices).all()
    assert np.array_equal(official_targets[golden.digits], golden.labels)


def test_golden_set_is_deterministic(golden, twin):
    again = twin.golden_set(per_condition=60)
    assert np.array_equal(golden.images, again.images)
    assert np.array_equal(golden.labels, again.labels) and golden.slices == again.slices


# ---- cameras, conditions -------------------------------------------------------------------

@few
@given(cam=cameras)
def test_class_mix_is_long_tailed(world, cam):
    mix = world.class_mix(cam)
    assert mix.shape == (10,)
    assert np.isclose(mix.sum(), 1.0) and (mix > 0).all()
    assert mix.max() / mix.min() >= 5


def test_class_mix_differs_between_cameras_and_drives_labels(world):
    mixes = np.stack([world.class_mix(c) for c in world.camera_ids(8)])
    assert len({int(m.argmax()) for m in mixes}) > 1  # not one global favourite digit
    cam = "cam-004"
    counts = np.bincount([world.truth(cam, i) for i in range(4000)], minlength=10)
    assert np.abs(counts / 4000 - world.class_mix(cam)).max() < 0.03


@few
@given(cam=cameras, start=st.integers(0, 200_000))
def test_any_sim_day_of_frames_mixes_all_conditions(world, cam, start):
    seen = {world.condition(cam, i) for i in range(start, start + 240)}
    assert seen == set(CONDITIONS)


def test_condition_shares_over_a_season(world):
    n = 240 * 16
    shares = Counter(world.condition("cam-002", i) for i in range(n))
    assert 0.40 < shares["day"] / n < 0.60
    assert 0.15 < shares["dusk"] / n < 0.25
    assert 0.22 < shares["night"] / n < 0.38


def test_cameras_are_out_of_phase(world):
    runs = {tuple(world.condition(c, i) for i in range(0, 240, 10)) for c in world.camera_ids(6)}
    assert len(runs) > 1


def test_tags_follow_the_schedule(world):
    for i in range(0, 480, 37):
        f = world.frame("cam-005", i)
        assert f.tags["lighting"] == world.condition("cam-005", i)
        assert f.tags["weather"] == world.weather("cam-005", i)


def test_weather_changes_slowly(world):
    block = world_mod.WEATHER_BLOCK
    for cam in world.camera_ids(3):
        for b in range(5):
            assert len({world.weather(cam, b * block + k) for k in range(0, block, 7)}) == 1
    seen = {world.weather(c, b * block) for c in world.camera_ids(10) for b in range(10)}
    assert seen == set(WEATHER)


def test_night_is_darker_than_day(golden):
    slices = np.array(golden.slices)
    mean = {c: golden.images[slices == c].mean() for c in CONDITIONS}
    assert mean["night"] < 0.5 * mean["day"]
    assert mean["night"] < mean["dusk"] < mean["day"]


def test_the_digit_changes_the_image(world):
    """The digit is actually drawn: the same render draws with another digit differ."""
    rng = lambda: np.random.default_rng(123)  # noqa: E731
    a = world._render(rng(), int(world.train_indices[0]), "day", "clear")
    b = world._render(rng(), int(world.train_indices[-1]), "day", "clear")
    assert np.abs(a.astype(int) - b.astype(int)).sum() > 0


# ---- datasets ------------------------------------------------------------------------------

def test_dataset_save_load_round_trip(golden, tmp_path):
    path = tmp_path / "golden.bin"  # no .npz suffix: saved at exactly this path
    golden.save(path)
    assert path.exists()
    back = Dataset.load(path)
    assert len(back) == len(golden)
    assert back.images.dtype == np.uint8 and np.array_equal(back.images, golden.images)
    assert back.labels.dtype == np.int64 and np.array_equal(back.labels, golden.labels)
    assert back.slices == golden.slices and all(type(s) is str for s in back.slices)
    assert np.array_equal(back.digits, golden.digits)


def test_dataset_without_digits_round_trips(tmp_path):
    ds = Dataset(np.zeros((2, 8, 8, 3), np.uint8), np.array([1, 2], np.int64), ["day", "night"])
    ds.save(tmp_path / "d.npz")
    back = Dataset.load(tmp_path / "d.npz")
    assert back.digits is None and back.slices == ["day", "night"] and len(back) == 2


# ---- data sources --------------------------------------------------------------------------

def test_fast_loaders_match_the_official_ones():
    """The world reads the bundled files directly (to skip slow imports): same data."""
    import cv2
    import skimage.data
    from sklearn.datasets import load_digits

    glyphs, targets = world_mod._digits()
    d = load_digits()
    assert np.array_equal(targets, d.target) and np.allclose(glyphs * 16, d.images)
    for name, photo in zip(world_mod.PHOTOS, world_mod._photos()):
        ref = np.asarray(getattr(skimage.data, name)())
        ref = cv2.cvtColor(ref, cv2.COLOR_GRAY2BGR) if ref.ndim == 2 else ref[..., 2::-1]
        assert np.array_equal(photo, ref), name
