"""hub.calibration: temperature fitting and ECE on synthetic logits, the golden-set split, and the
temperature baked into an exported graph (torch: the last test only)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.hub.training.calibration import expected_calibration_error, fit_temperature, nll, softmax, split_halves


def sample_labels(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One label per row drawn from that row's distribution (inverse CDF)."""
    cdf = probs.cumsum(axis=1)
    return np.minimum((rng.random((len(probs), 1)) > cdf).sum(axis=1), probs.shape[1] - 1)


def synthetic(n: int, t0: float, seed: int = 0, classes: int = 10, scale: float = 3.0):
    """logits z (n, classes) and labels drawn from softmax(z / t0): the true temperature is t0."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, scale, (n, classes))
    return z, sample_labels(rng, softmax(z / t0))


@pytest.mark.parametrize("t0", [0.5, 1.0, 2.0, 4.0])
def test_fit_temperature_recovers_the_true_temperature(t0):
    z, y = synthetic(20_000, t0)
    t = fit_temperature(z, y)
    assert t == pytest.approx(t0, rel=0.06)
    # It is the minimum of the NLL: either side is worse.
    assert nll(z, y, t) < min(nll(z, y, t * 1.1), nll(z, y, t / 1.1))


def test_ece_of_calibrated_data_is_small_and_of_a_bad_guess_large():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.full(10, 0.3), 20_000)
    labels = sample_labels(rng, probs)  # drawn from the very probabilities: calibrated by construction
    assert expected_calibration_error(probs, labels) < 0.02
    # Claiming certainty for the same predictions: the gap is 1 - accuracy.
    sure = np.eye(10)[probs.argmax(1)]
    accuracy = (probs.argmax(1) == labels).mean()
    assert expected_calibration_error(sure, labels) == pytest.approx(1 - accuracy)


def test_temperature_scaling_fixes_overconfident_logits():
    z, y = synthetic(20_000, t0=1.0, seed=2)
    hot = 3.0 * z  # the "model" reports three times too sharp logits
    fit, held = np.arange(0, 20_000, 2), np.arange(1, 20_000, 2)
    t = fit_temperature(hot[fit], y[fit])
    assert t == pytest.approx(3.0, rel=0.06)
    before = expected_calibration_error(softmax(hot[held]), y[held])
    after = expected_calibration_error(softmax(hot[held] / t), y[held])
    assert before > 0.1 and after < 0.02, (before, after)
    assert (softmax(hot / t).argmax(1) == hot.argmax(1)).all()  # accuracy cannot move


def test_ece_bins_by_hand():
    # Two bins: confidences 0.6 and 0.7 (bin 2), 0.9 (bin 2 as well with bins=2: (0.5, 1]).
    probs = np.array([[0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])
    labels = np.array([0, 0, 0])  # right, wrong, right: accuracy 2/3, mean confidence 2.2/3
    assert expected_calibration_error(probs, labels, bins=2) == pytest.approx(abs(2 / 3 - 2.2 / 3))
    # Ten bins: each alone. |1 - 0.6| + |0 - 0.7| + |1 - 0.9|, over 3.
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx((0.4 + 0.7 + 0.1) / 3)


@pytest.mark.parametrize("call", [
    lambda: fit_temperature(np.zeros((0, 10)), np.zeros(0, int)),
    lambda: fit_temperature(np.zeros((3, 10)), np.array([0, 1, 10])),
    lambda: fit_temperature(np.full((2, 3), np.nan), np.array([0, 1])),
    lambda: fit_temperature(np.zeros(10), np.zeros(10, int)),
    lambda: expected_calibration_error(np.full((2, 3), 1 / 3), np.array([0, 1]), bins=0),
    lambda: expected_calibration_error(np.full((2, 3), 1 / 3), np.array([0.5, 1.0])),
])
def test_bad_input_is_refused(call):
    with pytest.raises(ValueError):
        call()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["day", "dusk", "night", "fog"]), st.integers(0, 9)), max_size=80))
def test_split_halves_covers_every_slice_and_class(pairs):
    slices = [s for s, _ in pairs]
    labels = [y for _, y in pairs]
    fit, held = split_halves(labels, slices)
    assert sorted([*fit, *held]) == list(range(len(pairs)))  # a partition
    assert abs(len(fit) - len(held)) <= 1
    for group in set(pairs):
        members = {i for i, p in enumerate(pairs) if p == group}
        if len(members) >= 2:
            assert members & set(fit) and members & set(held), group
    assert (split_halves(labels, slices)[0] == fit).all()  # deterministic


def test_split_halves_of_a_golden_set_cycling_labels():
    # The simulator's golden set: labels 0..9 over and over within each slice. Alternating within a
    # slice would put only even digits in one half.
    labels = [k % 10 for k in range(60)] * 3
    slices = [s for s in ("day", "dusk", "night") for _ in range(60)]
    fit, held = split_halves(labels, slices)
    for half in (fit, held):
        assert {(slices[i], labels[i]) for i in half} == set(zip(slices, labels))


def test_exported_graph_divides_logits_by_the_temperature():
    torch = pytest.importorskip("torch")
    from edgeloop.hub.training.classifier import build_net, export_onnx, predict_logits
    from edgeloop.shared.runtime import ModelRuntime

    torch.manual_seed(0)
    net = build_net().eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    frames = np.random.default_rng(0).integers(0, 256, (6, 40, 40, 3), dtype=np.uint8)
    onnx, manifest = export_onnx(net, version="v1", parent=None, temperature=2.5, parity_frames=frames)
    assert manifest.metrics["onnx_parity_max_abs_diff"] <= 1e-3  # parity against the wrapped net
    got = np.stack([p.probs for p in ModelRuntime.load(onnx, manifest).predict_batch(list(frames))])
    np.testing.assert_allclose(got, softmax(predict_logits(net, frames) / 2.5), atol=1e-4)
    # The net itself is untouched: no temperature in its state.
    after = net.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], v) for k, v in state.items())
    with pytest.raises(ValueError, match="temperature"):
        export_onnx(net, version="v1", parent=None, temperature=0.0)
