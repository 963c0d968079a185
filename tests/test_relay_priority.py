"""Priority survives the relay: it scores every candidate afresh, but what an agent kept outside the
budgets (audit, feedback) carries its priority into the relay's forward queue, so a queue that
fills while the hub is away evicts ordinary frames first. A real relay and mosquitto; the hub is a
closed port."""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pytest

from edgeloop.onebox import sampling_toml
from edgeloop.shared import topics
from edgeloop.shared.mqtt import Connection
from edgeloop.shared.protocol import DeviceState, SampleBatch, encode
from edgeloop.shared.sampling.policy import AUDIT, FEEDBACK_WRONG

from factories import make_candidate
from relaysite import relay_site
from test_relay_share import get, wait

pytestmark = pytest.mark.e2e
SITE, DEVICE = "site-0", "dev-0"
SURE = np.array([0.98, 0.01, 0.01], np.float32)  # the relay's own score of these is ~0
UNSURE = np.array([0.34, 0.33, 0.33], np.float32)


def test_a_full_forward_queue_keeps_audit_and_feedback_and_evicts_ordinary_frames(tmp_path):
    # No budget: forward everything; every id is in the audit draw (these have random ids).
    sampling = sampling_toml(None, {"least_confidence": 1.0}, 0, audit_fraction=1.0)
    with relay_site(tmp_path, sampling, "--flush-idle", "0.3", "--forward-quota", "30KB") as (url, port):
        dev = Connection(f"mqtt://127.0.0.1:{port}", client_id="fake-device").start()
        assert dev.wait_connected(20)

        def publish(cands):
            dev.publish(topics.samples(SITE, DEVICE), encode(SampleBatch(source=DEVICE, site=SITE, samples=tuple(cands))),
                        qos=1).wait_for_publish(10)

        # The relay must be subscribed before anything is published (a QoS 1 message to nobody is gone):
        # a retained state it reports back says so.
        dev.publish(topics.state(SITE, DEVICE), encode(DeviceState(DEVICE, "online", None, ts=time.time())), retain=True)
        wait("the relay to see the device", lambda: DEVICE in get(url + "/status")["devices"], 30)
        special = [make_candidate(device_id=DEVICE, camera_id=DEVICE, probs=SURE, reasons=(r,), value=1000.0)
                   for r in (FEEDBACK_WRONG, AUDIT) * 3]
        ordinary = [make_candidate(device_id=DEVICE, camera_id=DEVICE, probs=UNSURE, value=0.7) for _ in range(90)]
        publish(special)
        for i in range(0, len(ordinary), 10):
            publish(ordinary[i:i + 10])
        total = len(special) + len(ordinary)
        wait("the relay to take everything and settle its window", lambda: (s := get(url + "/status"))["counts"][
             "received"] == total and s["pending"] == 0 and s["counts"]["kept"] == len(ordinary), 60)
        with sqlite3.connect(tmp_path / "relay" / "relay.sqlite") as db:  # queued, not held for a window
            queued = {sid for (sid,) in db.execute("SELECT sample_id FROM outbox WHERE held IS NULL")}
        assert len(queued) < total  # the quota bit: something was evicted or refused
        assert {c.sample_id for c in special} <= queued  # ... and it was never audit or feedback
        dev.stop()


@pytest.mark.parametrize("reasons, bonus", [
    ((), 0.0), (("margin",), 0.0), ((AUDIT,), 100.0), ((FEEDBACK_WRONG, "margin"), 1000.0),
    (("campaign:c-1",), 50.0), ((AUDIT, "campaign:c-1", FEEDBACK_WRONG), 1000.0), (("feedback:confirmed",), 50.0),
])
def test_the_priority_of_a_candidate_is_its_most_urgent_reason(reasons, bonus):
    from edgeloop.shared.sampling.policy import priority_bonus

    assert priority_bonus(reasons) == bonus
