"""A relay whose disk fills holds what it cannot store unacknowledged (the broker keeps it), retries,
and stores and acks it all, in order, once the disk has room again: nothing the site sent is lost,
and no reconnect is needed. The disk is a real 4 MB tmpfs filled by a file (needs root to mount)."""

from __future__ import annotations

import errno
import os
import time

import numpy as np
import pytest

from edgeloop.broker import free_port
from edgeloop.onebox import sampling_toml
from edgeloop.procs import Service, mosquitto_service, wait_port
from edgeloop.shared import topics
from edgeloop.shared.images import encode_jpeg
from edgeloop.shared.mqtt import Connection
from edgeloop.shared.protocol import DeviceState, SampleBatch, encode

from factories import make_candidate, small_tmpfs, start_hub
from test_hub_api import TOKEN, call
from test_relay_share import get, wait

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
SITE, DEVICE = "site-0", "dev-0"


@pytest.fixture
def small_disk(tmp_path):
    with small_tmpfs(tmp_path, "4m") as disk:
        yield disk


def fill(disk, leave: int) -> None:
    """Fill the disk, then give `leave` bytes back: the relay writes meanwhile (its log's checkpoint
    runs in a thread of its own), so the free space measured before filling may be gone after."""
    path = disk / "filler"
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(64 << 10))
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    os.truncate(path, max(0, path.stat().st_size - leave))


def test_a_full_disk_holds_messages_unacked_and_stores_them_all_once_it_has_room(tmp_path, small_disk):
    logs = tmp_path / "logs"
    port = free_port()
    services = [mosquitto_service(port, tmp_path / "mosquitto", logs).start()]
    try:
        wait_port(port)
        hub, hub_url = start_hub(tmp_path, data=tmp_path / "hub")
        services.append(hub)
        conf = tmp_path / "relay.toml"
        conf.write_text(sampling_toml(None, {"least_confidence": 1.0}, 0))  # no budget: forward everything
        relay = Service.edgeloop("relay", [
            "relay", "run", "--id", "relay-0", "--site", SITE, "--broker", f"mqtt://127.0.0.1:{port}", "--hub", hub_url,
            "--token", TOKEN, "--data", str(small_disk / "relay"), "--config", str(conf), "--flush-idle", "0.3"],
            logs, ready=True).start()
        services.append(relay)
        url = relay.wait_ready(timeout=60)["url"]
        dev = Connection(f"mqtt://127.0.0.1:{port}", client_id="fake-device").start()
        assert dev.wait_connected(20)
        dev.publish(topics.state(SITE, DEVICE), encode(DeviceState(DEVICE, "online", None, ts=time.time())), retain=True)
        wait("the relay to see the device", lambda: DEVICE in get(url + "/status")["devices"], 30)

        sent, rng = [], np.random.default_rng(0)

        def publish(n: int) -> None:
            cands = [make_candidate(device_id=DEVICE, camera_id=DEVICE, image_bytes=encode_jpeg(  # ~3 kB of noise
                rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), quality=95)) for _ in range(n)]
            sent.extend(c.sample_id for c in cands)
            dev.publish(topics.samples(SITE, DEVICE), encode(SampleBatch(source=DEVICE, site=SITE, samples=tuple(cands))),
                        qos=1).wait_for_publish(10)

        publish(5)
        wait("the first batch stored", lambda: get(url + "/status")["counts"]["received"] == 5, 30)
        fill(small_disk, leave=16 << 10)
        for _ in range(40):  # until the disk refuses one
            publish(5)
            time.sleep(0.05)
            if get(url + "/status")["storage_failed"]:
                break
        status = get(url + "/status")
        assert status["storage_failed"] and status["unstored"] >= 1, status
        publish(5)  # more arrive while the disk is full: held behind the first
        time.sleep(1.0)
        assert get(url + "/status")["counts"]["received"] < len(sent)

        (small_disk / "filler").unlink()  # room again: no restart, no reconnect
        wait("the relay to store everything it held", lambda: (s := get(url + "/status"))["counts"]["received"]
             == len(sent) and not s["storage_failed"] and s["unstored"] == 0, 60)
        counts = get(url + "/status")["counts"]
        assert counts["storage_errors"] >= 1 and counts["duplicates"] == 0
        wait("every candidate at the hub", lambda: call(hub_url, "GET", "/api/v1/stats")[1]["samples"] == len(sent), 60)
        dev.stop()
    finally:
        for svc in reversed(services):
            svc.stop()
