"""`edgeloop bench loop` on a tiny configuration: the report's shape, the budgets, the bytes, the plot.

Figures are not asserted (a tiny run is noise); timing never is.
"""

from __future__ import annotations

import json

import cv2
import pytest
from click.testing import CliRunner

from edgeloop.bench.loop import ARMS, EXTRA_ARMS, LoopConfig, labels_to_target, run_loop_bench

# The seed model must be trained enough for its embeddings to spread out (a few dozen steps): with a
# barely trained net every frame is a near duplicate of every other and diversity selection, rightly,
# keeps almost nothing.
TINY = LoopConfig(seeds=1, rounds=2, labels=20, cameras=2, sites=2, frames=120, epochs=1, seed_epochs=12, seed_set=200,
                  golden_per_condition=10, agent_per_hour=600, relay_per_hour_per_agent=300,
                  arms=ARMS + EXTRA_ARMS)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    report = run_loop_bench(TINY, out)
    return out, report


def test_the_json_has_every_arm_and_figure(tiny):
    out, report = tiny
    saved = json.loads((out / "loop.json").read_text())
    assert saved["target"] == report["target"] and 0 < saved["target"] <= 1
    assert set(saved["arms"]) == set(ARMS + EXTRA_ARMS)
    n = TINY.rounds + 1
    for arm, a in saved["arms"].items():
        for key in ("labels", "accuracy_mean", "accuracy_std", "per_slice", "labels_used"):
            assert len(a[key]) == n, (arm, key)
        assert all(0 <= v <= 1 for v in a["accuracy_mean"])
        assert all(v >= 0 for v in a["accuracy_std"])
        assert set(a["per_slice"][0]) == {"day", "dusk", "night"}
        assert set(a["bytes_uplinked"]) >= {"total", "agent_to_relay", "relay_to_hub", "raw"}
        assert a["bytes_uplinked"]["total"] == a["bytes_uplinked"]["agent_to_relay"] + a["bytes_uplinked"]["relay_to_hub"]
        assert a["bytes_uplinked"]["raw"] == TINY.rounds * TINY.cameras * TINY.frames * 64 * 64 * 3
        assert a["labels_to_target"] is None or a["labels_to_target"] >= TINY.seed_set
        if a["labels_to_target"] is not None:
            assert a["loop_labels_to_target"] == pytest.approx(a["labels_to_target"] - TINY.seed_set)
    assert len(saved["lines"]) == len(ARMS + EXTRA_ARMS)


def test_label_axes_are_equal_across_arms_and_cumulative(tiny):
    _, report = tiny
    axes = [a["labels"] for a in report["arms"].values()]
    assert all(ax == axes[0] for ax in axes)
    assert axes[0] == [TINY.seed_set + r * TINY.labels for r in range(TINY.rounds + 1)]
    for a in report["arms"].values():
        used = a["labels_used"]
        assert used[0] == TINY.seed_set
        assert all(b >= x for x, b in zip(used, used[1:]))  # cumulative
        assert all(u <= x for u, x in zip(used, a["labels"]))  # never over the label budget


def test_no_tier_exceeds_its_budget(tiny):
    _, report = tiny
    for arm, a in report["arms"].items():
        for rd in a["rounds"]:
            b = rd["budgets"]
            assert rd["labeled"] <= b["labels"]
            assert rd["relay_kept"] <= rd["agent_kept"] <= rd["frames"]
            if b["agent"] is not None:
                assert rd["agent_kept"] <= b["agent"]
            if b["relay"] is not None:
                assert rd["relay_kept"] <= b["relay"]
            if arm == "edgeloop":
                # hub "hybrid" skips near duplicates of labeled samples and of each other, so a pool of
                # barely K candidates may leave a few labels unspent; never more than K though
                assert 0 < rd["labeled"] <= min(b["labels"], rd["relay_kept"])
            else:
                # the hub spends the whole label budget whenever enough candidates reach it
                assert rd["labeled"] == min(b["labels"], rd["relay_kept"]), arm
    # central keeps everything; random and edgeloop have enough candidates to spend the label budget
    for arm in ("central", "oracle"):
        for rd in report["arms"][arm]["rounds"]:
            assert rd["agent_kept"] == rd["relay_kept"] == rd["frames"]
    for arm in ("random", "central", "oracle"):
        assert all(rd["labeled"] == TINY.labels for rd in report["arms"][arm]["rounds"]), arm


def test_the_oracle_labels_every_frame_the_model_gets_wrong_first(tiny):
    _, report = tiny
    for arm, a in report["arms"].items():
        for rd in a["rounds"]:
            assert 0 <= rd["wrong_labeled"] <= min(rd["labeled"], rd["wrong_in_pool"])
    for rd in report["arms"]["oracle"]["rounds"]:
        assert rd["wrong_labeled"] == min(TINY.labels, rd["wrong_in_pool"]) > 0


def test_budgets_must_be_positive():
    with pytest.raises(ValueError, match="agent_per_hour"):
        LoopConfig(agent_per_hour=0)
    with pytest.raises(ValueError, match="unknown arms"):
        LoopConfig(arms=("random", "psychic"))


def test_central_uplinks_more_than_the_selective_arms(tiny):
    _, report = tiny
    total = {arm: a["bytes_uplinked"]["total"] for arm, a in report["arms"].items()}
    assert total["central"] > total["edgeloop"] > 0
    assert total["central"] > total["threshold"]
    assert total["central"] > total["random"]


def test_the_plot_is_a_png(tiny):
    out, _ = tiny
    img = cv2.imread(str(out / "loop.png"))
    assert img is not None and img.ndim == 3 and min(img.shape[:2]) > 100


def test_labels_to_target_interpolates():
    assert labels_to_target([300, 400, 500], [0.5, 0.7, 0.9], 0.8) == pytest.approx(450)
    assert labels_to_target([300, 400], [0.9, 0.95], 0.8) == 300
    assert labels_to_target([300, 400], [0.5, 0.6], 0.8) is None


def test_the_command_runs_and_prints_a_line_per_arm(tmp_path):
    result = CliRunner().invoke(
        __import__("edgeloop.cli", fromlist=["main"]).main,
        ["bench", "loop", "--seeds", "1", "--rounds", "1", "--labels", "10", "--cameras", "2", "--frames", "60",
         "--epochs", "1", "--seed-epochs", "1", "--golden", "5", "--arms", "random,edgeloop", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith(("random:", "edgeloop:"))]
    assert len(lines) == 2
    assert (tmp_path / "loop.json").exists() and (tmp_path / "loop.png").exists()
