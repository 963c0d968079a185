"""hub.gate: the pure judgement (tables and hypothesis properties), then the gate inside the hub's
training round: a deliberately worse child (fine-tuned on one class only) is registered but refused,
and the model cards of the trained models. The trained part needs torch and trains one small parent
(a few epochs on a few hundred simulated digits) once for the module.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from edgeloop.hub.cards import ModelNotFound, card_markdown, model_card
from edgeloop.hub.training.gate import judge

import hubdb

SLICES = ("day", "dusk", "night")

# --- the judgement, by hand -------------------------------------------------------------------

PARENT = {"accuracy": 0.75, "per_slice": {"day": 0.875, "dusk": 0.75, "night": 0.625}}


@pytest.mark.parametrize("candidate, parent, passed, says", [
    pytest.param({"accuracy": 0.8, "per_slice": {"day": 0.9}}, None, True, ["no parent"], id="no-parent"),
    pytest.param({"accuracy": 0.8}, {"note": "registered by hand"}, True, ["no comparable metrics"],
                 id="parent-without-accuracy"),
    pytest.param({"accuracy": 0.8}, {"accuracy": "high"}, True, ["no comparable metrics"],
                 id="parent-accuracy-not-a-number"),
    pytest.param({}, PARENT, False, ["candidate has no overall accuracy"], id="candidate-without-accuracy"),
    pytest.param({"accuracy": float("nan")}, PARENT, False, ["candidate has no overall accuracy"], id="candidate-nan"),
    pytest.param({"accuracy": 0.8, "per_slice": {"day": 0.875, "dusk": 0.75, "night": 0.625}}, PARENT, True,
                 ["overall: 0.800 > parent 0.750 + min_gain 0", "no slice fell more than 0.02"], id="better"),
    pytest.param(PARENT, PARENT, False, ["overall: 0.750 <= parent 0.750 + min_gain 0"], id="equal"),
    pytest.param({"accuracy": 0.8, "per_slice": {"day": 0.875, "dusk": 0.75, "night": 0.5}}, PARENT, False,
                 ["slice night: 0.500 < parent 0.625 - tolerance 0.02"], id="night-regressed"),
    pytest.param({"accuracy": 0.8, "per_slice": {"day": 0.875, "dusk": 0.75, "night": 0.609375}}, PARENT, True,
                 [], id="night-within-tolerance"),
    pytest.param({"accuracy": 0.8, "per_slice": {"day": 0.875, "dusk": 0.75}}, PARENT, False,
                 ["slice night: not evaluated for the candidate (parent 0.625)"], id="slice-missing"),
    pytest.param({"accuracy": 0.8}, {"accuracy": 0.75}, True, ["parent has no per-slice accuracy"],
                 id="parent-no-slices"),
])
def test_judge_table(candidate, parent, passed, says):
    g = judge(candidate, parent)
    assert g.passed is passed, g
    for text in says:
        assert any(text in r for r in g.reasons), (text, g.reasons)


def test_min_gain_and_tolerance_are_applied():
    cand = {"accuracy": 0.78, "per_slice": {"day": 0.875, "dusk": 0.75, "night": 0.5}}
    assert not judge(cand, PARENT).passed
    assert judge(cand, PARENT, tolerance=0.25).passed
    assert not judge(cand, PARENT, tolerance=0.25, min_gain=0.05).passed
    assert judge({**PARENT, "accuracy": 0.7}, PARENT, min_gain=-0.1).passed  # a negative gain allows a small drop
    with pytest.raises(ValueError):
        judge(cand, PARENT, tolerance=-0.01)


DETECTOR = {"map50": 0.40, "per_slice": {"day": 0.5, "night": 0.3},
            "slices": {"lighting:day": 0.5, "lighting:night": 0.3, "weather:fog": 0.35, "site:site-0": 0.4,
                       "size:L": 0.45, "camera:cam-003": 0.6}}


def test_a_detector_is_judged_on_every_slice_but_single_cameras():
    worse_on_large = {**DETECTOR, "map50": 0.45, "slices": {**DETECTOR["slices"], "size:L": 0.30}}
    g = judge(worse_on_large, DETECTOR)
    assert not g.passed and g.regressed == ("size:L",)
    assert any("slice size:L: 0.300 < parent 0.450" in r for r in g.reasons)
    worse_on_one_camera = {**DETECTOR, "map50": 0.45, "slices": {**DETECTOR["slices"], "camera:cam-003": 0.1}}
    assert judge(worse_on_one_camera, DETECTOR).passed  # a camera's few golden frames do not gate
    no_fog = {**DETECTOR, "map50": 0.45, "slices": {k: v for k, v in DETECTOR["slices"].items() if k != "weather:fog"}}
    assert judge(no_fog, DETECTOR).regressed == ("weather:fog",)


# --- the judgement, as properties -------------------------------------------------------------

accuracy = st.floats(0, 1, allow_nan=False)
slice_maps = st.dictionaries(st.sampled_from(["day", "dusk", "night", "fog", "rain"]), accuracy, min_size=1)
tolerances = st.floats(0, 0.5, allow_nan=False)


@given(accuracy, slice_maps, tolerances, st.floats(0, 0.5, allow_nan=False))
def test_a_candidate_equal_to_its_parent_never_passes(acc, per_slice, tolerance, min_gain):
    m = {"accuracy": acc, "per_slice": per_slice}
    g = judge(dict(m), m, tolerance, min_gain)
    assert not g.passed and g.regressed == ()


@given(accuracy, slice_maps, st.data(), tolerances)
def test_at_least_as_good_everywhere_and_better_overall_always_passes(acc, per_slice, data, tolerance):
    better = data.draw(st.floats(acc, 1, allow_nan=False, exclude_min=True)) if acc < 1 else None
    assume(better is not None)
    cand_slices = {s: data.draw(st.floats(v, 1, allow_nan=False)) for s, v in per_slice.items()}
    g = judge({"accuracy": better, "per_slice": cand_slices}, {"accuracy": acc, "per_slice": per_slice}, tolerance)
    assert g.passed, g


@given(accuracy, accuracy, slice_maps, slice_maps, tolerances)
def test_reasons_name_every_regressed_slice(cand_acc, parent_acc, cand_slices, parent_slices, tolerance):
    g = judge({"accuracy": cand_acc, "per_slice": cand_slices}, {"accuracy": parent_acc, "per_slice": parent_slices},
              tolerance)
    want = sorted(s for s, v in parent_slices.items() if s not in cand_slices or cand_slices[s] < v - tolerance)
    assert list(g.regressed) == want
    for s in want:
        assert any(r.startswith(f"slice {s}: ") for r in g.reasons), (s, g.reasons)
    assert not any(r.startswith(f"slice {s}: ") for s in set(parent_slices) - set(want) for r in g.reasons)
    assert g.passed == (not want and cand_acc > parent_acc)


# --- model cards without training -------------------------------------------------------------

def test_card_of_a_model_registered_from_outside(tmp_path):
    store = hubdb.store(tmp_path)
    store.add_model("ext-1", None, b"artifact bytes", b"", {"accuracy": 0.5, "per_slice": {"day": 0.5},
                                                           "gate": "not a dict"}, labels_total=0)
    card = model_card(store, "ext-1")
    assert card["version"] == "ext-1" and card["parent"] is None and card["created_at"].endswith("+00:00")
    assert card["metrics"] == {"figure": "accuracy", "accuracy": 0.5, "n": None,
                               "per_slice": {"day": {"accuracy": 0.5, "n": None}}}
    assert card["detection"] is None
    assert card["calibration"]["temperature"] is None and card["gate"]["passed"] is None
    assert card["training"] == dict.fromkeys(["epochs", "seed", "lr", "batch_size", "augment", "from_scratch"])
    assert card["artifact"]["size"] == len(b"artifact bytes")
    text = card_markdown(card)
    assert "# Model ext-1" in text and "| day | 0.500 | — |" in text
    with pytest.raises(ModelNotFound, match="nope"):
        model_card(store, "nope")


# --- the gate in the training round (torch) ---------------------------------------------------

ONE_CLASS = 3


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """A parent trained on every class and slice, and a child of it fine-tuned on one class only,
    in a second store that holds the parent as its desired model and nothing but that class labeled."""
    pytest.importorskip("torch")
    from edgeloop.hub.training.golden import LabeledSet
    from edgeloop.hub.training.rounds import import_labeled_set, train_round
    from edgeloop.shared.signing import generate_keypair, load_private_key
    from edgeloop.sim.world import CONDITIONS, World

    world = World(seed=0)
    g = world.golden_set(per_condition=100)
    golden = LabeledSet(g.images, g.labels, g.slices)
    key = load_private_key(generate_keypair()[0])

    seeded = hubdb.store(tmp_path_factory.mktemp("seeded"))
    s = world.seed_set(n=256, conditions=CONDITIONS)
    import_labeled_set(seeded, LabeledSet(s.images, s.labels, s.slices))
    parent = train_round(seeded, golden, key, epochs=10, from_scratch=True)
    assert parent["promoted"]  # nothing to compare with
    seeded.set_desired(parent["version"])

    narrow = hubdb.store(tmp_path_factory.mktemp("narrow"))
    row = seeded.model(parent["version"])
    narrow.add_model(row["version"], None, seeded.blobs.get(row["artifact_sha256"]),
                     seeded.blobs.get(row["state_sha256"]), row["metrics"], row["labels_total"])
    narrow.set_desired(parent["version"])
    more = world.seed_set(n=600, conditions=CONDITIONS)
    keep = more.labels == ONE_CLASS
    import_labeled_set(narrow, LabeledSet(more.images[keep], more.labels[keep], list(np.asarray(more.slices)[keep])))
    child = train_round(narrow, golden, key, epochs=3)
    return {"golden": golden, "seeded": seeded, "parent": parent, "narrow": narrow, "child": child}


def test_the_gate_refuses_a_child_trained_on_one_class(loop):
    parent, child, narrow = loop["parent"], loop["child"], loop["narrow"]
    assert child["parent"] == parent["version"]
    assert child["promoted"] is False and child["gate"]["passed"] is False
    assert child["gate"]["parent"] == parent["version"] and child["gate"]["tolerance"] == 0.02
    # The reasons name the slices that regressed, with both accuracies.
    pattern = re.compile(r"slice (\w+): [\d.]+ < parent [\d.]+ - tolerance 0.02")
    named = [m.group(1) for r in child["gate"]["reasons"] if (m := pattern.match(r))]
    assert named and set(named) <= set(SLICES), child["gate"]
    for s in named:
        assert child["metrics"]["per_slice"][s] < parent["metrics"]["per_slice"][s] - 0.02
    # Registered (its card can say why it was refused), but the fleet keeps the parent.
    assert narrow.model(child["version"])["metrics"]["gate"]["passed"] is False
    assert narrow.desired() == parent["version"]


def test_cards_of_the_trained_models(loop):
    parent, child = loop["parent"], loop["child"]
    card = model_card(loop["seeded"], parent["version"])
    cal = card["calibration"]
    assert cal["n_fit"] == cal["n_eval"] == 150
    assert cal["ece_after"] < cal["ece_before"], cal  # measured on the half the temperature was not fit on
    assert card["training"] == {"epochs": 10, "seed": 0, "lr": 3e-3, "batch_size": 64, "augment": True,
                                "from_scratch": True}
    assert card["data"]["total"] == card["data"]["labels_total"] == 256
    assert card["data"]["by_slice"] == {"day": 86, "dusk": 85, "night": 85}
    assert sum(card["data"]["by_class"].values()) == 256 and min(card["data"]["by_class"].values()) > 0
    assert {s: v["n"] for s, v in card["metrics"]["per_slice"].items()} == dict.fromkeys(SLICES, 100)
    assert card["gate"]["passed"] is True and card["gate"]["parent"] is None

    narrow_card = model_card(loop["narrow"], child["version"])
    assert narrow_card["data"]["by_class"] == {str(c): (narrow_card["data"]["total"] if c == ONE_CLASS else 0)
                                               for c in range(10)}
    assert narrow_card["training"]["from_scratch"] is False and narrow_card["gate"]["passed"] is False
    text = card_markdown(narrow_card)
    assert f"# Model {child['version']}" in text and "refused against parent" in text
    assert all(r in text for r in child["gate"]["reasons"])


def test_the_temperature_is_baked_into_the_artifact_not_the_state(loop):
    from edgeloop.hub.training.calibration import softmax
    from edgeloop.hub.training.classifier import load_state, predict_logits
    from edgeloop.shared.artifact import unpack
    from edgeloop.shared.runtime import ModelRuntime

    store, version = loop["seeded"], loop["parent"]["version"]
    row = store.model(version)
    t = row["metrics"]["calibration"]["temperature"]
    assert t != pytest.approx(1.0, abs=0.05)  # else this test could not tell baked from not baked
    art = unpack(store.blobs.get(row["artifact_sha256"]))
    assert art.manifest.metrics["calibration"]["temperature"] == t
    frames = loop["golden"].images[::10]
    device = np.stack([p.probs for p in ModelRuntime.load(art.onnx, art.manifest).predict_batch(list(frames))])
    from edgeloop.hub.training.workspace import checkpoint_file

    raw = predict_logits(load_state(checkpoint_file(store.blobs.get(row["state_sha256"]))), frames)  # the state: uncalibrated
    np.testing.assert_allclose(device, softmax(raw / t), atol=1e-4)
    assert (device.argmax(1) == raw.argmax(1)).all()
