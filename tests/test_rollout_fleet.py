"""Staged rollouts over a simulated fleet: 200 real agents (fleet mode, 4 processes) under 4 relays,
real mosquitto, real hub. One fleet serves every scenario, in order: a good model through every stage,
a model that disagrees with the active one, a model that does not load, and a rollout that survives a
restart of the hub and of a relay."""

from __future__ import annotations

import dataclasses
import time

import pytest

from edgeloop.onebox import OneBox, OneBoxSettings

pytestmark = pytest.mark.e2e
AGENTS_PER_SITE = 50
STAGES = "shadow:10%,canary:10%,full"
GATES = {"min_frames": 8, "min_agreement": 0.35, "max_latency_p95_ms": 2000.0, "max_confidence_drift": 0.6,
         "stage_timeout_s": 300.0}


def running(box, version: str) -> int:
    states = box.agent_states()
    return sum(1 for d in box.agent_ids if (st := states.get(d)) is not None and st.model_version == version)


def rollout(box, version: str) -> str:
    return box.hub.post("/api/v1/rollouts", {"model": version, "group": "all", "stages": STAGES, "gates": GATES,
                                             "shadow_fraction": 0.5})["rollout_id"]


def wait_final(box, rid: str, timeout: float = 600) -> dict:
    final = {}

    def check():
        ro = box.hub.get(f"/api/v1/rollouts/{rid}")
        final.update(ro)
        return ro["state"] in ("done", "rolled_back", "aborted") or f"{ro['state']} at {ro['stage']}"

    box.wait(f"rollout {rid} to finish", check, timeout=timeout)
    return final


def register(box, name: str, make) -> str:
    """Sign a model with the hub's own key and register it through the hub's API."""
    from edgeloop.shared.artifact import pack, sign_artifact
    from edgeloop.shared.signing import load_private_key

    onnx, manifest = make(name)
    key = load_private_key((box.s.out / "hub" / "keys" / "hub.key").read_bytes())
    artifact = sign_artifact(pack(manifest, onnx), key)
    box.hub.post_bytes("/api/v1/models", artifact)
    return name


def random_model(version: str):
    """An untrained ClassifierNet: it loads fine, and disagrees with the fleet's model on most frames."""
    import torch

    from edgeloop.hub.training.classifier import build_net, export_onnx

    torch.manual_seed(123)
    return export_onnx(build_net(), version=version, parent=None)


def copy_of(box, version: str, new: str):
    from edgeloop.shared.artifact import unpack

    art = unpack(box.hub.get_bytes(f"/api/v1/models/{version}/artifact"))
    return art.onnx, dataclasses.replace(art.manifest, version=new, parent=version)


def unloadable_model(version: str):
    """Signed and intact, but its manifest does not match the ONNX (3 labels for a 10-class net)."""
    onnx, manifest = random_model(version)
    return onnx, dataclasses.replace(manifest, labels=("a", "b", "c"), class_counts=())


def restart_on_same_port(svc) -> None:
    """Start a stopped service again where its peers expect it."""
    i = svc.argv.index("--port")
    svc.argv[i + 1] = str(svc.info["port"])
    svc.start()
    svc.wait_ready(timeout=120)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    out = tmp_path_factory.mktemp("fleet")
    s = OneBoxSettings(out=out, agents=0, relays=4, broker="mosquitto", frames_per_round=10**9, agent_per_hour=60,
                       relay_per_hour_per_agent=None, seed_set=300, golden_per_condition=20, epochs=6)
    box = OneBox(s)
    try:
        box.start_services()
        box.start_fleet(AGENTS_PER_SITE, max_fps=2.0, state_interval=1.0)
        n = len(box.agent_ids)
        assert n == 200
        box.wait("every agent on v0", lambda: running(box, "v0") == n or f"{running(box, 'v0')}/{n}", timeout=300)
        yield box
    finally:
        box.stop()


def test_a_good_model_goes_through_every_stage_to_every_agent_with_one_artifact_per_relay(fleet):
    box = fleet
    v1 = box.hub.train({"epochs": 2})["version"]
    size = next(m for m in box.hub.get("/api/v1/models")["models"] if m["version"] == v1)["artifact_size"]
    hub0 = box.hub.get("/api/v1/stats").get("model_bytes_out", 0)
    rid = rollout(box, v1)
    seen_stages = set()

    def progress():
        ro = box.hub.get(f"/api/v1/rollouts/{rid}")
        seen_stages.add(ro["stage"])
        return ro["state"] != "running" or ro["stage"]

    box.wait("the rollout to leave running", progress, timeout=600)
    ro = wait_final(box, rid)
    assert ro["state"] == "done", ro
    assert {"shadow:10%", "canary:10%", "full"} <= seen_stages | {h.get("stage") for h in ro["history"]}
    box.wait("every agent on the new model", lambda: running(box, v1) == 200 or f"{running(box, v1)}/200", 120)
    # The hub sent the artifact once per relay; the relays served the agents.
    assert box.hub.get("/api/v1/stats")["model_bytes_out"] - hub0 == 4 * size


def test_a_model_that_disagrees_is_stopped_at_shadow_and_rolled_back(fleet):
    box = fleet
    before = box.hub.get("/api/v1/desired?site=site-0")["version"]
    bad = register(box, "v-random", random_model)
    ro = wait_final(box, rollout(box, bad))
    assert ro["state"] == "rolled_back" and "agreement" in ro["reason"] and ro["stage"].startswith("shadow"), ro
    assert running(box, bad) == 0
    box.wait("no agent shadows it any more", lambda: all(
        st.facts.get("shadow_version") != bad for st in box.agent_states().values()), 60)
    assert running(box, before) == 200


def test_a_model_that_does_not_load_is_stopped_at_shadow_with_the_reason(fleet):
    box = fleet
    bad = register(box, "v-broken", unloadable_model)
    ro = wait_final(box, rollout(box, bad))
    assert ro["state"] == "rolled_back" and ro["stage"].startswith("shadow"), ro
    assert "could not run" in ro["reason"] and "labels" in ro["reason"], ro["reason"]
    assert running(box, bad) == 0


def test_a_rollout_survives_a_restart_of_the_hub_and_of_a_relay(fleet):
    box = fleet
    # The same network re-released under a new version: it passes every gate, so the test is about
    # the restarts, not about how well two weak models of the simulated world agree.
    current = box.hub.get("/api/v1/desired?site=site-0")["version"]
    v2 = register(box, "v-rerelease", lambda name: copy_of(box, current, name))
    rid = rollout(box, v2)
    def canary():
        ro = box.hub.get(f"/api/v1/rollouts/{rid}")
        assert ro["state"] == "running", ro
        return ro["stage"].startswith("canary") or ro["stage"]

    box.wait("the canary stage", canary, timeout=240)
    hub = next(s for s in box.services if s.name == "hub")
    relay = next(s for s in box.services if s.name == "relay-0")
    assert hub.stop() == 0 and relay.stop() == 0
    time.sleep(2)
    restart_on_same_port(hub)
    restart_on_same_port(relay)
    ro = wait_final(box, rid)
    assert ro["state"] == "done", ro
    box.wait("every agent on v2", lambda: running(box, v2) == 200 or f"{running(box, v2)}/200", 180)
