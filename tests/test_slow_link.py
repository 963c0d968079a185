"""A slow link drains: an agent behind a 20 kB/s link to a real mosquitto (tests/throttle.py) sends
its outbox at the link's speed, in batches sized to it, without re-sending each batch behind the copy
still in flight. With 256 KB batches and a fixed 10 s PUBACK timeout, below ~26 kB/s nothing was ever
acknowledged."""

from __future__ import annotations

import shutil
import sys
import time
from collections import Counter

import pytest

from edgeloop.broker import free_port
from edgeloop.procs import Service, mosquitto_service, wait_port
from edgeloop.shared.mqtt import Connection

from factories import receipting, signed_model
from test_agent_outage import outbox_rows, wait_for
from throttle import Throttle

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
FRAMES = 40  # scenes frames (320 x 240 JPEG, ~15 kB): ~600 kB for a 20 kB/s link
RATE = 20_000


def test_an_agent_behind_a_20_kb_per_s_link_drains_its_outbox_without_piling_up_copies(tmp_path):
    port = free_port()
    logs = tmp_path / "logs"
    broker = mosquitto_service(port, tmp_path / "mosquitto", logs).start()
    wait_port(port)
    link = Throttle(port, RATE)
    batches: list = []
    collector = Connection(f"mqtt://127.0.0.1:{port}", "collector", subscriptions=[("edgeloop/site-x/dev-x/samples", 1)],
                           on_message=receipting(batches)).start()
    agent = None
    try:
        assert collector.wait_connected(10)
        time.sleep(0.5)  # the SUBSCRIBE round trip
        artifact, pub = signed_model(tmp_path / "keys")
        data = tmp_path / "agent"
        (data / "models").mkdir(parents=True)
        shutil.copy(artifact, data / "models" / "active.model")
        conf = tmp_path / "agent.toml"
        conf.write_text("[sampling]\nmin_value = 0.0\n")  # no budget: every frame goes up
        agent = Service("agent", [sys.executable, "-m", "edgeloop", "agent", "run", "--device", "dev-x", "--site", "site-x",
                                  "--broker", f"mqtt://127.0.0.1:{link.port}", "--source", "scenes:cam-000?fps=5",
                                  "--data", str(data), "--pubkey", str(pub), "--config", str(conf),
                                  "--frames-per-model", str(FRAMES)], logs).start()
        outbox = data / "outbox.sqlite"
        wait_for("every frame in the outbox", lambda: outbox.exists() and outbox_rows(outbox)[1].get("accepted", 0)
                 >= FRAMES, 120)
        t0 = time.monotonic()
        wait_for("the outbox to drain over the slow link", lambda: not outbox_rows(outbox)[0]
                 and outbox_rows(outbox)[1].get("sent", 0) == FRAMES, 200)
        seconds = time.monotonic() - t0
        received = Counter(c.sample_id for b in batches for c in b.samples)
        assert len(received) == FRAMES
        # The link carried each frame about once: copies queued behind copies would multiply it.
        assert sum(received.values()) <= FRAMES * 1.25, received
        assert link.carried < 1.5 * RATE * seconds + 200_000
        assert agent.alive(), agent.tail()
    finally:
        if agent is not None:
            agent.stop()
        collector.stop()
        link.stop()
        broker.stop()
