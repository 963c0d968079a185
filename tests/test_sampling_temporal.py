"""Temporal de-duplication (shared/sampling/temporal.py) and its place in the agent's FrameSampler:
a frame showing what the camera recently kept is no candidate, unless the audit stream or a campaign
asks for it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.shared.config import Budget, ConfigError, SamplingConfig, SignalConfig, TemporalDedup, loads
from edgeloop.shared.sampling.temporal import RecentlyKept, same_reading, thumbnail

ON = TemporalDedup(horizon_s=300.0, max_change=6.0, min_iou=0.5)


def _det(*rows):
    return np.array(rows, np.float64).reshape(-1, 6)


boxes = st.lists(st.tuples(st.floats(0, 0.8), st.floats(0, 0.8), st.floats(0.05, 0.2), st.floats(0.05, 0.2),
                           st.floats(0.25, 1.0), st.integers(0, 3)), max_size=5)


def _as_det(rows):
    return _det(*[(x, y, x + w, y + h, s, c) for x, y, w, h, s, c in rows])


@given(boxes, st.randoms())
def test_a_reading_matches_itself_in_any_order(rows, rnd):
    a = _as_det(rows)
    b = a[rnd.sample(range(len(a)), len(a))] if len(a) else a
    assert same_reading(a, b, 0.5) and same_reading(b, a, 0.5)


@given(boxes, boxes)
def test_same_reading_is_symmetric(r1, r2):
    a, b = _as_det(r1), _as_det(r2)
    assert same_reading(a, b, 0.5) == same_reading(b, a, 0.5)


@given(boxes)
def test_an_extra_or_missing_box_is_another_reading(rows):
    a = _as_det(rows)
    b = np.concatenate([a, _det((0.9, 0.9, 0.95, 0.95, 0.5, 0))])
    assert not same_reading(a, b, 0.5)


@pytest.mark.parametrize("a, b, same", [
    (_det((0, 0, 0.2, 0.2, 0.9, 1)), _det((0.01, 0, 0.21, 0.2, 0.4, 1)), True),   # a parked car, another score
    (_det((0, 0, 0.2, 0.2, 0.9, 1)), _det((0.15, 0, 0.35, 0.2, 0.9, 1)), False),  # it moved
    (_det((0, 0, 0.2, 0.2, 0.9, 1)), _det((0, 0, 0.2, 0.2, 0.9, 2)), False),      # read as another class
    (_det(), _det(), True),                                                          # two empty scenes
    (np.array([0.1, 0.9]), np.array([0.3, 0.7]), True),                             # a classifier: top class
    (np.array([0.1, 0.9]), np.array([0.7, 0.3]), False),
    (np.array([0.1, 0.9]), _det(), False),
])
def test_readings(a, b, same):
    assert same_reading(a, b, 0.5) is same


def _img(seed=0, shade=100, car=None):
    rng = np.random.default_rng(seed)
    img = np.clip(shade + rng.normal(0, 4, (240, 320, 3)), 0, 255).astype(np.uint8)  # sensor noise
    if car is not None:
        img[150:190, car:car + 60] = 30
    return img


def test_sensor_noise_is_the_same_picture_and_an_object_is_not():
    recent = RecentlyKept(ON)
    recent.remember(0.0, thumbnail(_img(0)), _det())
    assert recent.is_duplicate(1.0, thumbnail(_img(1)), _det())             # only noise changed
    assert not recent.is_duplicate(1.0, thumbnail(_img(1, car=100)), _det())  # a car the model misses
    recent.remember(2.0, thumbnail(_img(2, car=100)), _det())
    assert recent.is_duplicate(3.0, thumbnail(_img(3, car=100)), _det())    # it is parked
    assert not recent.is_duplicate(3.0, thumbnail(_img(3, car=140)), _det())  # it moves on


def test_the_horizon_lets_a_scene_back_in():
    recent = RecentlyKept(ON)
    recent.remember(0.0, thumbnail(_img(0)), _det())
    assert recent.is_duplicate(300.0, thumbnail(_img(1)), _det())
    assert not recent.is_duplicate(300.5, thumbnail(_img(1)), _det())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1000), st.integers(0, 3)), min_size=1, max_size=40),
       st.integers(1, 8))
def test_memory_is_bounded_and_the_latest_is_always_remembered(events, memory):
    recent = RecentlyKept(TemporalDedup(horizon_s=1e9, memory=memory))
    thumbs = [np.full((24, 32), 60.0 * k, np.float32) for k in range(4)]
    for t, k in events:
        recent.remember(t, thumbs[k], _det())
        assert len(recent) <= memory
        assert recent.is_duplicate(t, thumbs[k], _det())
    recent.forget()
    assert len(recent) == 0 and not recent.is_duplicate(0.0, thumbs[0], _det())


def test_the_config_reads_and_checks_it():
    cfg = loads("[sampling]\ntemporal_dedup = { horizon_s = 120, max_change = 4 }\n").sampling.temporal_dedup
    assert cfg == TemporalDedup(horizon_s=120.0, max_change=4.0) and cfg.enabled
    assert not SamplingConfig().temporal_dedup.enabled  # off unless configured
    for bad in ("horizon_s = -1", "max_change = 300", "min_iou = 0", "memory = 0", "sideways = 1"):
        with pytest.raises(ConfigError, match="temporal_dedup"):
            loads(f"[sampling]\ntemporal_dedup = {{ {bad} }}\n")


# --- in the agent's FrameSampler ----------------------------------------------------------------

class _Pred:
    def __init__(self, detections):
        self.probs = np.full(4, 0.25, np.float32)
        self.embedding = None
        self.detections = detections


class _Rt:
    version = "v1"

    class manifest:  # noqa: N801 - stands for a ModelManifest's fields the sampler reads
        class_counts = ()


def _run(dedup: TemporalDedup, frames, audit_fraction=0.0):
    from edgeloop.agent.pipeline import FrameSampler
    from edgeloop.shared.frames import SourceFrame

    sampling = SamplingConfig(budget=Budget(per_hour=3600.0, window_s=60.0), signals=(SignalConfig("random", 1.0),),
                              temporal_dedup=dedup, audit_fraction=audit_fraction)
    sampler = FrameSampler(sampling, "dev-1", "site-0")
    kept = []
    for i, (img, det) in enumerate(frames):
        kept += sampler.consider(SourceFrame(img, 1000.0 + i, "cam-0", i, {}), _Pred(det), _Rt, f"s{i:04d}")
    return kept + sampler.flush(), sampler


def test_the_agent_keeps_one_frame_of_a_still_scene_and_every_change():
    # 30 s of an empty lot, then a car parks for 30 s: two scenes, at one frame a second
    frames = [(_img(i), _det()) for i in range(30)] + [(_img(i, car=100), _det((0.3, 0.6, 0.5, 0.8, 0.9, 1)))
                                                       for i in range(30, 60)]
    kept, sampler = _run(ON, frames)
    assert len(kept) == 2 and sampler.duplicates == 58
    plain, _ = _run(TemporalDedup(), frames)  # off: the budget (1 a second) keeps them all
    assert len(plain) == 60


def test_audit_frames_bypass_the_gate():
    frames = [(_img(i), _det()) for i in range(200)]
    kept, sampler = _run(ON, frames, audit_fraction=0.1)
    audited = [c for c in kept if "audit" in c.reasons]
    assert sampler.audited == len(audited) > 5
    assert len(kept) == len(audited) + 1  # the one candidate of the still scene, and every audit frame


# --- track-aware selection (shared/sampling/tracks.py) ------------------------------------------

from edgeloop.shared.config import TrackGate  # noqa: E402
from edgeloop.shared.sampling.tracks import IoUTracker, TrackEpisodes  # noqa: E402


def _car(x, cls=1, score=0.9):
    return (x, 0.5, x + 0.2, 0.7, score, cls)


def test_the_tracker_follows_a_moving_box_and_keeps_two_apart():
    tr = IoUTracker(min_iou=0.3, max_age_s=2.0)
    first = tr.update(0.0, _det(_car(0.0), _car(0.6)))
    assert len(set(first.tolist())) == 2
    for k in range(1, 10):  # both move 0.02 a frame: each keeps its id
        assert tr.update(0.2 * k, _det(_car(0.6 + 0.02 * k), _car(0.02 * k))).tolist() == first[::-1].tolist()
    assert tr.update(2.0, _det(_car(0.2, cls=2))).tolist() == [2]  # another class: a new track
    assert tr.update(5.0, _det(_car(0.2))).tolist() == [3]         # unseen for > max_age_s: ended


@settings(max_examples=60, deadline=None)
@given(st.lists(boxes, max_size=20))
def test_track_ids_in_a_frame_are_unique(frames):
    tr = IoUTracker(min_iou=0.3, max_age_s=1.0)
    for k, rows in enumerate(frames):
        ids = tr.update(0.5 * k, _as_det(rows))
        assert len(ids) == len(rows) == len(set(ids.tolist()))


def test_one_candidate_per_track_episode():
    ep = TrackEpisodes(TrackGate(max_age_s=1.0))
    ids = ep.update(0.0, _det(_car(0.0)))
    assert not ep.all_covered(ids)
    ep.cover(ids)
    assert ep.all_covered(ep.update(0.2, _det(_car(0.02))))
    ids = ep.update(0.4, _det(_car(0.04), _car(0.7, cls=3)))  # a second object enters: a candidate
    assert not ep.all_covered(ids)
    assert not ep.all_covered(ep.update(0.6, _det()))           # no box: tracks say nothing


def test_the_agent_offers_one_frame_per_car_crossing():
    frames = [(_img(i, car=10 + 4 * i), _det(_car(0.03 + 0.012 * i))) for i in range(40)]
    sampling_kwargs = {"tracks": TrackGate(max_age_s=2.0)}
    from edgeloop.agent.pipeline import FrameSampler
    from edgeloop.shared.frames import SourceFrame

    sampler = FrameSampler(SamplingConfig(budget=Budget(per_hour=3600.0), signals=(SignalConfig("random", 1.0),),
                                          **sampling_kwargs), "dev-1", "site-0")
    kept = []
    for i, (img, det) in enumerate(frames):
        kept += sampler.consider(SourceFrame(img, 1000.0 + i * 0.2, "cam-0", i, {}), _Pred(det), _Rt, f"s{i:04d}")
    kept += sampler.flush()
    assert len(kept) == 1 and sampler.track_covered == 39
    assert _run(TemporalDedup(), frames)[0].__len__() > 1  # without it, the budget keeps more of them


def test_the_config_reads_and_checks_the_track_gate():
    cfg = loads("[sampling]\ntracks = { max_age_s = 2.5 }\n").sampling.tracks
    assert cfg == TrackGate(max_age_s=2.5) and cfg.enabled and not SamplingConfig().tracks.enabled
    for bad in ("max_age_s = -1", "min_iou = 1.5"):
        with pytest.raises(ConfigError, match="tracks"):
            loads(f"[sampling]\ntracks = {{ {bad} }}\n")


def test_an_agent_config_carries_temporal_dedup_as_an_inline_table():
    from edgeloop.onebox import AGENT_DETECT_SIGNALS, AGENT_DETECT_TEMPORAL_DEDUP, sampling_toml

    text = sampling_toml(600, AGENT_DETECT_SIGNALS, 0, temporal_dedup=AGENT_DETECT_TEMPORAL_DEDUP)
    assert loads(text).sampling.temporal_dedup == TemporalDedup(**AGENT_DETECT_TEMPORAL_DEDUP)
