"""Two relays share one site through an MQTT 5 shared subscription on a real mosquitto: each
candidate is handled by exactly one of them, both take a share, and the hub stores each once.
Device states (retained) still reach both relays."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from edgeloop.broker import free_port
from edgeloop.procs import Service, mosquitto_service, wait_port
from edgeloop.onebox import sampling_toml
from edgeloop.shared import topics
from edgeloop.shared.mqtt import Connection
from edgeloop.shared.protocol import DeviceState, SampleBatch, encode

from factories import make_candidate, start_hub
from test_hub_api import TOKEN, call

pytestmark = pytest.mark.e2e
SITE, DEVICES, BATCHES, PER_BATCH = "site-0", 4, 30, 5


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def wait(what: str, check, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := check():
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_relays_share_a_site_and_each_candidate_is_handled_once(tmp_path):
    logs = tmp_path / "logs"
    port = free_port()
    services = [mosquitto_service(port, tmp_path / "mosquitto", logs).start()]
    try:
        wait_port(port)
        broker = f"mqtt://127.0.0.1:{port}"
        hub, hub_url = start_hub(tmp_path, data=tmp_path / "hub")
        services.append(hub)
        conf = tmp_path / "relay.toml"
        conf.write_text(sampling_toml(None, {"least_confidence": 1.0}, 0))  # no budget: forward everything
        relays = []
        for rid in ("relay-a", "relay-b"):
            svc = Service.edgeloop(rid, ["relay", "run", "--id", rid, "--site", SITE, "--broker", broker,
                                         "--hub", hub_url, "--token", TOKEN, "--data", str(tmp_path / rid),
                                         "--config", str(conf), "--flush-idle", "0.5", "--poll", "1",
                                         "--share-group", SITE], logs, ready=True).start()
            services.append(svc)
            relays.append(svc)
        urls = [svc.wait_ready(timeout=60)["url"] for svc in relays]

        dev = Connection(broker, client_id="fake-devices").start()
        assert dev.wait_connected(20)
        devices = [f"dev-{i}" for i in range(DEVICES)]
        for d in devices:  # retained states: both relays see every device (their subscriptions are live)
            dev.publish(topics.state(SITE, d), encode(DeviceState(d, "online", None, ts=time.time())), retain=True)
        wait("both relays to see every device",
             lambda: all(set(get(u + "/status")["devices"]) == set(devices) for u in urls))

        sent = []
        for i in range(BATCHES):
            d = devices[i % DEVICES]
            cands = [make_candidate(device_id=d, camera_id=d) for _ in range(PER_BATCH)]
            sent += [c.sample_id for c in cands]
            dev.publish(topics.samples(SITE, d), encode(SampleBatch(source=d, site=SITE, samples=tuple(cands))),
                        qos=1).wait_for_publish(10)
        dev.stop()

        wait("every candidate at the hub", lambda: call(hub_url, "GET", "/api/v1/stats")[1]["samples"] >= len(sent))
        counts = [get(u + "/status")["counts"] for u in urls]
        received = [c["received"] for c in counts]
        assert sum(received) == len(sent) and min(received) > 0, received  # split, none twice
        assert sum(c["duplicates"] for c in counts) == 0
        wait("both relays to forward what they took",
             lambda: [c["forwarded"] for c in (get(u + "/status")["counts"] for u in urls)] == received)
        stats = call(hub_url, "GET", "/api/v1/stats")[1]
        assert stats["samples"] == len(sent)
    finally:
        for svc in reversed(services):
            svc.stop()
