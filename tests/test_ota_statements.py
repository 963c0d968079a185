"""OTA downgrade and freeze: an agent acts only on the hub's signed desired statement, never on a
lower sequence than one it accepted, never on an expired one, and says so in its state. A real
agent process against a real mosquitto, with a forged `desired` publish standing in for a
compromised relay (the rig of test_agent_shadow; models served over real HTTP)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from edgeloop.shared.protocol import DesiredModel

from factories import signed_desired, signed_models
from test_agent_shadow import DEVICE, SITE, rig  # noqa: F401 - rig is a fixture

pytest.importorskip("torch")
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    arts, pub, _ = signed_models(tmp_path_factory.mktemp("statement-models"), {"m-a": 0, "m-b": 1})
    return arts, pub


def plain(r, version: str) -> DesiredModel:
    return DesiredModel(**r.ref(version))


def test_a_relay_replaying_an_older_signed_statement_cannot_roll_the_device_back(models, rig):
    arts, pub = models
    r = rig(arts, pub)
    old = signed_desired(r.private_pem, plain(r, "m-a"), SITE, DEVICE, seq=1)  # the hub's word, once
    r.publish(old)
    r.wait("m-a accepted at seq 1", lambda s: s.stats.get("desired_seq") == 1)
    r.seq = 1
    r.desire("m-b")  # the hub moved on: seq 2
    r.wait("m-b to run", lambda s: s.model_version == "m-b" and s.stats.get("desired_seq") == 2)

    # A compromised relay sets the old, validly signed statement again: refused, m-b stays.
    r.publish(old)
    st = r.wait("the replay to be refused", lambda s: "older than seq 2" in s.facts.get("desired_refused", ""))
    assert st.model_version == "m-b" and "refused desired m-a" in st.last_error
    # Nor can it send the version it likes without the hub's statement, or under another one's.
    r.publish(plain(r, "m-a"))
    st = r.wait("the unsigned one to be refused", lambda s: "no signed statement" in s.facts.get("desired_refused", ""))
    current = signed_desired(r.private_pem, plain(r, "m-b"), SITE, DEVICE, seq=2)
    r.publish(dataclasses.replace(plain(r, "m-a"), statement=current.statement, signature=current.signature))
    st = r.wait("the mix-and-match to be refused", lambda s: "signed statement says m-b" in
                s.facts.get("desired_refused", ""))
    # A statement for another device of the site, or for another site, is not this one's.
    other = signed_desired(r.private_pem, plain(r, "m-a"), SITE, "dev-other", seq=9)
    r.publish(other)
    st = r.wait("another device's statement to be refused", lambda s: "not for device" in
                s.facts.get("desired_refused", ""))
    time.sleep(1.0)  # give a wrongly accepted one time to load: none may
    assert r.state.model_version == "m-b" and not any(s.model_version == "m-a" for s in r.states[-3:])
    assert r.state.stats["desired_refusals"] >= 4
    # The highest seq seen is on disk: a restarted agent refuses the replay too.
    assert (r.data / "desired.json").exists()


def test_an_expired_statement_is_refused(models, rig):
    arts, pub = models
    r = rig(arts, pub)
    r.publish(signed_desired(r.private_pem, plain(r, "m-b"), SITE, DEVICE, seq=1, expires_in=-5))
    st = r.wait("the expired statement to be refused", lambda s: "expired" in s.facts.get("desired_refused", ""))
    assert st.model_version == "m-a"


def test_a_frozen_site_shows_when_its_statement_expires(models, rig):
    arts, pub = models
    r = rig(arts, pub)
    r.publish(signed_desired(r.private_pem, plain(r, "m-b"), SITE, DEVICE, seq=1, expires_in=8))
    # While the statement holds: m-b runs, and the state counts down to its expiry (8 s leaves a
    # loaded machine time to fetch and load m-b first).
    st = r.wait("m-b to run", lambda s: s.model_version == "m-b" and s.stats.get("desired_expires_in_s", 0) > 0)
    assert "desired_expired" not in st.facts and st.stats["desired_expires_in_s"] <= 8
    # The relay passes nothing fresh: the device keeps its model, and its state says updates stalled.
    st = r.wait("the freeze to show", lambda s: "no fresh one came" in s.facts.get("desired_expired", ""), 30)
    assert st.model_version == "m-b" and st.stats["desired_expires_in_s"] < 0


def test_a_download_held_back_until_its_statement_expires_is_not_applied_after(models, rig):
    arts, pub = models
    r = rig(arts, pub)
    # The relay announces m-b but fails the download (404) until the statement has expired...
    r.publish(signed_desired(r.private_pem, DesiredModel(**r.ref("m-b", "/held-back")), SITE, DEVICE, seq=1,
                             expires_in=3))
    r.wait("the download to fail", lambda s: "m-b not applied yet" in s.last_error)
    r.wait("the statement to expire", lambda s: "desired_expired" in s.facts)
    r.files["/held-back"] = arts["m-b"]  # ... then serves it: the agent's next retry must not install it
    st = r.wait("the retry to be refused", lambda s: "no longer applied" in s.last_error, 30)
    assert st.model_version == "m-a" and "expired" in st.last_error
