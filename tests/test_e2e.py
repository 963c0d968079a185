"""End to end: agents, relays and hub as separate processes against a real mosquitto."""

from __future__ import annotations

import os
import signal
import sqlite3
import time

import pytest

from edgeloop.onebox import OneBox, OneBoxSettings
from edgeloop.shared import topics
from edgeloop.shared.mqtt import Connection
from edgeloop.shared.protocol import DeviceState, decode

from factories import signed_desired

pytestmark = pytest.mark.e2e


def hub_ids(box: OneBox) -> list[str]:
    with sqlite3.connect(box.s.out / "hub" / "hub.sqlite") as db:
        return [r[0] for r in db.execute("SELECT sample_id FROM samples WHERE device_id LIKE 'dev-%'")]


def outbox_ids(path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT sample_id FROM outbox")}


def relay_accepted(box: OneBox) -> int:
    total = 0
    for i in range(box.s.relays):
        with sqlite3.connect(box.s.out / f"relay-{i}" / "relay.sqlite") as db:
            row = db.execute("SELECT n FROM counters WHERE name = 'accepted'").fetchone()
            total += row[0] if row else 0
    return total


def start_box(tmp_path, agents=2, relays=2, frames=90, relay_per_hour=None, agent_env=None, max_fps=0.0) -> OneBox:
    s = OneBoxSettings(out=tmp_path, agents=agents, relays=relays, broker="mosquitto", frames_per_round=frames,
                       agent_per_hour=1200, relay_per_hour_per_agent=relay_per_hour, seed_set=120,
                       golden_per_condition=20, epochs=2, agent_max_fps=max_fps)
    box = OneBox(s)
    box.start_services()
    box.agents = box.start_agents(env=agent_env)
    return box


@pytest.fixture
def box_factory(tmp_path):
    boxes = []

    def make(**kw):
        box = start_box(tmp_path, **kw)
        boxes.append(box)
        return box

    yield make
    for box in boxes:
        codes = box.stop()
        assert all(c == 0 for name, c in codes.items() if name != "hub-seed" and c is not None and c != -9), codes


def test_loop_delivers_once_and_rolls_a_new_model_to_every_agent(box_factory):
    # Every agent process records its imports: the device must never load torch.
    box = box_factory(agent_env={"PYTHONPROFILEIMPORTTIME": "1"}, relay_per_hour=None)
    box.wait("the first round", lambda: box.round_done("v0", 90), timeout=240)

    ids = hub_ids(box)
    assert ids, "no sample reached the hub"
    assert len(ids) == len(set(ids)), "a sample id is stored twice"
    # Relays forward everything here: the hub holds exactly what the relays accepted.
    assert len(ids) == relay_accepted(box)

    trained = box.hub.train({"epochs": 1})
    # One epoch may not pass the training gate; this test is about delivery, so it says so explicitly.
    box.hub.post("/api/v1/desired", {"version": trained["version"], "force": not trained["promoted"]})
    box.wait("every agent to run the new model", lambda: all(
        (st := box.agent_states().get(d)) is not None and st.model_version == trained["version"]
        for d in box.agent_ids), timeout=120)

    # The retained state says so to anyone who subscribes later.
    seen: dict[str, DeviceState] = {}
    late = Connection(box.broker_url, "late-subscriber", subscriptions=[(f"{topics.ROOT}/+/+/state", 1)],
                      on_message=lambda c, u, m: seen.__setitem__(topics.device_of(m.topic), decode(m.payload, DeviceState)))
    late.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and set(seen) != set(box.agent_ids):
        time.sleep(0.1)
    late.stop()
    assert {d: seen[d].model_version for d in box.agent_ids} == {d: trained["version"] for d in box.agent_ids}

    for agent in box.agents:
        log = agent.log_path.read_text()
        assert "import time:" in log and "edgeloop.agent.daemon" in log  # the import log is really there
        assert " torch" not in log.replace("edgeloop", ""), f"{agent.name} imported torch"


def test_agent_killed_with_sigkill_loses_nothing_it_committed(box_factory):
    # 100 fps: slow enough that the broker freezes while the agent is still committing.
    box = box_factory(agents=1, relays=1, frames=600, relay_per_hour=None, max_fps=100)
    agent = box.agents[0]
    mosquitto = next(s for s in box.services if s.name == "mosquitto")
    box.wait("the agent to start processing", lambda: (
        (st := box.agent_states().get("dev-000")) is not None and st.stats.get("frames_this_model", 0) >= 30), 120)

    # Freeze the broker: PUBACKs stop, committed candidates pile up in the outbox.
    os.kill(mosquitto.proc.pid, signal.SIGSTOP)
    outbox = box.s.out / "dev-000" / "outbox.sqlite"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(outbox_ids(outbox)) < 5:
            time.sleep(0.2)
        agent.kill()  # SIGKILL mid-stream: no clean-up, no flush
        box.services.remove(agent)
    finally:
        os.kill(mosquitto.proc.pid, signal.SIGCONT)
    committed = outbox_ids(outbox)
    assert len(committed) >= 5
    # The broker saw the connection die: the last will marks the agent offline.
    box.wait("the last will", lambda: box.agent_states()["dev-000"].status == "offline", timeout=30)

    restarted = box._add(box.agent_service(0).start())
    box.agents = [restarted]
    box.wait("the restarted agent to drain", lambda: box.round_done("v0", 600), timeout=240)
    at_hub = set(hub_ids(box))
    assert committed <= at_hub, f"{len(committed - at_hub)} committed candidates never reached the hub"
    ids = hub_ids(box)
    assert len(ids) == len(set(ids))


def serve_bytes(files: dict[str, bytes]):
    """A real HTTP server on loopback serving `files` by path; -> (base url, server)."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def bad_artifacts(good: bytes) -> dict[str, bytes]:
    """Four ways a model can be wrong: unsigned, a tampered byte, truncated, signed by another key."""
    from edgeloop.shared.artifact import pack, sign_artifact, unpack
    from edgeloop.shared.signing import generate_keypair, load_private_key

    art = unpack(good)
    onnx = bytearray(art.onnx)
    onnx[len(onnx) // 2] ^= 0xFF
    other = load_private_key(generate_keypair()[0])
    return {
        "unsigned": pack(art.manifest, art.onnx),
        "tampered": pack(art.manifest, bytes(onnx), signature=art.signature, key_id=art.key_id),
        "truncated": good[:-200],
        "wrongkey": sign_artifact(good, other),
    }


def test_agent_refuses_unsigned_tampered_truncated_and_foreign_models_and_keeps_running(box_factory):
    import hashlib

    from edgeloop.shared.protocol import DesiredModel, encode

    box = box_factory(agents=1, relays=1, frames=100_000, max_fps=50)
    box.wait("the agent to run v0", lambda: (st := box.agent_states().get("dev-000")) is not None
             and st.model_version == "v0" and st.stats.get("frames_seen", 0) > 10, timeout=120)
    good = (box.s.out / "dev-000" / "models" / "active.model").read_bytes()
    hub_key = (box.s.out / "hub" / "keys" / "hub.key").read_bytes()
    # The relay serves a model to whoever names its sha256 (as desired messages do), to no one else.
    import urllib.error
    import urllib.request

    relay = box.relay_urls[0]
    sha = hashlib.sha256(good).hexdigest()
    with urllib.request.urlopen(f"{relay}/models/v0/{sha}", timeout=10) as resp:
        assert resp.read() == good
    for path in ("/models/v0", f"/models/v0/{'0' * 64}", "/models/v0/%C3%A9"):  # not ASCII: a 404, not a 500
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{relay}{path}", timeout=10)
        assert refused.value.code == 404
    bads = bad_artifacts(good)
    url, server = serve_bytes({f"/{name}": data for name, data in bads.items()})
    pub = Connection(box.broker_url, "test-relay")
    pub.start().wait_connected(10)
    try:
        for i, (name, data) in enumerate(bads.items()):
            seen_before = box.agent_states()["dev-000"].stats["frames_seen"]
            desired = DesiredModel(version=f"bad-{name}", sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                                   url=f"{url}/{name}")
            # Signed as the hub would (a hub mistaken about the bytes), newer than anything it signed:
            # what is checked here is the artifact.
            desired = signed_desired(hub_key, desired, "site-0", "dev-000", seq=2**40 + i)
            pub.publish(topics.desired("site-0", "dev-000"), encode(desired), retain=True).wait_for_publish(10)
            box.wait(f"the agent to refuse the {name} model", lambda: f"bad-{name} refused" in
                     box.agent_states()["dev-000"].last_error, timeout=60)
            box.wait("frames to keep flowing", lambda: box.agent_states()["dev-000"].stats["frames_seen"] > seen_before + 20,
                     timeout=60)
            st = box.agent_states()["dev-000"]
            assert st.model_version == "v0", f"the {name} model replaced the active one"
        # A malformed desired message is logged and ignored, the active model untouched.
        pub.publish(topics.desired("site-0", "dev-000"), b"\x93not-a-map", retain=True).wait_for_publish(10)
        box.wait("the agent to report the malformed message", lambda: "malformed desired" in
                 box.agent_states()["dev-000"].last_error, timeout=60)
        assert box.agent_states()["dev-000"].model_version == "v0"
    finally:
        pub.stop()
        server.shutdown()


def test_what_agents_send_while_the_relay_is_down_reaches_the_hub(box_factory):
    box = box_factory(agents=1, relays=1, frames=900, relay_per_hour=None, max_fps=100)
    relay = next(s for s in box.services if s.name == "relay-0")
    box.wait("the agent to start", lambda: (st := box.agent_states().get("dev-000")) is not None
             and st.stats.get("sent", 0) > 0, timeout=120)
    assert relay.stop() == 0  # the relay goes away; the agent keeps publishing to the broker
    box.services.remove(relay)
    # ... which acknowledges them; the agent keeps each until the relay's receipt.
    box.wait("the agent to publish more while the relay is down",
             lambda: box.agent_states()["dev-000"].stats["awaiting_receipt"] > 10, timeout=60)
    restarted = box._add(relay.__class__(relay.name, relay.argv, box.logs, relay.ready_file).start())
    box.relay_urls = [restarted.wait_ready(timeout=60)["url"]]
    box.wait("everything to drain", lambda: box.round_done("v0", 900), timeout=240)
    sent = box.agent_states()["dev-000"].stats["sent"]
    ids = hub_ids(box)
    # Every candidate the relay receipted to the agent is at the hub, once.
    assert len(ids) == len(set(ids)) == sent


def test_audit_candidates_pass_every_tier_outside_the_budgets_and_queue_as_their_own_slice(tmp_path):
    s = OneBoxSettings(out=tmp_path, agents=2, relays=1, broker="mosquitto", frames_per_round=300,
                       agent_per_hour=1, relay_per_hour_per_agent=1, seed_set=120, golden_per_condition=20,
                       epochs=1, audit_fraction=0.1)  # budgets of ~0 per window: only audit gets through
    box = OneBox(s)
    try:
        box.start_services()
        box.start_agents()
        box.wait("the round", lambda: box.round_done("v0", 300), timeout=240)
        audited = sum(box.agent_states()[d].stats["audit"] for d in box.agent_ids)
        assert 30 <= audited <= 90  # about 10 % of 600 frames
        stats = box.hub.get("/api/v1/stats")
        assert stats["audit"] == audited  # every audit candidate crossed every tier
        queue = box.hub.get("/api/v1/label-queue?limit=1000")["items"]
        assert {q["sample_id"] for q in queue if q["slice"] == "audit"} == {
            q["sample_id"] for q in queue if "audit" in q["reasons"]}
        assert sum(q["slice"] == "audit" for q in queue) == audited
        # Selection never draws on the audit stream, and the audit stream costs none of its budget.
        non_audit = stats["samples"] - stats["audit"] - stats.get("status_labeled", 0)
        picked = box.hub.post("/api/v1/selection", {"budget": 1000, "strategy": "hybrid"})["selected"]
        audit_ids = {q["sample_id"] for q in queue if q["slice"] == "audit"}
        assert not set(picked) & audit_ids
        assert len(picked) == non_audit
    finally:
        box.stop()


def one_agent_with_its_api(tmp_path, **budgets) -> tuple[OneBox, str]:
    """A one-box site (mosquitto, a relay, the hub) and one agent serving its local API, after its first
    40 frames -> (box, the agent's API url). The caller stops the box."""
    s = OneBoxSettings(out=tmp_path, agents=1, relays=1, broker="mosquitto", frames_per_round=40, seed_set=120,
                       golden_per_condition=20, epochs=1, agent_api=True, **budgets)
    box = OneBox(s)
    try:
        box.start_services()
        api = box.start_agents()[0].wait_ready(timeout=60)["url"]
        box.wait("the round", lambda: box.round_done("v0", 40), timeout=240)
    except BaseException:
        box.stop()
        raise
    return box, api


def test_a_frame_flagged_by_the_application_reaches_the_hub_even_with_the_budget_spent(tmp_path):
    import json
    import urllib.request

    # Budgets of ~0 per window: nothing gets through on merit.
    box, api = one_agent_with_its_api(tmp_path, agent_per_hour=1, relay_per_hour_per_agent=1)
    try:
        before = set(hub_ids(box))
        with urllib.request.urlopen(api + "/recent", timeout=10) as r:
            recent = json.load(r)
        assert len(recent) == 40
        flagged, confirmed = [r for r in reversed(recent) if r["sample_id"] not in before][:5:4]

        body = json.dumps({"sample_id": flagged["sample_id"], "verdict": "wrong", "label": "4"}).encode()
        with urllib.request.urlopen(urllib.request.Request(api + "/feedback", data=body), timeout=10) as r:
            assert r.status == 202 and json.load(r)["reason"] == "feedback:wrong"
        # The same over MQTT, naming the frame by its capture time.
        app = Connection(box.broker_url, "the-application")
        app.start().wait_connected(10)
        app.publish(topics.feedback("site-0", "dev-000"),
                    json.dumps({"at": confirmed["captured_at"] + 0.01, "verdict": "confirmed"}).encode()).wait_for_publish(10)
        app.stop()

        box.wait("both frames at the hub", lambda: {flagged["sample_id"], confirmed["sample_id"]} <= set(hub_ids(box)),
                 timeout=60)
        queue = {q["sample_id"]: q for q in box.hub.get("/api/v1/label-queue?limit=1000")["items"]}
        top = queue[flagged["sample_id"]]
        assert "feedback:wrong" in top["reasons"] and top["slice"] == "feedback" and top["tags"]["feedback_label"] == "4"
        assert top["priority"] == max(q["priority"] or 0 for q in queue.values())  # first in the label queue
        box.wait("the agent to report both", lambda: (st := box.agent_states()["dev-000"].stats)["feedback_wrong"] == 1
                 and st["feedback_confirmed"] == 1, timeout=30)
    finally:
        box.stop()


def test_feedback_on_a_frame_that_already_went_up_reaches_the_hub_and_heads_the_label_queue(tmp_path):
    """The feedback candidate reuses the frame's sample id: relays and the hub must not take it for a
    duplicate of the frame they already hold."""
    import json
    import urllib.request

    box, api = one_agent_with_its_api(tmp_path, relay_per_hour_per_agent=None)  # most frames go up on merit
    try:
        with urllib.request.urlopen(api + "/recent", timeout=10) as r:
            recent = json.load(r)
        box.wait("frames at the hub", lambda: len(set(hub_ids(box)) & {r["sample_id"] for r in recent}) >= 3, 60)
        up = [r for r in recent if r["sample_id"] in set(hub_ids(box))]
        flagged = up[len(up) // 2]["sample_id"]
        assert box.hub.get(f"/api/v1/samples/{flagged}")["status"] == "new"  # it went up on its own merit
        body = json.dumps({"sample_id": flagged, "verdict": "wrong", "label": "7"}).encode()
        with urllib.request.urlopen(urllib.request.Request(api + "/feedback", data=body), timeout=10) as r:
            assert r.status == 202

        def heads_the_queue():
            items = box.hub.get("/api/v1/label-queue?limit=5")["items"]
            return bool(items) and items[0]["sample_id"] == flagged

        box.wait("the flagged frame at the head of the label queue", heads_the_queue, timeout=60)
        sample = box.hub.get(f"/api/v1/samples/{flagged}")
        assert sample["status"] == "queued" and "feedback:wrong" in sample["reasons"]
        assert sample["tags"]["feedback_label"] == "7"
        assert sum(1 for i in hub_ids(box) if i == flagged) == 1  # one sample, now with the feedback
        relay = box.relay_status()[0]["counts"]
        assert relay["feedback"] == 1 and relay["duplicates"] == 0
    finally:
        box.stop()
