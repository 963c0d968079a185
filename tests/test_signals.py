"""First-stage signals: each kind fires exactly at its threshold, every score stays in [0, 1] for any
observation (classifier or detector), the agent's streaming memory stays bounded, and the config
refuses what a kind cannot use."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeloop.shared import config
from edgeloop.shared.config import SamplingConfig, SignalConfig
from edgeloop.shared.errors import ConfigError
from edgeloop.shared.sampling import (FIRES_AT, Observation, SignalContext, SignalState, detection_uncertainty,
                                      score)
from edgeloop.shared.sampling.signals import signal


def obs(probs=(0.7, 0.2, 0.1), **kw) -> Observation:
    return Observation(kw.pop("sample_id", "s"), np.asarray(probs, np.float32), **kw)


def dets(*rows) -> np.ndarray:
    """(score, class) pairs -> an (N, 6) detections array with unit boxes."""
    return np.array([[0, 0, 1, 1, s, c] for s, c in rows], np.float64).reshape(-1, 6)


def one(cfg: SignalConfig, o: Observation, context=None, state=None, seed: int = 0) -> float:
    return signal(cfg, o, seed, context, state)[0]


# --- Observation --------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, field", [
    ({"probs": np.zeros((2, 3))}, "probs"),
    ({"probs": np.zeros(0)}, "probs"),
    ({"probs": np.float32(1.0)}, "probs"),
    ({"embedding": np.zeros((1, 4))}, "embedding"),
    ({"detections": np.zeros((3, 5))}, "detections"),
    ({"detections": np.zeros(6)}, "detections"),
])
def test_observation_checks_shapes(kw, field):
    with pytest.raises(ValueError, match=rf"observation\.{field}"):
        Observation("s", **{"probs": np.array([1.0]), **kw})


def test_observation_from_candidate():
    from factories import make_candidate

    c = make_candidate(embedding=np.array([0.6, 0.8], np.float16), tags={"zone": "dock"}, captured_at=12.5)
    o = Observation.from_candidate(c)
    assert o.sample_id == c.sample_id and o.captured_at == 12.5 and dict(o.tags) == {"zone": "dock"}
    assert o.embedding.dtype == np.float32 and o.detections is None and o.index is None
    np.testing.assert_array_equal(o.probs, c.probs)


# --- every_nth ----------------------------------------------------------------------------------

@pytest.mark.parametrize("n, index, fires", [
    (1, 0, True), (1, 7, True), (3, 0, True), (3, 1, False), (3, 2, False), (3, 3, True), (3, 300, True),
    (3, 301, False), (5, None, False),
])
def test_every_nth(n, index, fires):
    assert one(SignalConfig("every_nth", n=n), obs(index=index)) == (1.0 if fires else 0.0)


@given(st.integers(1, 1000), st.integers(0, 10**9))
def test_every_nth_fires_exactly_on_multiples(n, index):
    assert (one(SignalConfig("every_nth", n=n), obs(index=index)) >= FIRES_AT) == (index % n == 0)


# --- interval -----------------------------------------------------------------------------------

def test_interval_fires_at_the_first_frame_of_each_interval():
    cfg, state = SignalConfig("interval", interval_s=10.0), SignalState()
    times = [100.0, 105.0, 109.99, 110.0, 115.0, 119.99, 120.5, 130.4, 130.5, 131.0]
    fired = [t for t in times if one(cfg, obs(captured_at=t), state=state) == 1.0]
    assert fired == [100.0, 110.0, 120.5, 130.5]  # measured from each firing, not from a fixed grid
    assert state.last_fired_at == 130.5


def test_interval_needs_a_state_and_restarts_when_the_clock_steps_back():
    cfg = SignalConfig("interval", interval_s=10.0)
    assert one(cfg, obs(captured_at=0.0)) == 0.0 == one(cfg, obs(captured_at=1e9))
    state = SignalState()
    assert [one(cfg, obs(captured_at=t), state=state) for t in (50.0, 55.0, 40.0, 45.0, 50.0)] == [1, 0, 1, 0, 1]
    assert one(cfg, obs(captured_at=math.nan), state=state) == 0.0 and state.last_fired_at == 50.0


@given(st.floats(0.01, 100.0), st.lists(st.floats(0.0, 50.0), max_size=60))
def test_interval_matches_its_definition_on_a_monotone_clock(interval_s, steps):
    cfg, state = SignalConfig("interval", interval_s=interval_s), SignalState()
    t, last = 1000.0, None
    for dt in steps:
        t += dt
        expected = last is None or t - last >= interval_s
        assert (one(cfg, obs(captured_at=t), state=state) == 1.0) == expected
        last = t if expected else last


# --- rare_class ---------------------------------------------------------------------------------

@pytest.mark.parametrize("counts, predicted, max_share, fires", [
    ((95, 5), 1, 0.05, True),  # share == max_share: fires
    ((96, 4), 1, 0.05, True),
    ((94, 6), 1, 0.05, False),
    ((94, 6), 0, 0.05, False),
    ((100, 0), 1, 0.05, True),  # never seen in training
    ((1, 1, 2), 2, 0.5, True),
    ((1, 1, 2), 0, 0.2, False),
    ((7,), 0, 1.0, True),
])
def test_rare_class_threshold(counts, predicted, max_share, fires):
    probs = np.full(len(counts), 0.1 / max(1, len(counts) - 1))
    probs[predicted] = 0.9 if len(counts) > 1 else 1.0
    s, reason = signal(SignalConfig("rare_class", max_share=max_share), obs(probs), 0, SignalContext(counts))
    assert (s >= FIRES_AT) == fires and 0.0 <= s <= 1.0
    assert reason == f"rare_class:{predicted}"


def test_rare_class_scores_zero_without_usable_counts():
    cfg = SignalConfig("rare_class")
    assert one(cfg, obs([0.1, 0.9])) == 0.0
    assert one(cfg, obs([0.1, 0.9]), SignalContext()) == 0.0
    assert one(cfg, obs([0.1, 0.9]), SignalContext((0, 0))) == 0.0
    assert one(cfg, obs([0.1, 0.1, 0.8]), SignalContext((100, 1))) == 0.0  # counts of another model
    assert one(cfg, obs([0.5, 0.5], detections=dets()), SignalContext((100, 1))) == 0.0  # nothing detected


def test_rare_class_takes_the_rarest_detected_class():
    cfg, ctx = SignalConfig("rare_class", max_share=0.1), SignalContext((500, 20, 480))
    s, reason = signal(cfg, obs([0.4, 0.3, 0.3], detections=dets((0.9, 0), (0.8, 1), (0.7, 2))), 0, ctx)
    assert s >= FIRES_AT and reason == "rare_class:1"
    s, _ = signal(cfg, obs([0.4, 0.3, 0.3], detections=dets((0.9, 0), (0.7, 2), (0.7, 9), (0.7, -1))), 0, ctx)
    assert s < FIRES_AT  # unknown class ids are ignored


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=20), st.floats(0.001, 1.0), st.data())
def test_rare_class_fires_exactly_at_max_share_and_is_monotone(counts, max_share, data):
    total = sum(counts)
    ctx, cfg = SignalContext(tuple(counts)), SignalConfig("rare_class", max_share=max_share)
    scores = []
    for c in range(len(counts)):
        probs = np.zeros(len(counts))
        probs[c] = 1.0
        s = one(cfg, obs(probs), ctx)
        scores.append(s)
        assert 0.0 <= s <= 1.0
        if total:
            assert (s >= FIRES_AT) == (counts[c] / total <= max_share)
        else:
            assert s == 0.0
    if total:  # a rarer class never scores lower
        order = sorted(range(len(counts)), key=lambda c: counts[c])
        assert all(scores[a] >= scores[b] for a, b in zip(order, order[1:]))


# --- detection_count ----------------------------------------------------------------------------

@pytest.mark.parametrize("n, min_count, expected", [
    (0, 1, 0.0), (1, 1, 0.5), (2, 1, 1.0), (2, 3, 1 / 3), (3, 3, 0.5), (5, 3, 5 / 6), (6, 3, 1.0), (50, 3, 1.0),
])
def test_detection_count(n, min_count, expected):
    o = obs(detections=dets(*[(0.9, 0)] * n))
    assert one(SignalConfig("detection_count", min_count=min_count), o) == pytest.approx(expected)


def test_detection_count_is_zero_for_a_classifier():
    assert one(SignalConfig("detection_count", min_count=1), obs()) == 0.0


@given(st.integers(0, 300), st.integers(1, 100))
def test_detection_count_fires_exactly_at_min_count(n, min_count):
    s = one(SignalConfig("detection_count", min_count=min_count), obs(detections=np.zeros((n, 6))))
    assert 0.0 <= s <= 1.0 and (s >= FIRES_AT) == (n >= min_count)


# --- novelty ------------------------------------------------------------------------------------

E1, E2 = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)


def test_novelty_against_the_memory():
    cfg = SignalConfig("novelty", min_distance=1.0)
    state = SignalState()
    assert one(cfg, obs(embedding=E1)) == 0.0  # no state: stateless tiers
    assert one(cfg, obs(), state=state) == 0.0  # no embedding
    assert one(cfg, obs(embedding=E1), state=state) == 1.0  # nothing remembered: everything is new
    assert len(state) == 0, "scoring does not remember; the agent remembers what it keeps"
    state.remember(E1)
    assert one(cfg, obs(embedding=E1), state=state) == 0.0
    assert one(cfg, obs(embedding=E2), state=state) == 0.5  # distance 1.0 == min_distance: fires
    assert one(cfg, obs(embedding=np.array([1e-3, 1.0], np.float32)), state=state) < FIRES_AT
    assert one(cfg, obs(embedding=-E1), state=state) == 1.0  # the farthest possible
    state.remember(E2)
    assert one(cfg, obs(embedding=-E1), state=state) == 0.5  # now 1.0 from E2


def test_novelty_reads_only_the_last_memory_embeddings_of_the_config():
    state = SignalState(memory=8)
    state.remember(E1)
    state.remember(E2)
    assert one(SignalConfig("novelty", min_distance=1.0, memory=1), obs(embedding=E1), state=state) == 0.5
    assert one(SignalConfig("novelty", min_distance=1.0, memory=2), obs(embedding=E1), state=state) == 0.0


def test_memory_forget_dimension_change_and_unusable_embeddings():
    state = SignalState(memory=3)
    for e in (None, np.zeros(2), np.array([np.nan, 1.0])):
        state.remember(e)
    assert len(state) == 0
    state.remember(E1)
    state.remember(np.ones(5))  # another model's embedding size: the ring restarts
    assert len(state) == 1 and state.remembered().shape == (1, 5)
    assert state.nearest_distance(E1) is None
    assert one(SignalConfig("novelty"), obs(embedding=E1), state=state) == 1.0
    state.last_fired_at = 5.0
    state.forget()
    assert len(state) == 0 and state.last_fired_at == 5.0


embeddings = hnp.arrays(np.float32, 4, elements=st.floats(-10, 10, width=32))


@settings(max_examples=200)
@given(st.integers(1, 12), st.lists(embeddings, max_size=40))
def test_novelty_memory_is_a_bounded_ring_of_the_last_kept(memory, kept):
    state = SignalState(memory=memory)
    model = []  # a plain list: every usable embedding, normalised
    for e in kept:
        state.remember(e)
        norm = float(np.linalg.norm(e.astype(np.float64)))
        if norm > 0 and math.isfinite(norm):
            model.append(e.astype(np.float64) / norm)
        assert len(state) == min(len(model), memory) <= memory
    expected = np.array(model[-memory:], np.float32).reshape(-1, 4)
    np.testing.assert_allclose(state.remembered().reshape(-1, 4), expected, atol=1e-6)
    if model:
        probe = expected[-1]
        assert state.nearest_distance(probe) == pytest.approx(0.0, abs=1e-5)


@given(st.lists(embeddings, min_size=1, max_size=10), embeddings, st.floats(0.01, 2.0))
def test_novelty_fires_exactly_at_min_distance(kept, probe, min_distance):
    state = SignalState()
    for e in kept:
        state.remember(e)
    s = one(SignalConfig("novelty", min_distance=min_distance), obs(embedding=probe), state=state)
    d = state.nearest_distance(probe)
    assert 0.0 <= s <= 1.0
    if not np.any(probe):
        assert s == 0.0
    elif d is None:
        assert s == 1.0
    else:
        assert 0.0 <= d <= 2.0 and (s >= FIRES_AT) == (d >= min_distance)


def test_state_for_signals_takes_the_novelty_memory():
    assert SignalState.for_signals([SignalConfig("novelty", memory=17), SignalConfig("margin")]).memory == 17
    assert SignalState.for_signals([SignalConfig("margin")]).memory == 256
    with pytest.raises(ValueError):
        SignalState(memory=0)


# --- metadata -----------------------------------------------------------------------------------

def test_metadata():
    cfg = SignalConfig("metadata", tag="zone", values=("dock", "gate"))
    assert signal(cfg, obs(tags={"zone": "dock"})) == (1.0, "metadata:zone=dock")
    assert signal(cfg, obs(tags={"zone": "gate", "site": "a"})) == (1.0, "metadata:zone=gate")
    assert signal(cfg, obs(tags={"zone": "yard"})) == (0.0, "metadata:zone")
    assert signal(cfg, obs(tags={"site": "dock"})) == (0.0, "metadata:zone")


def test_several_metadata_signals_one_per_tag():
    cfg = config.loads(signal_toml(kind="metadata", tag="zone", values=["dock"])
                       + signal_toml(kind="metadata", tag="weather", values=["snow", "fog"], weight=2.0))
    value, scores, reasons = score(obs(tags={"zone": "dock", "weather": "fog"}), cfg.sampling.signals)
    assert scores == {"metadata:zone": 1.0, "metadata:weather": 1.0} and value == 3.0
    assert reasons == ("metadata:zone=dock", "metadata:weather=fog")


# --- uncertainty on detectors -------------------------------------------------------------------

@pytest.mark.parametrize("kind, det_scores, expected", [
    ("least_confidence", [0.9, 0.5], 1.0),
    ("least_confidence", [0.9], 0.2),
    ("least_confidence", [0.2, 0.95], 0.4),
    ("margin", [0.9], 0.2),
    ("margin", [0.5], 1.0),
    ("entropy", [0.5, 0.99], 1.0),
    ("entropy", [1.0], 0.0),
    ("confidence_band", [0.9, 0.4], 1.0),
    ("confidence_band", [0.9, 0.66, 0.3], 0.0),
    ("confidence_band", [0.35], 1.0),  # inclusive, as for classifiers
    ("least_confidence", [], 0.0),
    ("entropy", [], 0.0),
    ("confidence_band", [], 0.0),
])
def test_uncertainty_on_a_detector_reads_the_detection_scores(kind, det_scores, expected):
    uniform = [1 / 3] * 3  # would score high for a classifier: a detector ignores it
    o = obs(uniform, detections=dets(*[(s, 0) for s in det_scores]))
    assert one(SignalConfig(kind), o) == pytest.approx(expected, abs=1e-6)
    assert detection_uncertainty(np.array(det_scores), kind) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("kind, det_scores, expected", [
    ("least_confidence", [0.9, 0.5], 0.6),  # mean of 0.2 and 1.0
    ("margin", [0.9, 0.1, 0.5], (0.2 + 0.2 + 1.0) / 3),
    ("entropy", [1.0, 0.5], 0.5),
    ("least_confidence", [], 0.0),
])
def test_mean_aggregate_averages_the_boxes(kind, det_scores, expected):
    o = obs([1 / 3] * 3, detections=dets(*[(s, 0) for s in det_scores]))
    assert one(SignalConfig(kind, aggregate="mean"), o) == pytest.approx(expected, abs=1e-6)


@given(st.lists(st.floats(0, 1), max_size=20), st.sampled_from(["least_confidence", "margin", "entropy"]))
def test_the_mean_box_is_never_more_uncertain_than_the_worst(det_scores, kind):
    worst = detection_uncertainty(np.array(det_scores), kind)
    mean = detection_uncertainty(np.array(det_scores), kind, aggregate="mean")
    assert 0.0 <= mean <= worst + 1e-12


@pytest.mark.parametrize("det_scores, min_count, expected", [
    ([0.9, 0.5, 0.4, 0.1], 1, 1.0),  # two boxes in [0.35, 0.65]: twice min_count
    ([0.9, 0.5], 1, 0.5),
    ([0.9, 0.5], 2, 0.25),
    ([0.9, 0.1], 1, 0.0),
    ([], 1, 0.0),
])
def test_close_to_threshold_counts_the_boxes_near_the_threshold(det_scores, min_count, expected):
    o = obs(detections=dets(*[(s, 0) for s in det_scores]))
    assert one(SignalConfig("close_to_threshold", min_count=min_count), o) == pytest.approx(expected)


@given(st.lists(st.floats(0, 1), max_size=30), st.integers(1, 10), st.floats(0, 1), st.floats(0, 1))
def test_close_to_threshold_fires_exactly_from_min_count_boxes_in_the_band(det_scores, min_count, a, b):
    low, high = min(a, b), max(a, b)
    cfg = SignalConfig("close_to_threshold", low=low, high=high, min_count=min_count)
    n = sum(low <= s <= high for s in det_scores)
    s = one(cfg, obs(detections=dets(*[(x, 0) for x in det_scores])))
    assert (s >= FIRES_AT) == (n >= min_count)


def test_close_to_threshold_is_zero_for_a_classifier_and_aggregate_belongs_to_uncertainty():
    assert one(SignalConfig("close_to_threshold"), obs([0.5, 0.5])) == 0.0
    with pytest.raises(ConfigError, match="aggregate does not apply"):
        SignalConfig("novelty", aggregate="mean")
    with pytest.raises(ConfigError, match="aggregate must be one of max, mean"):
        SignalConfig("entropy", aggregate="median")


# --- every signal, any input --------------------------------------------------------------------

REQUIRED = {"every_nth": {"n": 3}, "interval": {"interval_s": 10.0}, "detection_count": {"min_count": 2},
            "metadata": {"tag": "zone", "values": ("dock",)}}


@st.composite
def signal_configs(draw, kind=None) -> SignalConfig:
    """A valid config of `kind` (any kind if None) with arbitrary valid parameters."""
    kind = kind or draw(st.sampled_from(config.SIGNAL_KINDS))
    params = {}
    match kind:
        case "confidence_band":
            a, b = draw(st.floats(0, 1)), draw(st.floats(0, 1))
            params = {"low": min(a, b), "high": max(a, b)}
        case "close_to_threshold":
            a, b = draw(st.floats(0, 1)), draw(st.floats(0, 1))
            params = {"low": min(a, b), "high": max(a, b), "min_count": draw(st.none() | st.integers(1, 50))}
        case "least_confidence" | "margin" | "entropy":
            params = {"aggregate": draw(st.sampled_from(config.AGGREGATES))}
        case "every_nth":
            params = {"n": draw(st.integers(1, 10**6))}
        case "interval":
            params = {"interval_s": draw(st.floats(1e-3, 1e6))}
        case "rare_class":
            params = {"max_share": draw(st.floats(1e-6, 1.0))}
        case "detection_count":
            params = {"min_count": draw(st.integers(1, 1000))}
        case "novelty":
            params = {"min_distance": draw(st.floats(1e-6, 2.0)), "memory": draw(st.integers(1, 4096))}
        case "metadata":
            text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
            params = {"tag": draw(text.filter(bool)), "values": tuple(draw(st.lists(text, min_size=1, max_size=4)))}
    return SignalConfig(kind, weight=draw(st.floats(0, 5)), **params)


anything = st.floats(allow_nan=True, allow_infinity=True, width=32)


@st.composite
def observations(draw) -> Observation:
    c = draw(st.integers(1, 12))
    probs = draw(hnp.arrays(np.float32, c, elements=st.floats(0, 1, width=32))
                 | hnp.arrays(np.float32, c, elements=anything))
    embedding = draw(st.none() | hnp.arrays(np.float32, 4, elements=st.floats(-2, 2, width=32))
                     | hnp.arrays(np.float32, 4, elements=anything))
    detections = draw(st.none() | hnp.arrays(np.float32, st.tuples(st.integers(0, 8), st.just(6)),
                                             elements=st.floats(-2, 12, width=32) | anything))
    return Observation(draw(st.text(max_size=10)), probs, embedding=embedding, detections=detections,
                       tags=draw(st.dictionaries(st.sampled_from(["zone", "site"]), st.sampled_from(["dock", "x"]))),
                       captured_at=draw(st.floats(-1e9, 1e12) | anything),
                       index=draw(st.none() | st.integers(-10, 10**9)))


@st.composite
def states(draw) -> SignalState | None:
    if draw(st.booleans()):
        return None
    state = SignalState(memory=draw(st.integers(1, 8)))
    for e in draw(st.lists(hnp.arrays(np.float32, draw(st.sampled_from([4, 3])), elements=anything), max_size=5)):
        state.remember(e)
    state.last_fired_at = draw(st.none() | st.floats(-1e9, 1e12))
    return state


contexts = st.none() | st.lists(st.integers(0, 1000), max_size=12).map(lambda c: SignalContext(tuple(c)))


@settings(max_examples=400, deadline=None)
@given(observations(), st.lists(signal_configs(), min_size=1, max_size=6, unique_by=lambda s: s.name),
       st.integers(0, 2**32), contexts, states())
def test_every_signal_is_in_the_unit_interval_and_score_is_their_weighted_sum(o, signals, seed, context, state):
    twin = copy.deepcopy(state)  # to check determinism without the first call's interval clock change
    value, scores, reasons = score(o, signals, seed, context, state)
    assert set(scores) == {s.name for s in signals}
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in scores.values()), scores
    assert value == pytest.approx(sum(s.weight * scores[s.name] for s in signals))
    assert reasons, "every candidate has a reason"
    fired = [s for s in signals if s.kind != "random" and scores[s.name] >= FIRES_AT]
    assert len(reasons) == (len(fired) or 1)
    assert all(r.split(":")[0] == s.kind for r, s in zip(reasons, fired))
    assert score(o, signals, seed, context, twin) == (value, scores, reasons)


# --- config -------------------------------------------------------------------------------------

def refused(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        config.loads(text)
    return str(info.value)


def signal_toml(**fields) -> str:
    return "[[sampling.signals]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items())


@pytest.mark.parametrize("fields, detail", [
    ({"kind": "margin", "n": 3}, "signals[margin]: n does not apply (it belongs to every_nth)"),
    ({"kind": "novelty", "low": 0.1}, "signals[novelty]: low does not apply (it belongs to confidence_band or close_to_threshold)"),
    ({"kind": "random", "memory": 10}, "signals[random]: memory does not apply (it belongs to novelty)"),
    ({"kind": "every_nth", "n": 2, "interval_s": 5}, "interval_s does not apply (it belongs to interval)"),
    ({"kind": "metadata", "tag": "a", "values": ["b"], "max_share": 0.2}, "max_share does not apply"),
    ({"kind": "confidence_band", "tag": "zone"}, "tag does not apply (it belongs to metadata)"),
    ({"kind": "entropy", "values": ["x"]}, "values does not apply (it belongs to metadata)"),
], ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_parameters_of_another_kind_are_refused(fields, detail):
    msg = refused(signal_toml(**fields))
    assert msg.startswith("sampling.signals[0]: ") and detail in msg, msg


def test_a_parameter_at_its_default_is_tolerated():
    assert config.loads(signal_toml(kind="margin", max_share=0.05, memory=256)).sampling.signals == (
        SignalConfig("margin"),)


@pytest.mark.parametrize("fields, detail", [
    ({"kind": "every_nth"}, "missing n"),
    ({"kind": "interval"}, "missing interval_s"),
    ({"kind": "detection_count"}, "missing min_count"),
    ({"kind": "metadata", "values": ["dock"]}, "missing tag"),
    ({"kind": "metadata", "tag": "zone"}, "missing values"),
    ({"kind": "metadata", "tag": "zone", "values": []}, "missing values"),
    ({"kind": "metadata"}, "missing tag, values"),
])
def test_missing_required_parameters_are_refused(fields, detail):
    msg = refused(signal_toml(**fields))
    assert msg.startswith(f"sampling.signals[0]: signals[{fields['kind']}]: ") and detail in msg, msg


@pytest.mark.parametrize("fields, detail", [
    ({"kind": "every_nth", "n": 0}, "n must be"),
    ({"kind": "every_nth", "n": -3}, "n must be"),
    ({"kind": "interval", "interval_s": 0}, "interval_s must be"),
    ({"kind": "interval", "interval_s": -1.5}, "interval_s must be"),
    ({"kind": "rare_class", "max_share": 0}, "max_share must be"),
    ({"kind": "rare_class", "max_share": 1.5}, "max_share must be"),
    ({"kind": "rare_class", "max_share": -0.1}, "max_share must be"),
    ({"kind": "detection_count", "min_count": 0}, "min_count must be"),
    ({"kind": "novelty", "min_distance": 0}, "min_distance must be"),
    ({"kind": "novelty", "min_distance": 2.5}, "min_distance must be"),
    ({"kind": "novelty", "memory": 0}, "memory must be"),
    ({"kind": "novelty", "memory": 10**7}, "memory must be"),
    ({"kind": "metadata", "tag": "", "values": ["x"]}, "tag must be"),
    ({"kind": "metadata", "tag": "t" * 101, "values": ["x"]}, "tag must be"),
    ({"kind": "metadata", "tag": "zone", "values": ["v" * 101]}, "values must be"),
])
def test_out_of_range_parameters_are_refused(fields, detail):
    msg = refused(signal_toml(**fields))
    assert msg.startswith(f"sampling.signals[0]: signals[{fields['kind']}]: ") and detail in msg, msg


@pytest.mark.parametrize("fields, path", [
    ({"kind": "every_nth", "n": 1.5}, "sampling.signals[0].n"),
    ({"kind": "every_nth", "n": True}, "sampling.signals[0].n"),
    ({"kind": "interval", "interval_s": "10s"}, "sampling.signals[0].interval_s"),
    ({"kind": "metadata", "tag": "zone", "values": "dock"}, "sampling.signals[0].values"),
    ({"kind": "metadata", "tag": "zone", "values": ["dock", 3]}, "sampling.signals[0].values[1]"),
    ({"kind": "metadata", "tag": 1, "values": ["dock"]}, "sampling.signals[0].tag"),
    ({"kind": "novelty", "memory": 2.0}, "sampling.signals[0].memory"),
])
def test_wrong_types_are_refused_with_their_path(fields, path):
    assert refused(signal_toml(**fields)).startswith(f"{path}: ")


@pytest.mark.parametrize("text", [
    signal_toml(kind="margin") + signal_toml(kind="margin"),
    signal_toml(kind="novelty") + signal_toml(kind="novelty", min_distance=0.3),
    signal_toml(kind="metadata", tag="zone", values=["a"]) + signal_toml(kind="metadata", tag="zone", values=["b"]),
])
def test_a_signal_may_appear_once(text):
    assert "each kind may appear once" in refused(text)


def test_direct_construction_is_checked_too():
    with pytest.raises(ConfigError, match=r"signals\[margin\]: n does not apply"):
        SignalConfig("margin", n=3)
    with pytest.raises(ConfigError, match="n must be"):
        SignalConfig("every_nth", n=2.5)
    assert SignalConfig("metadata", tag="a", values=["x", "y"]).values == ("x", "y")


def to_toml(signals: tuple[SignalConfig, ...]) -> str:
    """What a person would write: only the fields that differ from their defaults."""
    out = []
    for s in signals:
        out.append("[[sampling.signals]]")
        for name, default in [("kind", None), *((f.name, f.default) for f in dataclasses.fields(s)[1:])]:
            v = getattr(s, name)
            if v != default:
                out.append(f"{name} = {json.dumps(list(v) if isinstance(v, tuple) else v, ensure_ascii=False)}")
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("kind", config.SIGNAL_KINDS)
@settings(max_examples=40)
@given(data=st.data())
def test_every_kind_round_trips_through_toml(kind, data):
    signals = (data.draw(signal_configs(kind)),)
    assert config.loads(to_toml(signals)).sampling == SamplingConfig(signals=signals)


def test_all_kinds_in_one_file():
    text = """
        [sampling]
        budget = { per_hour = 120 }
        [[sampling.signals]]
        kind = "random"
        weight = 0.1
        [[sampling.signals]]
        kind = "every_nth"
        n = 30
        [[sampling.signals]]
        kind = "interval"
        interval_s = 600
        [[sampling.signals]]
        kind = "least_confidence"
        [[sampling.signals]]
        kind = "margin"
        [[sampling.signals]]
        kind = "entropy"
        aggregate = "mean"
        [[sampling.signals]]
        kind = "confidence_band"
        low = 0.4
        [[sampling.signals]]
        kind = "close_to_threshold"
        low = 0.3
        high = 0.6
        min_count = 2
        [[sampling.signals]]
        kind = "rare_class"
        max_share = 0.02
        [[sampling.signals]]
        kind = "detection_count"
        min_count = 12
        [[sampling.signals]]
        kind = "novelty"
        min_distance = 0.15
        memory = 512
        weight = 0.5
        [[sampling.signals]]
        kind = "metadata"
        tag = "zone"
        values = ["dock", "gate"]
        weight = 2.0
        [[sampling.signals]]
        kind = "metadata"
        tag = "weather"
        values = ["snow"]
    """
    signals = config.loads(text).sampling.signals
    assert [s.name for s in signals] == [*config.SIGNAL_KINDS[:-1], "metadata:zone", "metadata:weather"]
    assert signals[2].interval_s == 600.0 and isinstance(signals[2].interval_s, float)
    assert signals[10] == SignalConfig("novelty", weight=0.5, min_distance=0.15, memory=512)
    state = SignalState.for_signals(signals)
    assert state.memory == 512
    o = obs([0.5, 0.3, 0.2], embedding=E1, tags={"zone": "gate"}, captured_at=10.0, index=60)
    value, scores, reasons = score(o, signals, 0, SignalContext((1000, 10, 990)), state)
    assert reasons == ("every_nth", "interval", "least_confidence", "margin", "entropy", "confidence_band",
                       "novelty", "metadata:zone=gate")
    assert scores["rare_class"] < FIRES_AT and scores["detection_count"] == scores["close_to_threshold"] == 0.0


def test_context_from_manifest():
    class Manifest:
        class_counts = (3, 0, 5)

    assert SignalContext.from_manifest(Manifest()).class_counts == (3, 0, 5)
    np.testing.assert_allclose(SignalContext((3, 0, 5)).shares, [3 / 8, 0, 5 / 8])
    assert SignalContext().shares is None
    with pytest.raises(ValueError):
        SignalContext((1, -1))
