"""hub.live: Wilson intervals, live accuracy, the accuracy-drop and shift alarms; the world's drift.

The key test trains a real ClassifierNet on the simulated world, builds its Reference from training and
golden images, and feeds drift_alarms the audit samples of two sites, one of which gets sodium street
lights at night: only that site may alarm.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeloop.hub.live import (Alarm, Estimate, Reference, assess_drop, assess_shift, build_reference, device_class,
                               drift_alarms, live_accuracy, wilson)
from edgeloop.sim.world import CONDITIONS, DAY_LENGTH, DRIFT_CONDITIONS, World


# ---- wilson ------------------------------------------------------------------------------------

@given(st.integers(1, 10_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_the_proportion_and_stays_in_0_1(kn):
    k, n = kn
    low, high = wilson(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0
    assert low < high


@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))), st.integers(2, 50))
def test_wilson_narrows_with_n(kn, m):
    k, n = kn
    low, high = wilson(k, n)
    low_m, high_m = wilson(k * m, n * m)  # same proportion, m times the evidence
    assert high_m - low_m < high - low


@pytest.mark.parametrize("k, n, want", [
    (0, 0, (0.0, 1.0)),
    (0, 10, (0.0, 3.8416 / 13.8416)),  # upper = z^2 / (n + z^2) at k = 0
    (10, 10, (10 / 13.8416, 1.0)),
    (50, 100, (0.4038, 0.5962)),
])
def test_wilson_known_values(k, n, want):
    assert wilson(k, n) == pytest.approx(want, abs=1e-4)


def test_wilson_rejects_k_outside_0_n():
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson(11, 10)


# ---- live accuracy -----------------------------------------------------------------------------

def row(site="site-a", device="dev-0001", version="v1", predicted=1, label=1, t=0.0, **extra) -> dict:
    return {"site": site, "device_id": device, "camera_id": "cam-0", "model_version": version,
            "predicted": predicted, "label": label, "captured_at": t, "tags": {}, "audit": 1, **extra}


def test_live_accuracy_groups_by_site_and_version():
    rows = ([row("site-a", predicted=1, label=1)] * 3 + [row("site-a", predicted=2, label=1)]
            + [row("site-b", predicted=5, label=5)] * 2 + [row("site-a", version="v2")]
            + [row("site-a", label=None), row("site-b", predicted=0, audit=0)])  # unlabeled; not audit
    got = live_accuracy(rows)
    assert [(e.key, e.model_version, e.n, e.correct) for e in got] == [
        ("site-a", "v1", 4, 3), ("site-a", "v2", 1, 1), ("site-b", "v1", 2, 2)]
    a = got[0]
    assert isinstance(a, Estimate) and a.accuracy == 0.75 and (a.low, a.high) == wilson(3, 4)


def test_live_accuracy_by_device_class():
    rows = [row(device="jetson-nano-0001"), row(device="jetson-nano-0002", predicted=0),
            row(device="dev-7"), row(device="solo"),
            # a reported class wins over the id, whether tags arrive decoded or as the store's JSON
            row(device="dev-8", tags={"device_class": "pi4"}),
            row(device="x-1", tags=json.dumps({"device_class": "pi4"}))]
    got = {(e.key, e.n, e.correct) for e in live_accuracy(rows, by="device_class")}
    assert got == {("jetson-nano", 2, 1), ("dev", 1, 1), ("solo", 1, 1), ("pi4", 2, 2)}
    assert device_class(row(device="jetson-nano-0001")) == "jetson-nano"
    assert [e.key for e in live_accuracy(rows, by=lambda r: r["device_id"][:1])] == ["d", "j", "s", "x"]


# ---- accuracy drop -----------------------------------------------------------------------------

def stream(accuracies: list[tuple[int, float]], rng: np.random.Generator, site="site-a") -> list[dict]:
    """Labeled audit rows, one a minute: for each (count, accuracy), `count` rows right with that probability."""
    rows, t = [], 0.0
    for count, acc in accuracies:
        for _ in range(count):
            label = int(rng.integers(10))
            right = rng.random() < acc
            rows.append(row(site, predicted=label if right else (label + 1) % 10, label=label, t=t))
            t += 60.0
    return rows


def test_accuracy_drop_fires_on_a_drop():
    rows = stream([(150, 0.92), (100, 0.65)], np.random.default_rng(0))
    rows.reverse()  # order comes from captured_at, not from the list
    drop = assess_drop(rows)
    assert drop.alarm and drop.recent.n == 100 and drop.earlier.n == 150
    assert drop.recent.high < drop.earlier.low
    assert "fell from" in drop.reason
    alarms = drift_alarms(rows + stream([(250, 0.92)], np.random.default_rng(1), site="site-b"))
    assert [(a.site, a.kind, a.model_version) for a in alarms] == [("site-a", "accuracy_drop", "v1")]
    json.dumps(alarms[0].figures)  # the hub stores and serves them as they are


def test_accuracy_drop_is_quiet_on_constant_accuracy():
    # Exactly constant: no alarm at all.
    flat = [row(predicted=i % 10 != 0, label=1, t=float(i)) for i in range(500)]
    assert not assess_drop(flat).alarm
    # Random at a constant 85 %: separate 95 % intervals are a ~0.3 % test; over 300 streams allow 2 %.
    fired = sum(assess_drop(stream([(250, 0.85)], np.random.default_rng(s))).alarm for s in range(300))
    assert fired <= 6, fired


def test_accuracy_drop_needs_min_n_per_side_and_can_use_a_baseline():
    rows = stream([(40, 1.0), (20, 0.0)], np.random.default_rng(2))
    assert not assess_drop(rows, min_n=30).alarm  # 0 % vs 100 %, but only 24 recent rows
    assert assess_drop(rows, min_n=20).alarm
    # Against a baseline (e.g. the golden accuracy) no history is needed.
    low = stream([(100, 0.7)], np.random.default_rng(3))
    assert assess_drop(low, baseline=0.93).alarm
    assert not assess_drop(low, baseline=0.75).alarm
    assert not assess_drop([]).alarm


# ---- shift on synthetic embeddings (no torch) --------------------------------------------------

@pytest.fixture(scope="module")
def gaussian_reference() -> Reference:
    rng = np.random.default_rng(0)
    cov = np.diag(np.linspace(0.2, 2.0, 16))
    train, held = (rng.multivariate_normal(np.full(16, 3.0), cov, n) for n in (2000, 1000))
    return build_reference(train, held, rng.uniform(0.6, 1.0, 1000), model_version="v1")


def test_reference_round_trips_through_bytes(gaussian_reference):
    ref = gaussian_reference
    back = Reference.from_bytes(ref.to_bytes())
    for name in ("mean", "precision", "heldout_scores", "heldout_confidences"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ref, name))
    assert (back.quantile, back.threshold, back.model_version) == (0.99, ref.threshold, "v1")
    assert np.mean(ref.heldout_scores > ref.threshold) == pytest.approx(0.01, abs=0.002)
    with pytest.raises(ValueError, match="not a live.Reference"):
        Reference.from_bytes(b"not an npz")
    pickled = io.BytesIO()
    np.savez(pickled, mean=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="not a live.Reference"):
        Reference.from_bytes(pickled.getvalue())


def test_shift_alarms_on_new_data_only(gaussian_reference):
    ref, rng = gaussian_reference, np.random.default_rng(1)
    cov = np.diag(np.linspace(0.2, 2.0, 16))
    same = rng.multivariate_normal(np.full(16, 3.0), cov, 400)
    moved = same.copy()
    moved[:100, :4] += 3.0  # a quarter of the frames moved along the training data's narrowest axes
    quiet, loud = assess_shift(ref, same, rng.uniform(0.6, 1.0, 400)), assess_shift(ref, moved)
    assert not quiet.alarm and quiet.reason == "" and quiet.low < ref.expected < quiet.high
    assert loud.alarm and loud.low > 3 * ref.expected and "beyond the training" in loud.reason
    assert np.isnan(loud.ks_pvalue)  # no confidences given
    # Too few to say: all 10 beyond the threshold, still no alarm below min_n.
    assert not assess_shift(ref, moved[:10], min_n=20).alarm and assess_shift(ref, moved[:10], min_n=10).alarm
    assert assess_shift(ref, np.empty((0, 16))).n == 0
    with pytest.raises(ValueError, match=r"expected embeddings \(K, 16\)"):
        ref.scores(np.zeros((8, 8)))  # another model's embeddings, never silently reshaped


def test_drift_alarms_reads_store_rows_and_matches_references_by_version(gaussian_reference):
    rng = np.random.default_rng(2)
    cov = np.diag(np.linspace(0.2, 2.0, 16))
    far = rng.multivariate_normal(np.full(16, 3.0), cov, 300)
    far[:, :4] += 3.0
    rows = [row("site-x", t=float(i), label=None, confidence=0.5, embedding=e.astype("<f2").tobytes())
            for i, e in enumerate(far)]
    assert [(a.site, a.kind) for a in drift_alarms(rows, {"v1": gaussian_reference})] == [("site-x", "shift")]
    alarm = drift_alarms(rows, {"v1": gaussian_reference})[0]
    assert isinstance(alarm, Alarm) and alarm.figures["n"] == 300 and alarm.model_version == "v1"
    json.dumps(alarm.figures)
    assert drift_alarms(rows, {"v2": gaussian_reference}) == []  # no Reference for v1: nothing to compare
    assert drift_alarms([{**r, "audit": 0} for r in rows], {"v1": gaussian_reference}) == []  # not audit


def test_one_device_sending_another_width_neither_breaks_drift_nor_speaks_for_its_site(gaussian_reference):
    rng = np.random.default_rng(3)
    cov = np.diag(np.linspace(0.2, 2.0, 16))
    far = rng.multivariate_normal(np.full(16, 3.0), cov, 300)
    far[:, :4] += 3.0
    rows = [row("site-x", t=float(i), label=None, confidence=0.5, embedding=e.astype("<f2").tobytes())
            for i, e in enumerate(far)]
    odd = [row("site-x", t=1e6 + i, label=None, confidence=0.5, embedding=np.zeros(w, "<f2").tobytes())
           for i, w in enumerate((8, 17, 1))]  # newest: they would head the window
    (alarm,) = drift_alarms(rows + odd, {"v1": gaussian_reference})
    assert alarm.kind == "shift" and alarm.figures["n"] == 300
    assert drift_alarms(odd, {"v1": gaussian_reference}) == []


# ---- the world drifts --------------------------------------------------------------------------

def test_drift_relights_only_the_chosen_cameras_nights_from_the_start_index():
    plain, drifted = World(seed=3), World(seed=3, drift={"cam-001": ("sodium", 300)})
    seen = set()
    for cam in ("cam-001", "cam-002"):
        for i in range(0, 2 * DAY_LENGTH, 3):
            a, b = plain.frame(cam, i), drifted.frame(cam, i)
            relit = cam == "cam-001" and i >= 300 and a.tags["lighting"] == "night"
            assert b.tags["lighting"] == ("sodium" if relit else a.tags["lighting"])
            assert np.array_equal(a.image, b.image) != relit and a.label == b.label
            seen.add(b.tags["lighting"])
    assert seen == set(CONDITIONS) | {"sodium"} and DRIFT_CONDITIONS == ("sodium",)
    # Sodium light: next to no blue, the red channel carries the scene.
    sodium = [drifted.frame("cam-001", i).image for i in range(300, 300 + DAY_LENGTH)
              if drifted.condition("cam-001", i) == "sodium"]
    means = np.mean(sodium, axis=(0, 1, 2))  # B, G, R
    assert means[0] < 0.3 * means[2]
    with pytest.raises(ValueError, match="drift"):
        World(seed=3, drift={"cam-001": ("night", 0)})
    with pytest.raises(ValueError, match="drift"):
        World(seed=3, drift={"cam-001": ("sodium", -1)})


# ---- the key test: a real model, two sites, one relit ------------------------------------------

WORLD_SEED = 3
SITES = {"site-a": [f"cam-{i:03d}" for i in range(5)], "site-b": [f"cam-{i:03d}" for i in range(20, 25)]}
AUDIT_P = 0.4  # share of frames an agent keeps as audit samples here (far above production's, for power)


@pytest.fixture(scope="module")
def model():
    """A ClassifierNet trained briefly on the world's seed set (all conditions), its runtime and Reference."""
    pytest.importorskip("torch")
    from edgeloop.hub.training.classifier import export_onnx, train
    from edgeloop.shared.runtime import ModelRuntime

    world = World(seed=WORLD_SEED)
    seed_set, golden = world.seed_set(n=1200, conditions=CONDITIONS), world.golden_set(per_condition=200)
    result = train(seed_set.images, seed_set.labels, epochs=10, seed=0)
    runtime = ModelRuntime.load(*export_onnx(result.net, version="v1", parent=None, parity_frames=golden.images[:8]))
    train_preds, gold_preds = (runtime.predict_batch(list(d.images)) for d in (seed_set, golden))
    accuracy = np.mean([p.label for p in gold_preds] == golden.labels)
    ref = build_reference(np.stack([p.embedding for p in train_preds]), np.stack([p.embedding for p in gold_preds]),
                          np.array([p.confidence for p in gold_preds]), model_version="v1")
    return runtime, Reference.from_bytes(ref.to_bytes()), accuracy  # as the hub will hold it: a blob


