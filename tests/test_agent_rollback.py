"""Local rollback: a new model over its latency budget goes back to the previous one (still loaded)
at once, on the device's own judgement; a model that does not load leaves the active one running.
Neither is tried again while the desired state names it. A real agent process against a real
mosquitto, models served over real HTTP (the rig of test_agent_shadow)."""

from __future__ import annotations

import re

import pytest

from edgeloop.shared.rollout import DeviceReport

from factories import signed_models
from test_agent_shadow import mismatched, rig  # noqa: F401 - rig is a fixture

pytest.importorskip("torch")
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    arts, pub, key = signed_models(tmp_path_factory.mktemp("rollback-models"), {"m-a": 0, "m-b": 1, "m-c": 2})
    arts["m-broken"] = mismatched(arts["m-b"], "m-broken", key)
    return arts, pub


def test_a_model_over_its_latency_budget_is_rolled_back_and_not_applied_again(models, rig):
    arts, pub = models
    r = rig(arts, pub)
    r.desire("m-b", max_latency_ms=0.001)  # no model answers in a microsecond
    st = r.wait("the agent to roll m-b back", lambda s: s.facts.get("rolled_back_version") == "m-b")
    assert any(s.model_version == "m-b" for s in r.states), "m-b was never active"
    assert st.model_version == "m-a"
    reason = st.facts["rollback_reason"]
    assert re.fullmatch(r"latency p95 \d+\.\d ms > budget 0\.001 ms over 20 frames", reason), reason
    report = DeviceReport.from_state(st)
    assert report.failed_versions == ("m-b",) and report.failure_reason == reason
    # Reinstated on disk too: a restart runs m-a.
    models_dir = r.data / "models"
    assert (models_dir / "active.model").read_bytes() == arts["m-a"]
    assert not (models_dir / "previous.model").exists()

    # The relay keeps m-b desired (and sends it again): the agent stays on m-a.
    since = len(r.states)
    r.desire("m-b", max_latency_ms=0.001)
    frames = st.stats["frames_seen"]
    st = r.wait("frames to keep flowing", lambda s: s.stats["frames_seen"] > frames + 150)  # 3 s
    assert {s.model_version for s in r.states[since:]} == {"m-a"}
    assert st.facts.get("rolled_back_version") == "m-b"
    assert st.stats["frames_this_model"] >= 150 and "mean_confidence" in st.stats
    assert r.log().count("rolled back to m-a") == 1

    # Another version, within a sane budget, is applied; the rollback is forgotten.
    r.desire("m-c", max_latency_ms=10_000)
    st = r.wait("m-c to run past its trial", lambda s: s.model_version == "m-c" and s.stats["frames_this_model"] >= 40)
    assert not st.facts.keys() & {"rolled_back_version", "load_failed_version", "rollback_reason"}, st.facts
    assert 0 < st.stats["latency_p95_ms"] <= 10_000 and 0 < st.stats["mean_confidence"] <= 1
    assert (models_dir / "active.model").read_bytes() == arts["m-c"]
    assert (models_dir / "previous.model").read_bytes() == arts["m-a"]


def test_a_model_that_does_not_load_leaves_the_active_one_and_a_download_failure_is_retried(models, rig):
    arts, pub = models
    r = rig(arts, pub)
    r.desire("m-broken")  # signed, but its manifest has 11 labels for 10 classes
    st = r.wait("the load failure", lambda s: s.facts.get("load_failed_version") == "m-broken")
    assert st.model_version == "m-a"
    assert "load failed" in st.facts["rollback_reason"] and "labels" in st.facts["rollback_reason"], st.facts
    assert DeviceReport.from_state(st).failed_versions == ("m-broken",)
    frames = st.stats["frames_seen"]
    st = r.wait("frames to keep flowing", lambda s: s.stats["frames_seen"] > frames + 150)  # 3 s: past a backoff
    assert st.model_version == "m-a" and r.log().count("m-broken refused") == 1

    # The relay does not have m-c yet (404): retried with backoff until it does, then applied.
    r.files.pop("/m-c")
    r.desire("m-c")
    st = r.wait("the download failure", lambda s: "m-c not applied yet, will retry" in s.last_error)
    assert st.model_version == "m-a" and "load_failed_version" not in st.facts  # m-broken is no longer desired
    r.files["/m-c"] = arts["m-c"]
    r.wait("m-c to be applied once the relay has it", lambda s: s.model_version == "m-c")
