"""The hub read as an attacker would (issue 18), against real hub processes on loopback: a relay's
token speaks only for its own relay id and sites; a hub is never open unless started --open on
loopback; revocation is by exact name; sign-in sends nobody to another host."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import numpy as np
import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from edgeloop.hub.campaigns_api import MAX_ACTIVE, MAX_QUOTA
from edgeloop.hub.pages import _local
from edgeloop.hub.throttle import Throttle
from edgeloop.relay.campaigns import campaigns_from_hub
from edgeloop.shared.protocol import MAX_ITEMS
from edgeloop.procs import Service
from edgeloop.shared.protocol import SampleBatch, encode

import hubdb
from factories import HUB_TOKEN, make_candidate, start_hub
from test_hub_api import call
from test_hub_labeling import jcall, queued
from test_relay_hub_answers import DEVICE, site  # noqa: F401 - a fixture: mosquitto, a hub, a relay
from test_relay_share import get, wait

pytestmark = pytest.mark.e2e


def edgeloop(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeloop", *args], check=check, capture_output=True, text=True,
                          timeout=60)


def add_token(data, name: str, role: str, *extra: str) -> str:
    return edgeloop("hub", "token", "add", "--data", str(data), *hubdb.args(data), "--name", name, "--role", role,
                    *extra).stdout.strip()


def raw(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """One request, redirects not followed -> (status, headers, body bytes)."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def samples(site: str, source: str, n: int = 1) -> bytes:
    return encode(SampleBatch(source=source, site=site, samples=tuple(make_candidate() for _ in range(n))))


def report(site: str, relay_id: str, device: str = "cam-1") -> dict:
    return {"relay_id": relay_id, "site": site, "devices": [
        {"device_id": device, "status": "online", "model_version": "v0", "stats": {}, "facts": {}, "last_error": ""}]}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub-security")
    data = root / "data"
    svc, url = start_hub(root, data=data)
    yield url, data
    assert svc.stop() == 0


# -- 1. a relay's token is bound to its relay id and site(s) ----------------------------------------
def test_a_relays_credentials_used_against_another_site_are_refused_and_store_nothing(hub):
    url, data = hub
    tok = add_token(data, "relay-a", "relay", "--site", "site-a")
    before = jcall(url, "GET", "/api/v1/stats")[1]["samples"]
    # Its own site and id: accepted.
    status, reply = call(url, "POST", "/api/v1/samples", samples("site-a", "relay-a"), token=tok)
    assert status == 200 and len(reply["stored"]) == 1
    assert jcall(url, "POST", "/api/v1/reports", report("site-a", "relay-a"), token=tok)[0] == 200
    # Another site, or another relay's id: 403, a JSON error that names the binding, nothing stored.
    for site, source in (("site-b", "relay-a"), ("site-a", "relay-b"), ("site-b", "relay-b")):
        status, reply = call(url, "POST", "/api/v1/samples", samples(site, source, 3), token=tok)
        assert status == 403 and "relay-a" in reply["error"], reply
        assert "refused" not in reply  # not the typed batch refusal: the relay keeps the samples and retries
        status, reply = jcall(url, "POST", "/api/v1/reports", report(site, source, "cam-9"), token=tok)
        assert status == 403 and "relay-a" in reply["error"], reply
    status, reply = jcall(url, "GET", "/api/v1/desired?site=site-b", token=tok)
    assert status == 403 and "site-b" in reply["error"]
    assert jcall(url, "GET", "/api/v1/stats")[1]["samples"] == before + 1
    # Another site's relay, with its own valid binding, cannot pull site-a's live device into site-b.
    tok_b = add_token(data, "relay-b", "relay", "--site", "site-b")
    status, reply = jcall(url, "POST", "/api/v1/reports", report("site-b", "relay-b", "cam-1"), token=tok_b)
    assert status == 403 and "'cam-1' is live at site 'site-a'" in reply["error"]
    devices = jcall(url, "GET", "/api/v1/devices")[1]["devices"]
    assert [d["site"] for d in devices if d["device_id"] == "cam-1"] == ["site-a"]
    assert not [d for d in devices if d["device_id"] == "cam-9"]