def audit_rows(runtime, world: World) -> list[dict]:
    """Store-shaped audit rows (labeled) of both sites over two sim days, as agents would send them."""
    rows = []
    for site, cams in SITES.items():
        for cam in cams:
            keep = np.random.default_rng([WORLD_SEED, int(cam[4:])]).random(2 * DAY_LENGTH) < AUDIT_P
            frames = [world.frame(cam, i) for i in np.flatnonzero(keep)]
            for f, p in zip(frames, runtime.predict_batch([f.image for f in frames])):
                rows.append({"sample_id": f"{cam}-{f.index}", "device_id": f"dev-{cam[4:]}", "camera_id": cam,
                             "site": site, "captured_at": f.captured_at, "model_version": "v1", "predicted": p.label,
                             "confidence": p.confidence, "embedding": p.embedding.astype("<f2").tobytes(),
                             "tags": json.dumps(f.tags), "audit": 1, "label": f.label})
    return rows


def test_shift_alarm_names_the_relit_site_only(model):
    runtime, ref, golden_accuracy = model
    assert golden_accuracy >= 0.8  # a real model, not noise
    plain = audit_rows(runtime, World(seed=WORLD_SEED))
    # site-a's cameras get sodium street lights from the second sim day on.
    relit_world = World(seed=WORLD_SEED, drift={cam: ("sodium", DAY_LENGTH) for cam in SITES["site-a"]})
    relit = audit_rows(runtime, relit_world)

    def shift(rows, site):
        seen = sorted((r for r in rows if r["site"] == site), key=lambda r: r["captured_at"])[-500:]
        return assess_shift(ref, np.stack([np.frombuffer(r["embedding"], "<f2") for r in seen]),
                            np.array([r["confidence"] for r in seen]))

    figures = {(name, site): shift(rows, site) for name, rows in (("plain", plain), ("relit", relit)) for site in SITES}
    for (name, site), s in figures.items():
        d = assess_drop([r for r in (plain if name == "plain" else relit) if r["site"] == site])
        print(f"{name:5s} {site}: n={s.n} exceed {s.exceed_fraction:.3f} [{s.low:.3f}, {s.high:.3f}] "
              f"expected {s.expected:.3f}; confidence {s.mean_confidence:.2f} vs {s.heldout_mean_confidence:.2f} "
              f"KS {s.ks_statistic:.2f}; accuracy earlier {d.earlier.accuracy:.3f} (>= {d.earlier.low:.3f}) "
              f"recent {d.recent.accuracy:.3f} (<= {d.recent.high:.3f})")
    # Margins, not just the verdicts: undrifted sites sit near the expected 1 %, the relit one far above 3x.
    for key in (("plain", "site-a"), ("plain", "site-b"), ("relit", "site-b")):
        assert figures[key].low < 1.5 * ref.expected and figures[key].high < 6 * ref.expected, figures[key]
    assert figures["relit", "site-a"].low > 3 * 3 * ref.expected, figures["relit", "site-a"]

    assert drift_alarms(plain, {"v1": ref}) == []
    alarms = drift_alarms(relit, {"v1": ref})
    assert {a.site for a in alarms} == {"site-a"}
    assert {a.kind for a in alarms} == {"shift", "accuracy_drop"}, [a.reason for a in alarms]
    # Live accuracy tells the same story, per site.
    live = {e.key: e for e in live_accuracy(relit)}
    assert live["site-a"].accuracy < live["site-b"].accuracy
