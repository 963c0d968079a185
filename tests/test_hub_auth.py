"""Roles at the hub, against a real hub process: tokens made by `edgeloop hub token`, stored hashed,
revocable at once; a labeler cannot start a rollout or undo someone else's label (403); a relay's
token posts samples but cannot label; every write is in the audit log with who made it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeloop.hub.auth import ROLES, allowed

import hubdb
from factories import make_candidate, start_hub
from test_hub_api import batch, call
from test_hub_labeling import jcall, queued

pytestmark = pytest.mark.e2e


def edgeloop(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "edgeloop", *args], check=True, capture_output=True,
                          text=True, timeout=60).stdout.strip()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub-auth")
    data = root / "data"
    svc, url = start_hub(root, data=data)
    tokens = {name: edgeloop("hub", "token", "add", "--data", str(data), *hubdb.args(data), "--name", name,
                             "--role", role, *(["--relay-id", "relay-t", "--site", "site-t"] if role == "relay" else []))
              for name, role in (("alice", "labeler"), ("bob", "labeler"), ("erin", "engineer"),
                                 ("otto", "operator"), ("relay-a", "relay"))}
    yield url, data, tokens
    assert svc.stop() == 0


def test_a_labeler_labels_but_cannot_start_a_rollout_or_undo_another_labelers_work(hub):
    url, _, tok = hub
    a, b = queued(url, 2)
    assert jcall(url, "POST", "/api/v1/labels", {"labels": {a: 1}}, token=tok["alice"])[0] == 200
    assert jcall(url, "POST", "/api/v1/labels", {"labels": {b: 2}, "source": "mallory"}, token=tok["bob"])[0] == 200
    labels = {r["sample_id"]: r["source"] for r in jcall(url, "GET", "/api/v1/labels")[1]["labels"]}
    assert labels[a] == "alice" and labels[b] == "bob"  # attribution is the caller's, not the body's

    status, reply = jcall(url, "POST", "/api/v1/rollouts", {"model": "v1"}, token=tok["alice"])
    assert status == 403 and "alice (labeler) may not POST /api/v1/rollouts" in reply["error"]
    status, reply = jcall(url, "DELETE", f"/api/v1/labels/{b}", token=tok["alice"])
    assert status == 403 and "labeled by bob" in reply["error"]
    assert jcall(url, "POST", "/api/v1/train", {"epochs": 1}, token=tok["alice"])[0] == 403
    assert jcall(url, "DELETE", f"/api/v1/labels/{a}", token=tok["alice"])[0] == 200  # her own: fine
    labels = {r["sample_id"]: r["source"] for r in jcall(url, "GET", "/api/v1/labels")[1]["labels"]}
    assert a not in labels and labels[b] == "bob"  # the refused undo changed nothing
    # An operator may start rollouts (this one fails only because there is no such model).
    assert jcall(url, "POST", "/api/v1/rollouts", {"model": "v-none"}, token=tok["otto"])[0] == 404
    assert jcall(url, "POST", "/api/v1/labels", {"labels": {b: 3}}, token=tok["otto"])[0] == 403


def test_a_relay_token_posts_samples_but_cannot_label_or_open_pages(hub):
    url, _, tok = hub
    c = make_candidate()
    assert call(url, "POST", "/api/v1/samples", batch(c), token=tok["relay-a"])[0] == 200
    assert jcall(url, "GET", "/api/v1/desired?site=site-t", token=tok["relay-a"])[0] in (200, 204)
    assert jcall(url, "POST", "/api/v1/labels", {"labels": {c.sample_id: 1}}, token=tok["relay-a"])[0] == 403
    assert jcall(url, "GET", "/api/v1/label-queue", token=tok["relay-a"])[0] == 403


def test_every_write_is_in_the_audit_log_with_who_made_it(hub):
    url, _, tok = hub
    (s,) = queued(url, 1)
    jcall(url, "POST", "/api/v1/labels", {"labels": {s: 4}}, token=tok["erin"])
    jcall(url, "POST", "/api/v1/rollouts", {"model": "v1"}, token=tok["erin"])  # refused: not an operator
    jcall(url, "POST", "/api/v1/labels", {"labels": {s: 4}}, token="elt_wrong")
    log = jcall(url, "GET", "/api/v1/audit?limit=20")[1]["entries"]
    mine = [(e["who"], e["role"], e["method"], e["path"], e["status"]) for e in log if e["who"] == "erin"]
    assert mine[:2] == [("erin", "engineer", "POST", "/api/v1/rollouts", 403),
                        ("erin", "engineer", "POST", "/api/v1/labels", 200)]
    assert log[0]["who"] == "unknown" and log[0]["status"] == 401
    assert ("admin", "POST", "/api/v1/samples", 200) in [(e["who"], e["method"], e["path"], e["status"]) for e in log]
    assert all(e["method"] != "GET" for e in log)  # reads are not writes


def test_tokens_are_stored_hashed_and_a_revoked_one_is_refused_at_once(hub):
    url, data, tok = hub
    raw = hubdb.raw(data)
    assert b"relay-a" in raw and all(t.encode() not in raw for t in tok.values())
    assert jcall(url, "GET", "/api/v1/stats", token=tok["bob"])[0] == 200
    revoked = edgeloop("hub", "token", "revoke", "--data", str(data), *hubdb.args(data), "bob")
    assert "revoked 1 token(s) of bob" in revoked
    status, reply = jcall(url, "GET", "/api/v1/stats", token=tok["bob"])
    assert status == 401 and "token" in reply["error"]
    listing = edgeloop("hub", "token", "list", "--data", str(data), *hubdb.args(data))
    assert any(line.split()[1] == "bob" and "revoked" in line for line in listing.splitlines())


@given(st.sampled_from(["POST", "DELETE", "PUT"]), st.sampled_from([
    "/api/v1/rollouts", "/api/v1/rollouts/{rollout_id}/{action}", "/api/v1/desired", "/api/v1/train",
    "/api/v1/selection", "/api/v1/models", "/api/v1/samples", "/api/v1/reports", "/api/v1/campaigns",
    "/api/v1/campaigns/{campaign_id}"]))
def test_a_labeler_may_write_nothing_but_labels(method, route):
    assert not allowed("labeler", method, route)
    assert allowed("admin", method, route)


@given(st.sampled_from(ROLES))
def test_every_person_role_may_read_and_a_relay_only_what_it_needs(role):
    assert allowed(role, "GET", "/api/v1/desired")
    assert allowed(role, "GET", "/api/v1/label-queue") == (role != "relay")