def test_a_relay_token_with_several_sites_posts_for_each_and_a_person_or_admin_is_not_bound(hub):
    url, data = hub
    tok = add_token(data, "gw-7", "relay", "--relay-id", "relay-7", "--site", "north", "--site", "south")
    for site in ("north", "south"):
        assert call(url, "POST", "/api/v1/samples", samples(site, "relay-7"), token=tok)[0] == 200
    assert call(url, "POST", "/api/v1/samples", samples("north", "gw-7"), token=tok)[0] == 403  # the id, not the name
    assert call(url, "POST", "/api/v1/samples", samples("anywhere", "any-relay"), token=HUB_TOKEN)[0] == 200
    listing = edgeloop("hub", "token", "list", "--data", str(data), *hubdb.args(data)).stdout
    assert "relay relay-7 for north,south" in next(line for line in listing.splitlines() if " gw-7 " in line)


def test_a_relay_token_must_be_made_with_a_site_and_only_a_relays_takes_one(hub):
    _, data = hub
    run = edgeloop("hub", "token", "add", "--data", str(data), *hubdb.args(data), "--name", "r", "--role", "relay",
                   check=False)
    assert run.returncode != 0 and "--site" in run.stderr
    run = edgeloop("hub", "token", "add", "--data", str(data), *hubdb.args(data), "--name", "al", "--role",
                   "labeler", "--site", "s", check=False)
    assert run.returncode != 0 and "--role relay" in run.stderr


def test_an_unbound_relay_token_from_before_binding_posts_nothing(hub):
    url, data = hub
    from edgeloop.hub.auth import new_token, token_hash

    tok = new_token()
    store = hubdb.store(data)
    store.add_token(token_hash(tok), "old-relay", "relay")  # as `token add` made relay tokens before
    store.close()
    status, reply = call(url, "POST", "/api/v1/samples", samples("site-a", "old-relay"), token=tok)
    assert status == 403 and "--relay-id" in reply["error"]


