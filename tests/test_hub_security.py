"""The hub read as an attacker would (issue 18), against real hub processes on loopback: a relay's
token speaks only for its own relay id and sites; a hub is never open unless started --open on
loopback; revocation is by exact name; sign-in sends nobody to another host."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import time
from urllib.parse import urlencode, urljoin, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeloop.hub.pages import _local
from edgeloop.procs import Service
from edgeloop.shared.protocol import SampleBatch, encode

import hubdb
from factories import HUB_TOKEN, make_candidate, start_hub
from test_hub_api import call
from test_hub_labeling import jcall

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
def test_the_next_target_resolves_to_this_host_whatever_it_holds(target):
    # Browsers strip tabs and newlines from URLs and read a backslash in a path as a slash.
    kept = _local(target)
    seen = kept.replace("\t", "").replace("\n", "").replace("\r", "").replace("\\", "/")
    assert urlsplit(urljoin("https://hub.example/x", seen)).netloc == "hub.example"
    assert kept.startswith("/")
