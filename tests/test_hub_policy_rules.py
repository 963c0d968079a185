"""The policy's decisions (hub/training/policy.py): when a training job or a selection is due, and
which settings a policy file may hold."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from edgeloop.hub.training.policy import PolicyConfig, due_selection, due_training, load_policy
from edgeloop.shared.errors import ConfigError

counts = st.integers(0, 10**6)
times = st.floats(0, 1e9, allow_nan=False)


@given(st.integers(1, 1000), counts, counts)
def test_training_is_due_exactly_when_enough_new_labels_came_in(every, then, new):
    c = PolicyConfig(train_every_labels=every)
    why = due_training(c, then + new, then, now=0.0, then=0.0)
    assert (why is not None) == (new >= every)
    if why:
        assert f"{new} new labels" in why


@given(st.floats(1, 1e6), times, st.floats(0, 2e6))
def test_training_and_selection_on_a_schedule(every, then, elapsed):
    c = PolicyConfig(train_every_s=every, select_every_s=every)
    now = then + elapsed
    assert (due_training(c, 0, 0, now, then) is not None) == (now - then >= every)
    assert due_selection(c, now, then) == (now - then >= every)


def test_an_unset_policy_is_off_and_never_due():
    c = PolicyConfig()
    assert not c.on and due_training(c, 10**6, 0, 1e9, 0) is None and not due_selection(c, 1e9, 0)


@pytest.mark.parametrize("text, says", [
    ("[policy]\ntrain_every_label = 5\n", "unknown key"),
    ("[polcy]\n", "unknown table"),
    ("[policy]\nselect_strategy = \"best\"\n", "select_strategy"),
    ("[policy]\nrollout_stages = \"canary:200%\"\n", "canary:200%.*at most 100%"),
    ("[policy]\nepochs = 0\n", "epochs"),
    ("[policy\n", "not valid TOML"),
])
def test_a_bad_policy_file_is_refused_naming_the_setting(tmp_path, text, says):
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=says):
        load_policy(path)


def test_a_policy_file_is_read(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text('[policy]\ntrain_every_labels = 200\ntrain_every_s = 86400\nrollout_stages = "shadow:10%,full"\n')
    c = load_policy(path)
    assert c.on and c.train_every_labels == 200 and c.train_every_s == 86400 and c.rollout_stages == "shadow:10%,full"
