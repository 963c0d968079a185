"""HTTPS on the hub with the documented self-signed path (`edgeloop provision tls`): clients that
trust the site CA talk to it, clients that do not are refused, and a relay forwards over it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgeloop.broker import free_port
from edgeloop.onebox import sampling_toml
from edgeloop.procs import Service, mosquitto_service, wait_port
from edgeloop.shared import topics
from edgeloop.shared.errors import PeerUnavailable
from edgeloop.shared.hubclient import HubClient
from edgeloop.shared.mqtt import Connection
from edgeloop.shared.protocol import SampleBatch, encode

from factories import make_candidate, start_hub
from test_hub_api import TOKEN
from test_relay_share import get, wait

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def https_hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub-tls")
    subprocess.run([sys.executable, "-m", "edgeloop", "provision", "tls", "--dir", str(root / "pki"),
                    "--host", "127.0.0.1"], check=True, capture_output=True, timeout=60)
    tls = root / "pki" / "tls"
    svc, url = start_hub(root, "--tls-cert", str(tls / "server.crt"), "--tls-key", str(tls / "server.key"))
    yield url, tls / "ca.crt", root
    assert svc.stop() == 0


def test_clients_that_trust_the_site_ca_get_in_and_others_are_refused(https_hub):
    url, ca, _ = https_hub
    assert url.startswith("https://127.0.0.1:")
    assert HubClient(url, TOKEN, timeout=10, ca_file=ca).call("GET", "/health") == {"ok": True}
    with pytest.raises(PeerUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        HubClient(url, TOKEN, timeout=10).call("GET", "/health")  # the system CAs do not know it
    plain = url.replace("https://", "http://")
    with pytest.raises(PeerUnavailable):  # no plain HTTP on the TLS port
        HubClient(plain, TOKEN, timeout=10).call("GET", "/health")


def test_a_relay_forwards_to_an_https_hub(https_hub, tmp_path):
    url, ca, _ = https_hub
    port = free_port()
    broker = mosquitto_service(port, tmp_path / "mosquitto", tmp_path / "logs").start()
    relay = None
    try:
        wait_port(port)
        conf = tmp_path / "relay.toml"
        conf.write_text(sampling_toml(None, {"least_confidence": 1.0}, 0))
        relay = Service.edgeloop("relay", [
            "relay", "run", "--id", "relay-t", "--site", "site-t", "--broker", f"mqtt://127.0.0.1:{port}",
            "--hub", url, "--token", TOKEN, "--data", str(tmp_path / "relay"), "--config", str(conf),
            "--flush-idle", "0.5", "--poll", "1"], tmp_path / "logs", ready=True,
            env={"EDGELOOP_HUB_CA": str(ca)}).start()
        rinfo = relay.wait_ready(timeout=60)
        hub = HubClient(url, TOKEN, timeout=10, ca_file=ca)
        before = hub.call("GET", "/api/v1/stats")["samples"]
        dev = Connection(f"mqtt://127.0.0.1:{port}", client_id="fake-device").start()
        assert dev.wait_connected(20)
        c = make_candidate(device_id="dev-t", camera_id="dev-t")
        body = encode(SampleBatch(source="dev-t", site="site-t", samples=(c,)))

        def received():  # publish until the relay's subscription is live (then it is idle: its window closes)
            dev.publish(topics.samples("site-t", "dev-t"), body, qos=1).wait_for_publish(10)
            return get(rinfo["url"] + "/status")["counts"]["received"] > 0

        wait("the relay to take the sample", received)
        wait("the sample at the hub over HTTPS", lambda: hub.call("GET", "/api/v1/stats")["samples"] > before)
        dev.stop()
        assert hub.call("GET", f"/api/v1/samples/{c.sample_id}")["sample_id"] == c.sample_id
    finally:
        if relay:
            relay.stop()
        broker.stop()
