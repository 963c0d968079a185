"""Devices do not choose their own privileges: a relay honours an `audit` claim only for a sample id
in the audit draw (and within a per-device rate), and `feedback:*` only within a per-device rate; the
rest competes in the window like any candidate, renamed so no tier above treats it as privileged.
Pure checks first, then a real relay and mosquitto with a device that claims everything."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgeloop.onebox import sampling_toml
from edgeloop.shared import topics
from edgeloop.shared.config import ConfigError, SamplingConfig, loads
from edgeloop.shared.mqtt import Connection
from edgeloop.shared.protocol import DeviceState, SampleBatch, encode
from edgeloop.shared.sampling.policy import AUDIT, FEEDBACK_WRONG, is_audit, outside_budgets
from edgeloop.shared.sampling.privileges import Privileges

from factories import make_candidate
from relaysite import relay_site
from test_relay_share import get, wait

SITE, DEVICE = "site-0", "dev-0"
CFG = SamplingConfig(audit_fraction=0.1, seed=7, feedback_per_device_hour=3, audit_per_device_hour=5)


def audit_ids(cfg: SamplingConfig, inside: bool, n: int, device: str = DEVICE) -> list:
    out = []
    while len(out) < n:
        c = make_candidate(device_id=device, camera_id=device, reasons=(AUDIT,))
        if is_audit(c.sample_id, cfg) == inside:
            out.append(c)
    return out


def test_an_audit_claim_holds_only_for_an_id_in_the_draw_and_within_the_rate():
    p = Privileges(CFG)
    forged = [p.admit(c, 0.0) for c in audit_ids(CFG, False, 4)]
    assert all(c.reasons == ("audit:refused",) and not outside_budgets(c.reasons) for c in forged)
    drawn = [p.admit(c, 0.0) for c in audit_ids(CFG, True, 7)]
    assert [c.reasons for c in drawn] == [(AUDIT,)] * 5 + [("audit:refused",)] * 2  # 5 an hour
    assert p.admit(audit_ids(CFG, True, 1)[0], 3600 / 5).reasons == (AUDIT,)  # the bucket refills
    # Another device has its own allowance.
    assert p.admit(audit_ids(CFG, True, 1, "dev-9")[0], 0.0).reasons == (AUDIT,)
    assert p.refused == {"audit": 6, "feedback": 0}


def test_an_audit_claim_made_twice_is_refused_twice():
    """Only the first copy used to be renamed: ("audit", "audit") kept one and skipped every budget."""
    c = audit_ids(CFG, False, 1)[0]
    got = Privileges(CFG).admit(type(c)(**{**c.__dict__, "reasons": (AUDIT, "margin", AUDIT)}), 0.0)
    assert got.reasons == ("audit:refused", "margin", "audit:refused") and not outside_budgets(got.reasons)


def test_feedback_is_limited_per_device_and_keeps_its_other_reasons():
    p = Privileges(CFG)
    got = [p.admit(make_candidate(device_id=DEVICE, reasons=(FEEDBACK_WRONG, "margin")), 10.0) for _ in range(5)]
    assert [c.reasons for c in got] == [(FEEDBACK_WRONG, "margin")] * 3 + [("feedback:wrong:limited", "margin")] * 2
    assert p.admit(make_candidate(device_id="dev-2", reasons=(FEEDBACK_WRONG,)), 10.0).reasons == (FEEDBACK_WRONG,)
    ordinary = make_candidate(device_id=DEVICE, reasons=("margin",))
    assert p.admit(ordinary, 10.0) is ordinary


def test_the_rates_are_checked_config():
    assert loads("[sampling]\nfeedback_per_device_hour = 5\n").sampling.feedback_per_device_hour == 5
    with pytest.raises(ConfigError, match="feedback_per_device_hour"):
        loads("[sampling]\nfeedback_per_device_hour = -1\n")


@pytest.mark.e2e
def test_a_relay_does_not_let_a_device_send_everything_past_the_budgets(tmp_path):
    sampling = sampling_toml(1, {"least_confidence": 1.0}, CFG.seed, audit_fraction=CFG.audit_fraction,
                             feedback_per_device_hour=CFG.feedback_per_device_hour, audit_per_device_hour=100)
    with relay_site(tmp_path, sampling, "--flush-idle", "0.3") as (url, port):
        dev = Connection(f"mqtt://127.0.0.1:{port}", client_id="greedy-device").start()
        assert dev.wait_connected(20)
        dev.publish(topics.state(SITE, DEVICE), encode(DeviceState(DEVICE, "online", None, ts=time.time())), retain=True)
        wait("the relay to see the device", lambda: DEVICE in get(url + "/status")["devices"], 30)

        sure = np.array([0.98, 0.01, 0.01], np.float32)
        honest, forged = audit_ids(CFG, True, 10), audit_ids(CFG, False, 10)
        feedback = [make_candidate(device_id=DEVICE, camera_id=DEVICE, reasons=(FEEDBACK_WRONG,)) for _ in range(10)]
        cands = [c.with_value(1000.0) for c in honest + forged + feedback]
        cands = [make_candidate(**{**c.__dict__, "probs": sure}) for c in cands]
        dev.publish(topics.samples(SITE, DEVICE), encode(SampleBatch(source=DEVICE, site=SITE, samples=tuple(cands))),
                    qos=1).wait_for_publish(10)
        status = wait("the relay to take the batch", lambda: (s := get(url + "/status"))["counts"]["received"] == 30
                      and s["pending"] == 0 and s, 60)
        counts = status["counts"]
        # Ten audit claims in the draw, three feedback: past the budgets. The rest competed in the window.
        assert (counts["audit"], counts["feedback"], counts["privileges_refused"]) == (10, 3, 17), counts
        assert counts["rejected"] == 0 and counts["duplicates"] == 0, counts  # taken, none refused
        dev.stop()
