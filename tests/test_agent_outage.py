"""The agent against a broker that is down: the outbox fills to its quota, keeps the most valuable
candidates, and drains completely once the broker is back. Real processes, real mosquitto."""

from __future__ import annotations

import shutil
import subprocess
import sqlite3
import sys
import time
from typing import Callable

import pytest

from edgeloop.broker import free_port
from edgeloop.procs import Service, mosquitto_service, wait_port
from edgeloop.shared.mqtt import Connection
from edgeloop.shared.protocol import SampleBatch

from factories import receipting, signed_model

pytestmark = pytest.mark.e2e
FRAMES = 150


def outbox_rows(path):
    """-> (rows, counters, evictions) of an agent's outbox; empty while the agent is still creating it."""
    try:
        return _outbox_rows(path)
    except sqlite3.OperationalError as exc:  # the file exists a moment before its tables do
        if "no such table" not in str(exc):
            raise
        return [], {}, []


def _outbox_rows(path):
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT sample_id, value, nbytes FROM outbox").fetchall()
        counters = dict(db.execute("SELECT name, n FROM counters").fetchall())
        evicted = db.execute("SELECT sample_id, value FROM evictions").fetchall()
    return rows, counters, evicted


def wait_for(what, cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := cond():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def session_collector(tmp_path, port, logs, topic, received: list) -> tuple[Callable[[], Connection], Service]:
    """Give a collector a persistent session at a mosquitto that then goes down (saving it), so the broker
    queues for it what arrives while it is away -> (a maker of that collector's connection, the stopped broker)."""
    broker = mosquitto_service(port, tmp_path / "mosquitto", logs, persistence=True).start()
    wait_port(port)

    def collector() -> Connection:
        return Connection(f"mqtt://127.0.0.1:{port}", "collector", clean_session=False,
                          subscriptions=[(topic, 1)],
                          on_message=receipting(received))

    first = collector()
    first.start().wait_connected(10)
    time.sleep(0.5)  # the SUBSCRIBE round trip
    first.stop()
    broker.stop()  # the broker saves the session and goes down
    assert (tmp_path / "mosquitto" / "mosquitto.db").exists(), broker.tail()
    return collector, broker


def test_offline_agent_keeps_the_best_candidates_within_its_quota_and_drains_them_all(tmp_path):
    port = free_port()
    logs = tmp_path / "logs"
    received: list[SampleBatch] = []
    collector, broker = session_collector(tmp_path, port, logs, "edgeloop/site-x/dev-x/samples", received)
    artifact, pub = signed_model(tmp_path / "keys")
    data = tmp_path / "agent"
    (data / "models").mkdir(parents=True)
    shutil.copy(artifact, data / "models" / "active.model")
    conf = tmp_path / "agent.toml"
    conf.write_text("[sampling]\nmin_value = 0.0\n")  # no budget: every frame goes to the outbox
    agent = Service("agent", [sys.executable, "-m", "edgeloop", "agent", "run", "--device", "dev-x", "--site", "site-x",
                              "--broker", f"mqtt://127.0.0.1:{port}", "--source", "sim:cam-000", "--data", str(data),
                              "--pubkey", str(pub), "--config", str(conf), "--quota", "40KB",
                              "--frames-per-model", str(FRAMES)], logs).start()
    try:
        outbox = data / "outbox.sqlite"
        wait_for("every frame to reach the outbox", lambda: outbox.exists() and (
            (c := outbox_rows(outbox)[1]).get("accepted", 0) + c.get("refused", 0) >= FRAMES), timeout=180)
        rows, counters, evicted = outbox_rows(outbox)
        assert agent.alive(), agent.tail()
        # Full, nothing left the device, and every frame is accounted for: kept, evicted or refused.
        assert counters["evicted"] > 0 and counters.get("sent", 0) == 0
        assert counters["accepted"] + counters.get("refused", 0) == FRAMES
        assert counters["accepted"] - counters["evicted"] == len(rows)
        assert sum(n for _, _, n in rows) <= 40_000
        # Eviction kept the most valuable: whatever stayed that is worth less than something evicted
        # fits in the slack one eviction can leave (less than one candidate's size).
        worst_evicted = max(v for _, v in evicted)
        cheap = [n for _, v, n in rows if v < worst_evicted]
        assert sum(cheap) < max(n for _, _, n in rows), (cheap, worst_evicted)
        kept = {sid for sid, _, _ in rows}

        broker = mosquitto_service(port, tmp_path / "mosquitto", logs, persistence=True).start()
        wait_port(port)
        second = collector().start()  # the relay back too: the agent deletes on its receipts
        wait_for("the outbox to drain", lambda: not outbox_rows(outbox)[0], timeout=120)
        ids = lambda: [c.sample_id for b in received for c in b.samples]  # noqa: E731
        wait_for("the collector to receive everything", lambda: set(ids()) >= kept, timeout=60)
        assert set(ids()) == kept  # exactly what was kept: nothing evicted leaks, nothing kept is lost
        assert outbox_rows(outbox)[1]["sent"] == len(kept)
        second.stop()
    finally:
        assert agent.stop() == 0, agent.tail()
        broker.stop()


def test_an_agent_provisioned_with_a_model_collects_before_any_site_exists_and_sends_it_all(tmp_path):
    """`agent run --model v0.artifact` with no broker reachable: it runs the model from the first frame,
    fills its outbox, and sends all of it once the site's broker comes up."""
    port = free_port()
    logs = tmp_path / "logs"
    received: list[SampleBatch] = []
    # The site's collector has a session at the broker (made, then the broker goes down before the agent starts).
    collector, broker = session_collector(tmp_path, port, logs, "edgeloop/site-p/dev-p/samples", received)
    artifact, pub = signed_model(tmp_path / "keys")
    data = tmp_path / "agent"
    conf = tmp_path / "agent.toml"
    conf.write_text("[sampling]\nmin_value = 0.0\n")
    agent = Service("agent", [sys.executable, "-m", "edgeloop", "agent", "run", "--device", "dev-p", "--site", "site-p",
                              "--broker", f"mqtt://127.0.0.1:{port}", "--source", "sim:cam-000", "--data", str(data),
                              "--pubkey", str(pub), "--config", str(conf), "--model", str(artifact),
                              "--frames-per-model", "40"], logs).start()
    try:
        outbox = data / "outbox.sqlite"
        wait_for("the provisioned model's candidates in the outbox", lambda: outbox.exists() and
                 outbox_rows(outbox)[1].get("accepted", 0) >= 40, timeout=180)
        rows, counters, _ = outbox_rows(outbox)
        assert counters.get("sent", 0) == 0 and len(rows) == 40
        assert (data / "models" / "active.model").read_bytes() == artifact.read_bytes()
        kept = {sid for sid, _, _ in rows}
        broker = mosquitto_service(port, tmp_path / "mosquitto", logs, persistence=True).start()
        wait_port(port)
        second = collector().start()
        wait_for("the outbox to drain", lambda: not outbox_rows(outbox)[0], timeout=120)
        ids = lambda: {c.sample_id for b in received for c in b.samples}  # noqa: E731
        wait_for("the collector to receive everything", lambda: ids() >= kept, timeout=60)
        assert ids() == kept
        assert {c.model_version for b in received for c in b.samples} == {"v0"}
        second.stop()
    finally:
        assert agent.stop() == 0, agent.tail()
        broker.stop()


def test_a_provisioned_model_not_signed_by_the_hub_is_refused(tmp_path):
    artifact, _ = signed_model(tmp_path / "keys")
    _, other_pub = signed_model(tmp_path / "other-keys")
    proc = subprocess.run([sys.executable, "-m", "edgeloop", "agent", "run", "--device", "dev-q", "--site", "site-q",
                           "--broker", "mqtt://127.0.0.1:9", "--data", str(tmp_path / "agent"), "--pubkey",
                           str(other_pub), "--model", str(artifact)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--model" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "agent" / "models" / "active.model").exists()
