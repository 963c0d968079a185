"""Staged rollouts at the hub, on a real aiohttp app on loopback with a real database (tests/hubdb.py).

Devices are simulated the way the hub sees them: a `Fleet` reads GET /api/v1/desired?site=S as a
relay does, applies it as agents would, and POSTs /api/v1/reports. Nothing sleeps for a fixed
time: tests poll the API, or wait for the controller to complete passes after a report.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from aiohttp import web
from click.testing import CliRunner

from edgeloop.cli import main
from edgeloop.hub.api import ROLLOUTS, make_app
from edgeloop.hub.training.golden import LabeledSet
from edgeloop.hub.keys import load_or_create
from edgeloop.shared.rollout import stage_members

import hubdb

TOKEN = "rollout-token"
SITES = {"site-0": [f"cam-{i:02d}" for i in range(20)], "site-1": [f"cam-{i:02d}" for i in range(20, 40)]}
ALL = [d for ds in SITES.values() for d in ds]
GOLDEN = LabeledSet(np.zeros((1, 8, 8, 3), np.uint8), np.zeros(1, np.int64), ["day"])


class LiveHub:
    """The hub's app served on a free loopback port from a background thread (so the CLI can call it)."""

    def __init__(self, data, period: float = 0.05, stale_s: float = 30.0):
        self.data, self.period, self.stale_s = data, period, stale_s
        self.url = ""

    def start(self) -> "LiveHub":
        ready = threading.Event()

        async def serve():
            self.store = hubdb.store(self.data)
            self.app = make_app(self.store, GOLDEN, [TOKEN], load_or_create(self.data / "keys" / "hub.key"),
                                rollout_period_s=self.period, device_stale_s=self.stale_s)
            runner = web.AppRunner(self.app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
            self.loop, self.stopping = asyncio.get_running_loop(), asyncio.Event()
            ready.set()
            await self.stopping.wait()
            await runner.cleanup()
            self.store.close()

        self.thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
        self.thread.start()
        assert ready.wait(60), "the hub did not start"
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(30)
        assert not self.thread.is_alive()

    @property
    def ticks(self) -> int:
        return self.app[ROLLOUTS].ticks

    def settle(self, passes: int = 2) -> None:
        """Wait until the controller has completed `passes` passes (the first may have begun earlier)."""
        target = self.ticks + passes
        wait_for(lambda: self.ticks >= target, "controller passes")


def wait_for(cond, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def api(url, method, path, body=None, token=TOKEN):
    req = urllib.request.Request(url + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Fleet:
    """Relays and agents, simulated: follow the desired state, count frames, report."""

    def __init__(self, url, sites=SITES):
        self.url, self.sites = url, sites
        self.dev = {d: {"site": s, "active": None, "frames": 0, "shadow": None, "shadow_frames": 0, "facts": {},
                        "last_error": ""} for s, ds in sites.items() for d in ds}
        self.agreement: dict[str, float] = {}  # shadow agreement of a candidate with the active model (default 0.95)
        self.broken: dict[str, tuple[str, str]] = {}  # version -> (fact, reason) it fails with on a device
        self.silent: set[str] = set()  # devices that stop reporting

    def desired(self, site) -> dict:
        code, body = api(self.url, "GET", f"/api/v1/desired?site={site}")
        assert code in (200, 204)
        return body or {"version": None, "devices": {}, "models": {}}

    def step(self, frames: int = 40) -> None:
        for site, devices in self.sites.items():
            want = self.desired(site)
            report = []
            for d in devices:
                st = self.dev[d]
                entry = want["devices"].get(d) or {"version": want["version"], "shadow": None}
                if entry["version"] != st["active"] and entry["version"] is not None:
                    fail = self.broken.get(entry["version"])
                    if fail is None:
                        st["active"], st["frames"] = entry["version"], 0
                    elif fail[0] not in st["facts"]:
                        st["facts"] = {**st["facts"], fail[0]: entry["version"], "rollback_reason": fail[1]}
                shadow = (entry.get("shadow") or {}).get("version")
                if shadow != st["shadow"]:
                    st["shadow"], st["shadow_frames"] = shadow, 0
                st["frames"] += frames
                if shadow:
                    st["shadow_frames"] += frames
                if d in self.silent:
                    continue
                agree = round(st["shadow_frames"] * self.agreement.get(shadow, 0.95)) if shadow else 0
                report.append({"device_id": d, "status": "online", "model_version": st["active"],
                               "stats": {"frames_this_model": st["frames"], "latency_p95_ms": 20.0,
                                         "mean_confidence": 0.9, "shadow_frames": st["shadow_frames"],
                                         "shadow_agree": agree, "shadow_latency_p95_ms": 25.0,
                                         "shadow_mean_confidence": 0.88,
                                         "active_mean_confidence_on_shadow_frames": 0.9},
                               "facts": {**st["facts"], **({"shadow_version": shadow} if shadow else {})},
                               "last_error": st["last_error"]})
            code, body = api(self.url, "POST", "/api/v1/reports", {"relay_id": f"relay-{site}", "site": site,
                                                                    "devices": report})
            assert code == 200 and body == {"stored": len(report)}, body

    def assignments(self) -> dict[str, dict]:
        """device -> its per-device desired entry, over every site."""
        out = {}
        for site in self.sites:
            out.update(self.desired(site)["devices"])
        return out


REFUSED = {"passed": False, "reasons": ["slice night: 0.412 < parent 0.833 - tolerance 0.02"]}


def register(data, *versions, desired="v1"):
    store = hubdb.store(data)
    for i, v in enumerate(versions):
        metrics = {"accuracy": 0.8, **({"gate": REFUSED} if v == "v-refused" else {})}
        store.add_model(v, versions[i - 1] if i else None, f"artifact of {v}".encode(), b"state", metrics, 0)
    if desired:
        store.set_desired(desired)
    store.close()


@pytest.fixture
def hub(tmp_path):
    register(tmp_path / "hub", "v1", "v2", "v3", "v-refused")
    live = LiveHub(tmp_path / "hub").start()
    yield live
    live.stop()


@pytest.fixture
def fleet(hub):
    f = Fleet(hub.url)
    f.step()  # every device runs v1 and has reported once: the groups know their members
    return f


def start(hub, **body) -> dict:
    code, r = api(hub.url, "POST", "/api/v1/rollouts", {"model": "v2", **body})
    assert code == 201, r
    return r


def detail(hub, rid) -> dict:
    code, r = api(hub.url, "GET", f"/api/v1/rollouts/{rid}")
    assert code == 200, r
    return r


def wait_state(hub, rid, cond, what) -> dict:
    return wait_for(lambda: (lambda r: r if cond(r) else None)(detail(hub, rid)), what)


# -- the happy path ---------------------------------------------------------------------------
def test_a_good_model_goes_through_shadow_canary_and_full(hub, fleet):
    r = start(hub, stages="shadow:10%,canary:25%,full", gates={"min_frames": 30}, shadow_fraction=0.5,
              max_latency_ms=150)
    rid = r["rollout_id"]
    assert (r["state"], r["stage"], r["baseline"], r["group"]) == ("running", "shadow:10%", "v1", "all")
    shadow_members = stage_members(ALL, rid, 10)
    canary_members = stage_members(ALL, rid, 25)
    assert len(shadow_members) == 4 and len(canary_members) == 10 and shadow_members <= canary_members

    # Shadow: only the members get the candidate, beside the baseline; the others are left to the default.
    got = fleet.assignments()
    assert set(got) == shadow_members
    for entry in got.values():
        assert entry["version"] == "v1" and entry["rollout_id"] == rid and entry["max_latency_ms"] == 150
        assert entry["shadow"]["version"] == "v2" and entry["shadow"]["fraction"] == 0.5
        assert entry["shadow"]["artifact"] == "/api/v1/models/v2/artifact"
    desired = fleet.desired("site-0")
    assert desired["version"] == "v1" and desired["artifact"] == "/api/v1/models/v1/artifact"
    assert set(desired["models"]) == {"v1"} | ({"v2"} if set(desired["devices"]) else set())

    # Too few frames: the gate waits and says how many are ready.
    fleet.step(frames=10)
    hub.settle()
    r = detail(hub, rid)
    assert r["state"] == "running" and r["stage_index"] == 0
    assert r["gate"]["verdict"] == "wait" and r["gate"]["figures"]["ready"] == 0 and r["gate"]["figures"]["need"] == 4
    shadow_row = r["progress"]["stages"][0]
    assert shadow_row == {"stage": "shadow:10%", "status": "current", "members": 4, "ready": 0, "need": 4}
    assert sum(rel["assigned_shadow"] for rel in r["progress"]["relays"]) == 4
    assert sum(rel["shadow"] for rel in r["progress"]["relays"]) == 4

    # Enough frames, good agreement: on to the canary stage.
    fleet.step(frames=40)
    r = wait_state(hub, rid, lambda r: r["stage_index"] == 1, "the canary stage")
    assert r["stage"] == "canary:25%" and r["history"][-1]["event"] == "advanced"
    assert r["history"][-1]["figures"]["agreement"] >= 0.9
    assert r["progress"]["stages"][0]["status"] == "passed" and r["progress"]["stages"][0]["ready"] == 4
    got = fleet.assignments()
    assert set(got) == canary_members
    assert all(e["version"] == "v2" and e["shadow"] is None for e in got.values())
    assert set(fleet.desired("site-0")["models"]) | set(fleet.desired("site-1")["models"]) == {"v1", "v2"}

    fleet.step()
    r = wait_state(hub, rid, lambda r: r["stage_index"] == 2, "the full stage")
    assert set(fleet.assignments()) == set(ALL)
    per_relay = {rel["relay_id"]: rel for rel in r["progress"]["relays"]}
    assert per_relay["relay-site-0"]["candidate"] + per_relay["relay-site-1"]["candidate"] == 10

    fleet.step()
    r = wait_state(hub, rid, lambda r: r["state"] == "done", "done")
    assert [h["event"] for h in r["history"]] == ["started", "advanced", "advanced", "done"]
    assert all(s["status"] == "passed" for s in r["progress"]["stages"])
    # Done: the candidate is the group's desired version, and nobody needs a per-device entry any more.
    for site in SITES:
        d = fleet.desired(site)
        assert d["version"] == "v2" and d["devices"] == {} and set(d["models"]) == {"v2"}
    assert api(hub.url, "GET", "/api/v1/models")[1]["desired"] == "v2"
    # ... and the next rollout starts from it.
    assert start(hub, model="v3", stages="full")["baseline"] == "v2"


def test_a_site_group_touches_only_that_site(hub, fleet):
    r = start(hub, group="site-1", stages="canary:50%,full", gates={"min_frames": 5})
    members = stage_members(SITES["site-1"], r["rollout_id"], 50)
    assert len(members) == 10 and set(fleet.assignments()) == members
    assert fleet.desired("site-0")["devices"] == {}
    fleet.step()
    wait_state(hub, r["rollout_id"], lambda r: r["stage_index"] == 1, "full")
    fleet.step()
    wait_state(hub, r["rollout_id"], lambda r: r["state"] == "done", "done")
    assert fleet.desired("site-1")["version"] == "v2" and fleet.desired("site-0")["version"] == "v1"
    # A fleet-wide change set later supersedes the site's own row.
    assert api(hub.url, "POST", "/api/v1/desired", {"version": "v3"})[0] == 200
    assert fleet.desired("site-1")["version"] == "v3" and fleet.desired("site-0")["version"] == "v3"


# -- gates that fail --------------------------------------------------------------------------
def test_low_shadow_agreement_rolls_back_at_the_shadow_stage(hub, fleet):
    fleet.agreement["v2"] = 0.5
    rid = start(hub, stages="shadow:10%,canary:10%,full", gates={"min_frames": 30})["rollout_id"]
    fleet.step()
    r = wait_state(hub, rid, lambda r: r["state"] != "running", "a verdict")
    assert r["state"] == "rolled_back" and r["stage"] == "shadow:10%"
    assert "agreement with the active model 0.500 < 0.8" in r["reason"]
    assert r["history"][-1]["event"] == "rolled_back" and r["history"][-1]["reason"] == r["reason"]
    assert r["progress"]["stages"][0]["status"] == "rolled_back"
    assert fleet.assignments() == {} and fleet.desired("site-0")["version"] == "v1"


@pytest.mark.parametrize("fact, why", [("load_failed_version", "signature does not verify"),
                                       ("rolled_back_version", "latency p95 400 ms over the 150 ms budget")])
def test_a_canary_that_cannot_run_the_candidate_rolls_the_group_back(hub, fleet, fact, why):
    fleet.broken["v2"] = (fact, why)
    rid = start(hub, stages="canary:10%,full")["rollout_id"]
    fleet.step()
    r = wait_state(hub, rid, lambda r: r["state"] != "running", "a verdict")
    assert r["state"] == "rolled_back" and r["stage"] == "canary:10%"
    assert "could not run v2" in r["reason"] and why in r["reason"]
    assert r["gate"]["verdict"] == "fail" and r["gate"]["figures"]["failed"]
    # The first failure decides; members of the other site may not have tried it yet.
    assert sum(rel["failed"] for rel in r["progress"]["relays"]) >= 1
    assert fleet.assignments() == {}


def test_a_stage_without_reports_fails_on_its_timeout(hub, fleet):
    fleet.silent.update(ALL)  # they were seen once, then never report the candidate
    rid = start(hub, stages="shadow:10%,full", gates={"stage_timeout_s": 0.2})["rollout_id"]
    r = wait_state(hub, rid, lambda r: r["state"] != "running", "the timeout")
    assert r["state"] == "rolled_back"
    assert "only 0 of 4 devices reported 30 frames on v2 within 0.2 s" in r["reason"]


def test_devices_not_reported_for_a_while_count_as_offline(tmp_path):
    register(tmp_path / "hub", "v1", "v2")
    live = LiveHub(tmp_path / "hub", stale_s=0.3).start()
    try:
        Fleet(live.url).step()
        rid = start(live, stages="full")["rollout_id"]
        r = wait_state(live, rid, lambda r: r["progress"]["online"] == 0, "every device stale")
        assert r["progress"]["devices"] == 40 and r["state"] == "running"
    finally:
        live.stop()


# -- the operator's verbs ---------------------------------------------------------------------
def test_pause_holds_the_stage_and_resume_continues(hub, fleet):
    rid = start(hub, stages="shadow:10%,canary:10%,full")["rollout_id"]
    before = fleet.assignments()
    code, r = api(hub.url, "POST", f"/api/v1/rollouts/{rid}/pause")
    assert code == 200 and r["state"] == "paused" and r["history"][-1]["event"] == "paused"
    fleet.step()  # enough to pass the gate, but nobody judges it
    hub.settle(3)
    r = detail(hub, rid)
    assert r["state"] == "paused" and r["stage_index"] == 0 and r["history"][-1]["event"] == "paused"
    assert r["gate"] is None or r["gate"]["verdict"] == "wait"  # judged (waiting) before the pause at most
    assert fleet.assignments() == before  # desired states stay as they are
    assert api(hub.url, "POST", f"/api/v1/rollouts/{rid}/pause")[0] == 409
    code, r = api(hub.url, "POST", f"/api/v1/rollouts/{rid}/resume")
    assert code == 200 and r["state"] == "running"
    wait_state(hub, rid, lambda r: r["stage_index"] == 1, "the canary stage")
    assert api(hub.url, "POST", f"/api/v1/rollouts/{rid}/resume")[0] == 409


def test_abort_returns_the_group_to_the_baseline(hub, fleet):
    rid = start(hub, stages="canary:50%,full")["rollout_id"]
    assert len(fleet.assignments()) == 20
    code, r = api(hub.url, "POST", f"/api/v1/rollouts/{rid}/abort")
    assert code == 200 and (r["state"], r["reason"]) == ("aborted", "aborted by the operator")
    assert fleet.assignments() == {} and fleet.desired("site-1")["version"] == "v1"
    for action in ("pause", "resume", "abort", "rollback"):
        code, reply = api(hub.url, "POST", f"/api/v1/rollouts/{rid}/{action}")
        assert code == 409 and "aborted" in reply["error"]
    # The group is free again.
    assert start(hub, stages="full")["rollout_id"] != rid


def test_rollback_of_a_finished_rollout_restores_the_baseline(hub, fleet):
    rid = start(hub, stages="full")["rollout_id"]
    fleet.step()
    wait_state(hub, rid, lambda r: r["state"] == "done", "done")
    fleet.step()
    assert fleet.desired("site-0")["version"] == "v2"
    code, r = api(hub.url, "POST", f"/api/v1/rollouts/{rid}/rollback")
    assert code == 200 and (r["state"], r["reason"]) == ("rolled_back", "rolled back by the operator")
    assert fleet.desired("site-0")["version"] == "v1" and fleet.assignments() == {}
    assert api(hub.url, "GET", "/api/v1/models")[1]["desired"] == "v1"
    assert api(hub.url, "POST", f"/api/v1/rollouts/{rid}/rollback")[0] == 409


def test_rollback_of_a_running_rollout(hub, fleet):
    rid = start(hub, stages="canary:10%,full")["rollout_id"]
    code, r = api(hub.url, "POST", f"/api/v1/rollouts/{rid}/rollback")
    assert code == 200 and r["state"] == "rolled_back" and r["reason"] == "rolled back by the operator"
    assert fleet.assignments() == {}


def test_one_active_rollout_per_group(hub, fleet):
    rid = start(hub, stages="shadow:10%,full")["rollout_id"]
    for group in ("all", "site-0"):
        code, r = api(hub.url, "POST", "/api/v1/rollouts", {"model": "v3", "group": group, "stages": "full"})
        assert code == 409 and rid in r["error"]
    code, listing = api(hub.url, "GET", "/api/v1/rollouts")
    assert code == 200 and [x["rollout_id"] for x in listing["rollouts"]] == [rid]
    api(hub.url, "POST", f"/api/v1/rollouts/{rid}/abort")
    code, r = api(hub.url, "POST", "/api/v1/rollouts", {"model": "v3", "group": "site-0", "stages": "full"})
    assert code == 201 and r["rollout_id"] != rid
    # A different site does not overlap.
    code, r2 = api(hub.url, "POST", "/api/v1/rollouts", {"model": "v3", "group": "site-1", "stages": "full"})
    assert code == 201
    listing = api(hub.url, "GET", "/api/v1/rollouts")[1]["rollouts"]
    assert [x["rollout_id"] for x in listing] == [r2["rollout_id"], r["rollout_id"], rid]  # newest first


@pytest.mark.parametrize("body, code, names", [
    ({"model": "v404"}, 404, "v404"),
    ({"model": "v2", "stages": "canary:10%,shadow:10%,full"}, 400, "shadow stages come before canary"),
    ({"model": "v2", "stages": "shadow:10%"}, 400, "the last stage must be full"),
    ({"model": "v2", "stages": "shadow:abc,full"}, 400, "needs a share"),
    ({"model": "v2", "gates": {"min_agreement": 2}}, 400, "out of range: min_agreement"),
    ({"model": "v2", "gates": {"min_agremeent": 0.9}}, 400, "unknown key(s) min_agremeent"),
    ({"model": "v2", "gates": {"min_frames": "many"}}, 400, "gates.min_frames"),
    ({"model": "v2", "shadow_fraction": 0}, 400, "shadow_fraction"),
    ({"model": "v2", "max_latency_ms": -5}, 400, "max_latency_ms"),
    ({"model": "v2", "group": "a b"}, 400, "group"),
    ({"model": "v2", "stage": "full"}, 400, "unknown field(s) stage"),
    ({"model": "v1"}, 409, "already the desired model"),
    ({"model": "v-refused"}, 409, "refused by its training gate (slice night: 0.412"),
    ({"model": "v2", "force": "yes"}, 400, "force"),
])
def test_bad_rollout_requests_name_the_problem(hub, body, code, names):
    got, reply = api(hub.url, "POST", "/api/v1/rollouts", body)
    assert got == code and names in reply["error"]
    assert api(hub.url, "GET", "/api/v1/rollouts")[1]["rollouts"] == []


def test_a_model_the_gate_refused_rolls_out_only_when_forced(hub, fleet):
    code, r = api(hub.url, "POST", "/api/v1/rollouts", {"model": "v-refused", "stages": "full", "force": True})
    assert code == 201 and r["candidate"] == "v-refused"


def test_setting_the_desired_model_directly_enforces_the_training_gate_too(hub, fleet):
    # POST /api/v1/desired must not be a way round the gate that rollouts enforce.
    code, reply = api(hub.url, "POST", "/api/v1/desired", {"version": "v-refused"})
    assert code == 409 and "training gate" in reply["error"] and "slice night" in reply["error"]
    assert fleet.desired("site-0")["version"] == "v1"
    assert api(hub.url, "POST", "/api/v1/desired", {"version": "v-refused", "force": "yes"})[0] == 400
    # The explicit override works, and the audit log says who forced what past which gate.
    assert api(hub.url, "POST", "/api/v1/desired", {"version": "v-refused", "force": True})[0] == 200
    assert fleet.desired("site-0")["version"] == "v-refused"
    rows = api(hub.url, "GET", "/api/v1/audit")[1]["entries"]
    forced = [r for r in rows if "force" in (r.get("detail") or "")]
    assert len(forced) == 1 and "v-refused" in forced[0]["detail"] and forced[0]["who"] == "admin", rows


def test_the_desired_state_is_signed_for_each_device_with_a_sequence_that_only_grows(hub, fleet):
    import base64

    from edgeloop.shared.statement import open_signed

    pub = load_or_create(hub.data / "keys" / "hub.key").public_key()

    def opened(entry):
        return open_signed(pub, base64.b64decode(entry["statement"]), base64.b64decode(entry["signature"]))

    first = opened(fleet.desired("site-0"))
    assert (first.site, first.device, first.version) == ("site-0", None, "v1")
    assert first.sha256 == fleet.desired("site-0")["sha256"] and first.expires_at > time.time() + 3600
    assert opened(fleet.desired("site-0")) == first  # nothing changed: the same statement, the same seq
    rid = start(hub, stages="canary:10%,full")["rollout_id"]
    body = fleet.desired("site-0")
    canary = {d: opened(e) for d, e in body["devices"].items()}
    assert canary and all(s.device == d and s.version == "v2" and s.rollout_id == rid for d, s in canary.items())
    assert opened(body).seq > first.seq and {s.seq for s in canary.values()} == {opened(body).seq}
    assert opened(body).others == tuple(sorted(canary))  # the default says it is not for the canary devices
    # Rolled back: the devices' own entries go, and the default they fall back to outranks them.
    api(hub.url, "POST", f"/api/v1/rollouts/{rid}/rollback")
    back = opened(fleet.desired("site-0"))
    assert back.version == "v1" and back.rank > max(s.rank for s in canary.values())


def test_the_desired_sequence_only_grows_across_sites_and_starts_at_the_clock(tmp_path):
    store = hubdb.store(tmp_path / "hub")
    try:
        start = int(time.time())
        a1 = store.desired_seq("site-a", "d1")
        assert a1 >= start and store.desired_seq("site-a", "d1") == a1  # unchanged: the same number
        b1 = store.desired_seq("site-b", "d1")
        a2 = store.desired_seq("site-a", "d2")
        assert a1 < b1 < a2 and store.desired_seq("site-b", "d1") == b1
        assert store.desired_seq("site-a", "d1") > a2  # back to an earlier content: still a newer word
    finally:
        store.close()


def test_a_group_without_a_desired_model_has_nothing_to_roll_back_to(tmp_path):
    register(tmp_path / "hub", "v1", desired=None)
    live = LiveHub(tmp_path / "hub").start()
    try:
        code, reply = api(live.url, "POST", "/api/v1/rollouts", {"model": "v1", "stages": "full"})
        assert code == 409 and "no desired model yet" in reply["error"]
        assert api(live.url, "GET", "/api/v1/desired?site=site-0")[0] == 204
    finally:
        live.stop()


def test_unknown_rollouts_and_actions_are_404(hub):
    assert api(hub.url, "GET", "/api/v1/rollouts/r9")[0] == 404
    assert api(hub.url, "POST", "/api/v1/rollouts/r9/pause")[0] == 404
    rid = start(hub, stages="full")["rollout_id"]
    code, reply = api(hub.url, "POST", f"/api/v1/rollouts/{rid}/explode")
    assert code == 404 and "explode" in reply["error"]
    assert api(hub.url, "GET", "/api/v1/rollouts", token="wrong")[0] == 401


# -- restart ----------------------------------------------------------------------------------
def test_a_hub_restarted_mid_rollout_carries_on(tmp_path):
    register(tmp_path / "hub", "v1", "v2")
    first = LiveHub(tmp_path / "hub").start()
    fleet = Fleet(first.url)
    fleet.step()
    rid = start(first, stages="shadow:10%,canary:25%,full", gates={"min_frames": 30})["rollout_id"]
    fleet.step()
    wait_state(first, rid, lambda r: r["stage_index"] == 1, "the canary stage")
    canaries = fleet.assignments()
    first.stop()

    second = LiveHub(tmp_path / "hub").start()
    try:
        fleet.url = second.url
        r = detail(second, rid)
        assert (r["state"], r["stage"]) == ("running", "canary:25%") and fleet.assignments() == canaries
        fleet.step()
        wait_state(second, rid, lambda r: r["stage_index"] == 2, "the full stage")
        fleet.step()
        r = wait_state(second, rid, lambda r: r["state"] == "done", "done")
        assert fleet.desired("site-0")["version"] == "v2"
    finally:
        second.stop()


# -- the command line -------------------------------------------------------------------------
def cli(hub, *args):
    return CliRunner().invoke(main, ["rollout", *args[:1], "--hub", hub.url, "--token", TOKEN, *args[1:]])


def test_the_rollout_commands_against_a_live_hub(hub, fleet):
    fleet.agreement["v2"] = 0.4
    out = cli(hub, "start", "--model", "v2", "--stages", "shadow:10%,canary:10%,full", "--gate", "min_frames=30",
              "--gate", "min_agreement=0.9", "--shadow-fraction", "0.5")
    assert out.exit_code == 0, out.output
    assert "rollout r1 started: v2 over v1 to group all" in out.output

    out = cli(hub, "status", "r1")
    assert out.exit_code == 0, out.output
    assert "state: running, stage 1/3 shadow:10%" in out.output and "40/40 devices online" in out.output
    assert "relay-site-0" in out.output and "relay-site-1" in out.output
    assert "members 4" in out.output

    assert "is paused" in cli(hub, "pause", "r1").output
    assert "is running" in cli(hub, "resume", "r1").output

    fleet.step()
    out = cli(hub, "status", "r1", "--watch", "--interval", "0.05")
    assert out.exit_code == 0, out.output
    assert "state: rolled_back" in out.output
    assert "reason: shadow:10%: agreement with the active model 0.400 < 0.9" in out.output
    assert "shadow:10%   rolled_back" in out.output

    out = cli(hub, "status")
    assert out.exit_code == 0 and "r1" in out.output and "rolled_back" in out.output and "* v1" in out.output


def test_cli_errors_are_messages(hub, fleet):
    out = cli(hub, "pause", "r42")
    assert out.exit_code == 2 and "error: no rollout 'r42'" in out.output and "Traceback" not in out.output
    out = cli(hub, "start", "--model", "v2", "--gate", "min_agremeent=0.9")
    assert out.exit_code == 2 and "unknown key(s) min_agremeent" in out.output
    out = cli(hub, "start", "--model", "v2", "--gate", "min_frames")
    assert out.exit_code == 2 and "key=number" in out.output
    out = cli(hub, "start", "--model", "v2", "--stages", "full,shadow:5%")
    assert out.exit_code == 2 and "error: --stages" in out.output