# -- 2. secure by default -------------------------------------------------------------------------
def sign_in_link(svc: Service, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(r"Sign in: (\S+)", svc.log_path.read_text(errors="replace"))
        if m:
            return m.group(1)
        time.sleep(0.1)
    raise AssertionError(f"no sign-in link in the hub's log:\n{svc.tail()}")


def serve(hub, root, name: str, *extra: str) -> Service:
    data = root / name
    golden = hub[1].parent / "golden.npz"  # written by start_hub for the module's hub
    args = ["hub", "serve", "--data", str(data), "--golden", str(golden), "--port", "0", *extra, *hubdb.args(data)]
    return Service.edgeloop(name, args, root / "logs", ready=True)


def test_a_hub_without_credentials_makes_an_admin_token_prints_a_link_and_stays_closed_when_it_is_revoked(
        hub, tmp_path):
    url0, _ = hub
    svc = serve(hub, tmp_path, "fresh").start()
    try:
        url = svc.wait_ready(timeout=60)["url"]
        link = sign_in_link(svc)
        token = re.search(r"token=(elt_[\w-]+)", link).group(1)
        assert link.startswith(url + "/login?token=")
        assert jcall(url, "GET", "/api/v1/stats", token=None)[0] == 401  # not open: it has a token
        assert jcall(url, "GET", "/api/v1/stats", token=token)[0] == 200
        status, headers, _ = raw(url, "GET", urlsplit(link).path + "?" + urlsplit(link).query)
        assert status == 302 and headers["Location"] == "/" and "HttpOnly" in headers["Set-Cookie"]
        data = tmp_path / "fresh"
        listing = edgeloop("hub", "token", "list", "--data", str(data), *hubdb.args(data)).stdout
        assert re.search(r"\badmin\s+admin\b", listing) and token not in listing
        edgeloop("hub", "token", "revoke", "--data", str(data), *hubdb.args(data), "admin")
        # The last token is gone: nobody gets in, least of all as admin.
        assert jcall(url, "GET", "/api/v1/stats", token=None)[0] == 401
        assert jcall(url, "POST", "/api/v1/desired", {"version": "v1"}, token=None)[0] == 401
    finally:
        assert svc.stop() == 0
    # A restart makes no second token (one was made) and is not open either.
    again = serve(hub, tmp_path, "fresh").start()
    try:
        url = again.wait_ready(timeout=60)["url"]
        assert jcall(url, "GET", "/api/v1/stats", token=None)[0] == 401
        assert again.log_path.read_text().count("Sign in:") == 1  # the first run's line only (same log file)
    finally:
        assert again.stop() == 0


def test_open_mode_is_explicit_and_loopback_only(hub, tmp_path):
    refused = serve(hub, tmp_path, "wide", "--open", "--host", "0.0.0.0").start()
    assert refused.proc.wait(timeout=60) != 0
    assert "loopback only" in refused.tail()
    svc = serve(hub, tmp_path, "open", "--open").start()
    try:
        url = svc.wait_ready(timeout=60)["url"]
        assert jcall(url, "GET", "/api/v1/stats", token=None)[0] == 200
        assert "Sign in:" not in svc.log_path.read_text()
        # Anyone is admin here, so a write from another site's page (no preflight: text/plain) or
        # through a rebound DNS name is refused, as a signed-in browser's would be.
        policy = json.dumps({"paused": True}).encode()
        assert raw(url, "POST", "/api/v1/policy", policy, {"Content-Type": "text/plain"})[0] == 415
        assert raw(url, "POST", "/api/v1/policy", policy, {"Content-Type": "application/json",
                                                          "Sec-Fetch-Site": "cross-site"})[0] == 403
        assert raw(url, "GET", "/api/v1/stats", None, {"Host": "attacker.example"})[0] == 403
        assert raw(url, "POST", "/api/v1/policy", policy, {"Content-Type": "application/json"})[0] == 200
    finally:
        assert svc.stop() == 0


def test_revoke_takes_an_exact_name_not_a_pattern(hub):
    url, data = hub
    toks = {name: add_token(data, name, "labeler") for name in ("lab_1", "labx1")}
    run = edgeloop("hub", "token", "revoke", "--data", str(data), *hubdb.args(data), "________", check=False)
    assert run.returncode != 0 and "no live token" in run.stderr
    assert "revoked 1 token(s)" in edgeloop("hub", "token", "revoke", "--data", str(data), *hubdb.args(data),
                                           "lab_1").stdout
    assert jcall(url, "GET", "/api/v1/stats", token=toks["lab_1"])[0] == 401
    assert jcall(url, "GET", "/api/v1/stats", token=toks["labx1"])[0] == 200


# -- 7. sign-in sends nobody elsewhere ------------------------------------------------------------
@pytest.mark.parametrize("target", ["/\t/evil.example", "/%09/evil.example", "//evil.example", "/\\evil.example",
                                    "https://evil.example/", "/\n/evil.example", " //evil.example"])
def test_sign_in_redirects_only_to_a_path_on_this_hub(hub, target):
    url, _ = hub
    form = urlencode({"token": HUB_TOKEN, "next": target}).encode()
    status, headers, _ = raw(url, "POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 302
    assert urlsplit(urljoin(url + "/", headers["Location"].replace("\t", ""))).netloc == urlsplit(url).netloc
    status, headers, _ = raw(url, "GET", "/login?" + urlencode({"token": HUB_TOKEN, "next": target}))
    assert status == 302 and urlsplit(urljoin(url + "/", headers["Location"])).netloc == urlsplit(url).netloc


def test_the_reported_redirect_goes_home(hub):
    url, _ = hub
    status, headers, _ = raw(url, "GET", f"/login?token={HUB_TOKEN}&next=/%09/evil")  # as reported in issue 18
    assert status == 302 and headers["Location"] == "/"


@given(st.text(alphabet=st.sampled_from("/\\\t\n\r .:@%?#abc"), max_size=12))
@example("/\t/a")
@example("/\\a")
def test_the_next_target_resolves_to_this_host_whatever_it_holds(target):
    # Browsers strip tabs and newlines from URLs and read a backslash in a path as a slash.
    kept = _local(target)
    seen = kept.replace("\t", "").replace("\n", "").replace("\r", "").replace("\\", "/")
    assert urlsplit(urljoin("https://hub.example/x", seen)).netloc == "hub.example"
    assert kept.startswith("/")


# -- 5. a labeler cannot overwrite or erase other people's labels -----------------------------------
def test_a_labeler_cannot_overwrite_or_mark_ambiguous_another_persons_label(hub):
    url, data = hub
    alice, bob, erin = (add_token(data, n, r) for n, r in (("alice", "labeler"), ("bob", "labeler"),
                                                              ("erin", "engineer")))
    a, b, c = queued(url, 3)
    assert jcall(url, "POST", "/api/v1/labels", {"labels": {a: 1, b: 2}}, token=alice)[0] == 200

    def mine() -> dict:
        return {r["sample_id"]: (r["label"], r["source"]) for r in jcall(url, "GET", "/api/v1/labels")[1]["labels"]}

    status, reply = jcall(url, "POST", "/api/v1/labels", {"labels": {a: 5, c: 3}}, token=bob)
    assert status == 403 and f"{a} was labeled by alice" in reply["error"]
    status, reply = jcall(url, "POST", "/api/v1/labels", {"ambiguous": [b]}, token=bob)
    assert status == 403 and f"{b} was labeled by alice" in reply["error"]
    assert mine()[a] == (1, "alice") and mine()[b] == (2, "alice") and c not in mine()  # all or nothing
    # Her own, she may change; an engineer may overrule her.
    assert jcall(url, "POST", "/api/v1/labels", {"labels": {a: 4}}, token=alice)[0] == 200
    assert jcall(url, "POST", "/api/v1/labels", {"ambiguous": [b]}, token=erin)[0] == 200
    assert mine()[a] == (4, "alice") and b not in mine()
    # Bob may label what nobody has, and the sample erin marked is now hers.
    assert jcall(url, "POST", "/api/v1/labels", {"labels": {c: 3}}, token=bob)[0] == 200
    assert jcall(url, "POST", "/api/v1/labels", {"labels": {b: 3}}, token=bob)[0] == 403


# -- 3. campaigns: an engineer's, bounded, deletable; a relay truncates rather than fails -------------
def test_campaigns_need_an_engineer_stay_within_bounds_and_can_be_ended(hub):
    url, data = hub
    labeler, engineer = add_token(data, "lena", "labeler"), add_token(data, "emil", "engineer")
    ids = queued(url, 2, seed=5)
    ok = {"sample_ids": ids, "threshold": 0.1, "quota": 50, "ttl_s": 3600}
    status, reply = jcall(url, "POST", "/api/v1/campaigns", ok, token=labeler)
    assert status == 403 and "lena (labeler) may not POST /api/v1/campaigns" in reply["error"]
    for bad, field in (({"threshold": 2}, "threshold"), ({"quota": 1_000_000}, "quota"), ({"quota": MAX_QUOTA + 1}, "quota"),
                       ({"ttl_s": 365 * 86400}, "ttl_s")):
        status, reply = jcall(url, "POST", "/api/v1/campaigns", {**ok, **bad}, token=engineer)
        assert status == 400 and reply["error"].startswith(field), (bad, reply)
    made = [jcall(url, "POST", "/api/v1/campaigns", ok, token=engineer) for _ in range(MAX_ACTIVE)]
    assert all(status == 200 for status, _ in made)
    status, reply = jcall(url, "POST", "/api/v1/campaigns", ok, token=engineer)
    assert status == 409 and f"{MAX_ACTIVE} campaigns are active" in reply["error"]
    first = made[0][1]["campaign_id"]
    assert jcall(url, "DELETE", f"/api/v1/campaigns/{first}", token=labeler)[0] == 403
    assert jcall(url, "DELETE", f"/api/v1/campaigns/{first}", token=engineer) == (200, {"campaign_id": first,
                                                                                      "ended": True})
    assert jcall(url, "DELETE", f"/api/v1/campaigns/{first}", token=engineer)[0] == 404  # ended already
    active = [c["campaign_id"] for c in jcall(url, "GET", "/api/v1/campaigns")[1]["campaigns"]]
    assert first not in active and len(active) == MAX_ACTIVE - 1
    assert jcall(url, "POST", "/api/v1/campaigns", ok, token=engineer)[0] == 200  # room again
    for cid in active:  # leave the module's hub without campaigns
        jcall(url, "DELETE", f"/api/v1/campaigns/{cid}")


def hub_campaign(i: int, **over) -> dict:
    return {"campaign_id": f"cmp-{i}", "exemplars": [[0.1] * 8], "threshold": 0.1, "quota": 5,
            "expires_at": time.time() + 60, **over}


def test_a_relay_takes_at_most_a_sites_worth_of_campaigns_and_skips_bad_ones():
    listed = [hub_campaign(i) for i in range(MAX_ITEMS + 10)]
    listed[3] = hub_campaign(3, threshold=7.0)  # no agent would take it
    listed[5] = {"campaign_id": "cmp-5"}  # fields missing
    got = campaigns_from_hub({"campaigns": listed})
    assert len(got) == MAX_ITEMS and {"cmp-3", "cmp-5"}.isdisjoint(c.campaign_id for c in got)
    assert [c.campaign_id for c in got][:3] == ["cmp-0", "cmp-1", "cmp-2"]  # the oldest kept
    assert campaigns_from_hub({"campaigns": "no"}) == () and campaigns_from_hub([]) == ()


def test_a_relay_keeps_reporting_and_reading_its_model_when_the_hub_lists_too_many_campaigns(site):
    from factories import make_candidate

    cands = [make_candidate(embedding=np.full(8, 0.5 + i, np.float16)) for i in range(2)]
    assert call(site["hub"], "POST", "/api/v1/samples", samples_of(cands))[0] == 200
    store = hubdb.store(site["hub_data"])
    for _ in range(MAX_ITEMS + 6):  # as many as an unbounded hub let anyone make
        store.add_campaign([c.sample_id for c in cands], 0.1, 5, 3600)
    store.close()
    _, relay_url = site["relay"](site["hub"])
    wait("the relay's device report at the hub", lambda: any(
        d["device_id"] == DEVICE for d in jcall(site["hub"], "GET", "/api/v1/devices")[1]["devices"]), 30)
    assert len(get(relay_url + "/status")["campaigns"]) == MAX_ITEMS


def samples_of(cands) -> bytes:
    return encode(SampleBatch(source="lab", site="lab", samples=tuple(cands)))


# -- 6. strangers cannot fill the audit log -------------------------------------------------------------
def test_unauthenticated_writes_are_logged_within_a_budget_and_cut_short(hub):
    url, data = hub
    def strangers() -> list[dict]:
        return [e for e in jcall(url, "GET", "/api/v1/audit?limit=1000&who=unknown")[1]["entries"]]

    before = len(strangers())
    long_path = "/api/v1/labels/" + "x" * 7000
    for _ in range(200):
        assert raw(url, "POST", long_path, b"{}", {"Content-Type": "application/json"})[0] == 401
    logged = strangers()[: len(strangers()) - before]
    assert 1 <= len(logged) <= 25  # the burst (20) and what refilled while the 200 were sent
    assert all(len(e["path"]) < 250 and e["path"].startswith("/api/v1/labels/xxx") for e in logged)
    # Once the budget refills (1 a second), the next one logged counts those left out.
    time.sleep(2.5)
    for _ in range(3):
        raw(url, "POST", "/api/v1/train", b"{}", {"Content-Type": "application/json"})
    newest = jcall(url, "GET", "/api/v1/audit?limit=3&who=unknown")[1]["entries"]
    counted = [int(m.group(1)) for e in newest if (m := re.match(r"(\d+) more refused writes", e["detail"] or ""))]
    assert len(counted) == 1 and 150 <= counted[0] <= 200 - len(logged), newest
    # A known caller's refused writes are all logged: they are not a stranger's to make in bulk.
    lab = add_token(data, "lars", "labeler")
    for _ in range(30):
        assert jcall(url, "POST", "/api/v1/train", {}, token=lab)[0] == 403
    assert len(jcall(url, "GET", "/api/v1/audit?limit=1000&who=lars")[1]["entries"]) == 30


@given(st.lists(st.tuples(st.floats(0, 5), st.text(alphabet="ab", max_size=1)), max_size=200))
def test_a_throttle_never_grants_a_key_more_than_its_burst_and_refill(steps):
    now = [0.0]
    t = Throttle(per_s=2.0, burst=5, clock=lambda: now[0])
    granted: dict[str, int] = {}
    for dt, key in steps:
        now[0] += dt
        granted[key] = granted.get(key, 0) + t.take(key)
    for key, n in granted.items():
        assert n <= 5 + 2.0 * now[0] + 1e-9


# -- 8. CSRF: a session id in the cookie, JSON and same-origin writes only, a sign-out, a throttled /login --
def sign_in(url: str, token: str = HUB_TOKEN) -> str:
    """-> the Set-Cookie header of a sign-in."""
    status, headers, _ = raw(url, "POST", "/login", urlencode({"token": token, "next": "/label"}).encode(),
                             {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 302, status
    return headers["Set-Cookie"]


def cookie_of(set_cookie: str) -> str:
    return set_cookie.split(";")[0]


def test_the_cookie_holds_a_session_not_the_token_and_a_sign_out_ends_it(hub):
    url, _ = hub
    set_cookie = sign_in(url)
    assert HUB_TOKEN not in set_cookie and "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    assert "Secure" not in set_cookie  # plain HTTP on loopback: a Secure cookie would never come back
    cookie = cookie_of(set_cookie)
    assert raw(url, "GET", "/api/v1/stats", headers={"Cookie": cookie})[0] == 200
    status, headers, _ = raw(url, "POST", "/logout", headers={"Cookie": cookie})
    assert status == 302 and headers["Location"] == "/login" and 'edgeloop_session=""' in headers["Set-Cookie"]
    assert raw(url, "GET", "/api/v1/stats", headers={"Cookie": cookie})[0] == 401  # the session is gone ...
    assert jcall(url, "GET", "/api/v1/stats")[0] == 200  # ... not the token


def test_a_signed_in_write_must_be_json_and_from_this_origin(hub):
    url, _ = hub
    (s,) = queued(url, 1)
    cookie = cookie_of(sign_in(url))
    body = json.dumps({"labels": {s: 1}}).encode()
    # A cross-site form can send text/plain with the cookie when SameSite is not honoured: refused.
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        status, _, reply = raw(url, "POST", "/api/v1/labels", body, {"Cookie": cookie, "Content-Type": ctype})
        assert status == 415 and "application/json" in json.loads(reply)["error"], ctype
    for extra in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                  {"Sec-Fetch-Site": "same-site"}):
        status, _, reply = raw(url, "POST", "/api/v1/labels", body,
                               {"Cookie": cookie, "Content-Type": "application/json", **extra})
        assert status == 403 and "another" in json.loads(reply)["error"], extra
    assert s not in {r["sample_id"] for r in jcall(url, "GET", "/api/v1/labels")[1]["labels"]}
    # Our own page's write: JSON, same origin.
    status, _, _ = raw(url, "POST", "/api/v1/labels", body, {
        "Cookie": cookie, "Content-Type": "application/json", "Origin": url, "Sec-Fetch-Site": "same-origin"})
    assert status == 200
    # A machine's bearer token is not a browser's cookie: no Origin rules for it.
    assert call(url, "POST", "/api/v1/labels", body, ctype="text/plain")[0] == 200


def test_sign_in_is_throttled_and_a_secure_cookie_is_available_behind_a_proxy(hub, tmp_path):
    svc = serve(hub, tmp_path, "throttled", "--token", "t-admin", "--secure-cookies").start()
    try:
        url = svc.wait_ready(timeout=60)["url"]
        assert "Secure" in sign_in(url, "t-admin")
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        statuses = [raw(url, "POST", "/login", urlencode({"token": f"elt_guess{i}"}).encode(), form)[0]
                    for i in range(15)]
        assert statuses[:10] == [401] * 10 and set(statuses[10:]) == {429}, statuses
        # Throttled means throttled: not even the right token is tried until the budget refills.
        assert raw(url, "POST", "/login", urlencode({"token": "t-admin"}).encode(), form)[0] == 429
        # Bearer calls are not sign-ins: untouched.
        assert jcall(url, "GET", "/api/v1/stats", token="t-admin")[0] == 200
    finally:
        assert svc.stop() == 0


# -- 9. the shipped Kubernetes secret is a template the hub refuses to run with ------------------------
def test_the_shipped_k8s_secrets_placeholders_stop_the_hub_with_a_clear_message(tmp_path):
    secret = yaml.safe_load((Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "secret.yaml").read_text())
    values = secret["stringData"]
    (tmp_path / "hub.key").write_text(values["hub.key"])
    for env, argv in (({"EDGELOOP_HUB_TOKENS": values["EDGELOOP_HUB_TOKENS"]}, []),
                      ({"EDGELOOP_HUB_DB": values["EDGELOOP_HUB_DB"]}, ["--token", "t-admin"]),
                      ({}, ["--token", "t-admin", "--key", str(tmp_path / "hub.key")])):
        run = subprocess.run([sys.executable, "-m", "edgeloop", "hub", "serve", "--data", str(tmp_path / "d"),
                              "--port", "0", *argv], env={**os.environ, **env}, capture_output=True, text=True,
                             timeout=30)
        assert run.returncode == 2 and "placeholder" in run.stderr, (env, argv, run.stderr[-500:])
