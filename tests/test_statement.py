"""Signed desired statements (shared/statement.py) and the agent's guard over them (agent/update_guard.py):
what verifies, what is refused and why, and that the highest sequence accepted survives a restart."""

from __future__ import annotations

import dataclasses
import time

import pytest
from hypothesis import given, strategies as st

from edgeloop.agent.update_guard import UpdateGuard
from edgeloop.shared.errors import IntegrityError, StaleStatement
from edgeloop.shared.protocol import DesiredModel, ShadowModel, decode, encode
from edgeloop.shared.signing import generate_keypair, load_private_key, load_public_key
from edgeloop.shared.statement import DOMAIN, ShadowRef, Statement, check, open_signed, sign

from factories import signed_desired

PRIV, PUB = generate_keypair()
KEY, PUBKEY = load_private_key(PRIV), load_public_key(PUB)
OTHER = load_private_key(generate_keypair()[0])
NOW = 1_800_000_000.0


def desired(version="m-2", **kw) -> DesiredModel:
    return DesiredModel(version, "ab" * 32, 1234, f"http://relay:8080/models/{version}", **kw)


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True)


@given(site=ids, device=st.none() | ids, version=ids, seq=st.integers(0, 2**53), size=st.integers(1, 512 << 20),
       expires=st.floats(0, 4e9), shadow=st.none() | st.tuples(ids, st.integers(1, 1 << 20), st.floats(0.01, 1)),
       latency=st.none() | st.floats(0.1, 1e4), rollout=st.none() | ids)
def test_a_signed_statement_opens_to_itself(site, device, version, seq, size, expires, shadow, latency, rollout):
    s = Statement(site, device, version, "cd" * 32, size, seq, expires,
                  None if shadow is None else ShadowRef(shadow[0], "ef" * 32, shadow[1], shadow[2]), latency, rollout)
    data, sig = sign(KEY, s)
    assert open_signed(PUBKEY, data, sig) == s
    if device is None:
        s = dataclasses.replace(s, others=(f"{site}-x", "dev-1"))
        assert open_signed(PUBKEY, *sign(KEY, s)) == s


def test_statements_that_are_not_the_hubs_word_are_refused():
    data, sig = sign(KEY, Statement("site-a", None, "m-2", "ab" * 32, 1234, 3, NOW + 60))
    with pytest.raises(IntegrityError, match="no signed statement"):
        open_signed(PUBKEY, None, None)
    with pytest.raises(IntegrityError, match="does not verify"):
        open_signed(PUBKEY, data.replace(b"m-2", b"m-1"), sig)  # altered
    with pytest.raises(IntegrityError, match="does not verify"):
        open_signed(PUBKEY, *sign(OTHER, Statement("site-a", None, "m-2", "ab" * 32, 1234, 3, NOW + 60)))
    # Domain separation: the hub's signature over the same bytes without the tag (as a model digest's
    # signature would be) does not pass for a statement's.
    with pytest.raises(IntegrityError, match="does not verify"):
        open_signed(PUBKEY, data, KEY.sign(data))
    assert DOMAIN.endswith(b"\x00")


