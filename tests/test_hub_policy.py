"""The loop runs by itself: a hub started with a policy, agents and a relay feeding it and a labeler
working its queue, selects, trains, judges and rolls out a better model with no API call from
anyone. Real mosquitto, agents on the scenes world's video-like streams, the built-in detector."""

from __future__ import annotations


import pytest

from edgeloop.onebox import AGENT_DETECT_SIGNALS, OneBox, OneBoxSettings, sampling_toml
from edgeloop.sim.oracle import label_queue

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

POLICY = """
[policy]
select_every_s = 3      # queue the new frames the model is least sure of for the labeler
select_budget = 16
select_strategy = "uncertainty"  # hybrid's near-duplicate filter leaves few of a fixed camera's frames a minute
train_every_labels = 24  # a job once this many new labels are in
epochs = 4
rollout_stages = "full"
"""
# Writes only the loop's own parts make: relays post samples and their devices' states, the labeler labels.
FEEDERS = {"/api/v1/samples", "/api/v1/reports", "/api/v1/labels"}


def test_with_the_policy_on_the_hub_selects_trains_and_rolls_out_a_better_model_by_itself(tmp_path):
    (tmp_path / "policy.toml").write_text(POLICY)
    s = OneBoxSettings(out=tmp_path / "box", task="detect", agents=2, relays=1, broker="mosquitto", seed_set=160,
                       golden_per_condition=10, epochs=8, relay_per_hour_per_agent=None, agent_max_fps=4,
                       frames_per_round=10**9, hub_args=("--policy", str(tmp_path / "policy.toml")))
    box = OneBox(s)
    try:
        box.start_services()
        (s.out / "agent.toml").write_text(sampling_toml(3000, AGENT_DETECT_SIGNALS, 0))
        box.start_agents()
        world, hub = box.world(), box.hub
        v0 = hub.get("/api/v1/desired")["version"]
        labeled = 0

        def rolled_out():
            nonlocal labeled
            labeled += label_queue(hub, world)  # the labeler: whatever the policy queued
            done = [r for r in hub.get("/api/v1/rollouts")["rollouts"] if r["state"] == "done"]
            states = box.agent_states()
            on = {st.model_version for st in states.values()}
            if done and len(states) == len(box.agent_ids) and on == {done[0]["candidate"]}:
                return True
            return f"{labeled} labeled, jobs {[j['state'] for j in hub.get('/api/v1/jobs')['jobs']]}, agents on {on}"

        box.wait("the policy to train a model that passes its gate and roll it out to every agent", rolled_out,
                 timeout=780)
        new = hub.get("/api/v1/desired")["version"]
        assert new != v0
        models = {m["version"]: m for m in hub.get("/api/v1/models")["models"]}
        assert models[new]["metrics"]["gate"]["passed"] and models[new]["parent"] == v0
        assert models[new]["metrics"]["map50"] > models[v0]["metrics"]["map50"]  # better, on the golden set
        jobs = hub.get("/api/v1/jobs")["jobs"]
        assert jobs and all(j["created_by"] == "policy" for j in jobs)
        # Each automatic step is in the audit log as the policy's; nobody else wrote anything but samples and labels.
        entries = hub.get("/api/v1/audit?limit=1000")["entries"]
        steps = [e for e in entries if e["who"] == "policy"]
        assert {"/api/v1/selection", "/api/v1/train", "/api/v1/rollouts"} <= {e["path"] for e in steps}
        assert any(new in e["detail"] for e in steps if e["path"] == "/api/v1/rollouts")
        others = {e["path"] for e in entries if e["who"] != "policy"}
        assert others <= FEEDERS, others
        # The dashboard shows the policy and its jobs.
        page = hub.get_bytes("/").decode()
        assert 'id="policy" data-on="true" data-paused="false"' in page and 'data-state="succeeded"' in page
    finally:
        box.stop()
