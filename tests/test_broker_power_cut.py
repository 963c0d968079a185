"""A power cut at the broker loses nothing: the agent deletes a sample on the relay's receipt, not
on mosquitto's PUBACK. mosquitto acknowledges before it saves (the shipped config keeps the default
autosave, every 30 minutes), so while the relay is away what the broker holds for it exists only in
the broker's memory; SIGKILL it and that is gone. Real mosquitto (the shipped config's durability
lines), a real relay process, the agent's own uplink and outbox."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from edgeloop.broker import free_port
from edgeloop.onebox import sampling_toml
from edgeloop.procs import Service, mosquitto_service, wait_port
from edgeloop.shared import topics
from edgeloop.shared.mqtt import Connection
from edgeloop.shared.outbox import SqliteOutbox
from edgeloop.shared.protocol import DeviceState, Receipt, decode, encode

from factories import make_candidate
from test_relay_share import get, wait

pytestmark = pytest.mark.e2e
SITE, DEVICE = "site-0", "dev-0"
SHIPPED = Path(__file__).parents[1] / "deploy" / "mosquitto" / "mosquitto.conf"
DURABILITY_KEYS = ("persistence", "autosave_interval", "autosave_on_changes", "persistent_client_expiration")


def shipped_broker(port: int, work: Path, logs: Path) -> Service:
    """A loopback mosquitto that keeps the shipped config's durability settings."""
    svc = mosquitto_service(port, work, logs, persistence=True)
    lines = [line for line in SHIPPED.read_text().splitlines() if line.split(" ")[0] in DURABILITY_KEYS]
    assert "persistence true" in lines
    conf = work / "mosquitto.conf"
    kept = [line for line in conf.read_text().splitlines() if line.split(" ")[0] not in DURABILITY_KEYS]
    conf.write_text("\n".join(kept + lines) + "\n")
    return svc


def test_samples_the_broker_acknowledged_survive_its_sigkill_while_the_relay_is_away(tmp_path):
    logs, port = tmp_path / "logs", free_port()
    broker = shipped_broker(port, tmp_path / "mosquitto", logs).start()
    conf = tmp_path / "relay.toml"
    conf.write_text(sampling_toml(None, {"least_confidence": 1.0}, 0))
    relay = Service.edgeloop("relay", [
        "relay", "run", "--id", "relay-0", "--site", SITE, "--broker", f"mqtt://127.0.0.1:{port}",
        "--hub", f"http://127.0.0.1:{free_port()}", "--token", "t", "--data", str(tmp_path / "relay"),
        "--config", str(conf), "--flush-idle", "0.5"], logs, ready=True)
    outbox = SqliteOutbox(tmp_path / "agent" / "outbox.sqlite", 50 << 20)
    conn = uplink = None
    try:
        wait_port(port)
        url = relay.start().wait_ready(timeout=60)["url"]  # its persistent session and subscription
        from edgeloop.agent.uplink import Uplink

        conn = Connection(f"mqtt://127.0.0.1:{port}", client_id=f"agent-{DEVICE}",
                          subscriptions=[(topics.received(SITE, DEVICE), 1)],
                          on_message=lambda client, userdata, msg: uplink.received(decode(msg.payload, Receipt)))
        uplink = Uplink(conn, outbox, SITE, DEVICE, batch_items=8)
        conn.start()
        assert conn.wait_connected(20)
        conn.publish(topics.state(SITE, DEVICE), encode(DeviceState(DEVICE, "online", None, ts=time.time())), retain=True)
        wait("the relay to see the device", lambda: DEVICE in get(url + "/status")["devices"], 30)
        relay.stop()  # away (an upgrade, a reboot): the broker queues for its session meanwhile

        cands = [make_candidate(device_id=DEVICE, camera_id=DEVICE) for _ in range(40)]
        for c in cands:
            assert outbox.put(c, 0.5)
        uplink.start()
        wait("the broker to acknowledge every batch", lambda: uplink.batches_sent == 5, 30)
        assert len(outbox) == 40  # acknowledged by the broker, but not deleted: no receipt yet

        broker.kill()  # the power cut: what it held in memory for the relay is gone
        broker.start()
        wait_port(port)
        url = relay.start().wait_ready(timeout=60)["url"]
        wait("the agent to resend and the relay to receipt everything", lambda: len(outbox) == 0, 90)
        with sqlite3.connect(tmp_path / "relay" / "relay.sqlite") as db:
            seen = {sid for (sid,) in db.execute("SELECT sample_id FROM seen")}
        assert {c.sample_id for c in cands} <= seen
        assert uplink.resent >= 40 and uplink.receipts == 40
        assert get(url + "/status")["counts"]["received"] >= 40
    finally:
        if uplink is not None:
            uplink.stop()
            uplink.join(5)
        if conn is not None:
            conn.stop()
        relay.stop()
        broker.stop()
        outbox.close()