@pytest.mark.parametrize("st_kw, msg_kw, site, device, last, err, match", [
    ({}, {}, "site-a", "dev-1", None, None, None),
    ({}, {}, "site-a", "dev-1", (3, 0), None, None),                       # the same statement again
    ({"device": "dev-1"}, {}, "site-a", "dev-1", (3, 0), None, None),      # its own outranks the site's
    ({}, {}, "site-a", "dev-1", (3, 1), StaleStatement, "older"),          # ... and not the reverse
    ({}, {}, "site-a", "dev-1", (4, 0), StaleStatement, "older than seq 4"),
    ({"expires_at": NOW - 1}, {}, "site-a", "dev-1", None, StaleStatement, "expired"),
    ({}, {}, "site-b", "dev-1", None, IntegrityError, "not for device dev-1 of site site-b"),
    ({"device": "dev-2"}, {}, "site-a", "dev-1", None, IntegrityError, "not for device"),
    ({}, {"version": "m-1"}, "site-a", "dev-1", None, IntegrityError, "signed statement says m-2"),
    ({}, {"size": 99}, "site-a", "dev-1", None, IntegrityError, "signed statement"),
    ({}, {"max_latency_ms": 5.0}, "site-a", "dev-1", None, IntegrityError, "budget differ"),
    ({}, {"shadow": ShadowModel("m-3", "ab" * 32, 10, "http://r/m-3")}, "site-a", "dev-1", None, IntegrityError,
     "shadow"),
    # A canary (or pinned) device has its own statement: a relay handing it the site's default instead
    # (mix and match, fresh and validly signed) is refused; other devices take the default.
    ({"others": ("dev-1", "dev-7")}, {}, "site-a", "dev-1", None, IntegrityError, "has a statement of its own"),
    ({"others": ("dev-7",)}, {}, "site-a", "dev-1", None, None, None),
])
def test_check(st_kw, msg_kw, site, device, last, err, match):
    s = Statement(**{"site": "site-a", "device": None, "version": "m-2", "sha256": "ab" * 32, "size": 1234,
                     "seq": 3, "expires_at": NOW + 60, **st_kw})
    d = dataclasses.replace(desired(), **{k: v for k, v in msg_kw.items() if k != "version"})
    if "version" in msg_kw:
        d = dataclasses.replace(d, version=msg_kw["version"])
    if err is None:
        check(s, d, site, device, NOW, last)
    else:
        with pytest.raises(err, match=match):
            check(s, d, site, device, NOW, last)


def test_a_statement_travels_inside_the_desired_message_unchanged():
    d = signed_desired(PRIV, desired(), "site-a", "dev-1", seq=5)
    back = decode(encode(d), DesiredModel)
    assert (back.statement, back.signature) == (d.statement, d.signature)
    assert open_signed(PUBKEY, back.statement, back.signature).seq == 5


def test_the_guard_keeps_the_highest_seq_across_a_restart_and_reports_expiry(tmp_path):
    clock = Clock(NOW)
    g = UpdateGuard(tmp_path, PUBKEY, "site-a", "dev-1", clock=clock)
    old = signed_desired(PRIV, desired("m-1"), "site-a", None, seq=1, expires_in=10**9)
    new = signed_desired(PRIV, desired("m-2"), "site-a", None, seq=2, expires_in=10**9)
    g.admit(old)
    g.admit(new)
    with pytest.raises(StaleStatement):
        g.admit(old)
    assert "older than seq 2" in g.facts()["desired_refused"] and g.stats()["desired_refusals"] == 1

    again = UpdateGuard(tmp_path, PUBKEY, "site-a", "dev-1", clock=clock)  # the agent restarted
    with pytest.raises(StaleStatement, match="older than seq 2"):
        again.admit(old)
    again.admit(new)
    assert again.facts() == {} and again.stats()["desired_seq"] == 2
    clock.t = 10**10  # long after: the statement it runs under expired and nothing fresh came
    assert "no fresh one came" in again.facts()["desired_expired"]


@given(past=st.floats(min_value=1e-6, max_value=10**6), ahead=st.floats(min_value=0.1, max_value=10**6))
def test_the_countdown_sign_agrees_with_the_expired_fact(tmp_path_factory, past, ahead):
    g = UpdateGuard(tmp_path_factory.mktemp("guard"), PUBKEY, "site-a", "dev-1", clock=Clock(time.time()))
    g.admit(signed_desired(PRIV, desired(), "site-a", None, seq=1, expires_in=60))
    g.clock.t = g.expires_at - ahead
    assert "desired_expired" not in g.facts() and g.stats()["desired_expires_in_s"] >= 0
    g.clock.t = g.expires_at + past  # a hair past: never reads -0.0 beside an expired fact
    assert "desired_expired" in g.facts() and g.stats()["desired_expires_in_s"] < 0


def test_an_unreadable_guard_file_does_not_strand_the_device(tmp_path):
    (tmp_path / "desired.json").write_text("{not json")
    g = UpdateGuard(tmp_path, PUBKEY, "site-a", "dev-1")
    g.admit(signed_desired(PRIV, desired(), "site-a", "dev-1", seq=1))
    assert UpdateGuard(tmp_path, PUBKEY, "site-a", "dev-1").rank == (1, 1)
