"""Device identity and broker security against a real mosquitto started with what `edgeloop provision`
generates: a device writes only under its own topic of its own site, a relay reads only its site,
wrong and revoked passwords are refused at CONNECT, and TLS verifies against the site CA.

MQTT 3.1.1 (what agents speak) gives no sign when the broker drops an unauthorized PUBLISH: it
still sends PUBACK. So each check publishes the forbidden messages first, waits for their PUBACKs
(by then the broker has routed or dropped them), then publishes a permitted marker. A subscriber
gets a publisher's messages in order, so if it receives the marker with nothing before it, the
forbidden ones were dropped; `test_the_old_pattern_acl_leaks_across_sites` shows the same check
catching a leak.
"""

from __future__ import annotations

import json
import os
import re
import pwd
import queue
import shutil
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner

from edgeloop.broker import free_port
from edgeloop.cli import main
from edgeloop.procs import Service, wait_port
from edgeloop.provision import Identity, ProvisionError, acl_rules, check_name, render_acl
from edgeloop.shared.errors import ConfigError
from edgeloop.shared.mqtt import Connection, broker_address
from edgeloop.shared.protocol import DeviceState, decode

pytestmark = pytest.mark.e2e
TIMEOUT = 15  # seconds to wait for an answer from the broker; never a threshold that is asserted
ME = pwd.getpwuid(os.getuid()).pw_name  # as root, mosquitto must stay root to read files we own


def provision(*args: str) -> str:
    result = CliRunner().invoke(main, ["provision", *args])
    assert result.exit_code == 0, result.output
    return result.output


def password_of(root: Path, ident: str) -> str:
    env = dict(line.split("=", 1) for line in (root / "credentials" / f"{ident}.env").read_text().splitlines()
               if "=" in line and not line.startswith("#"))
    return env["EDGELOOP_MQTT_PASSWORD"]


def start_mosquitto(conf: Path, logs: Path, *ports: int) -> Service:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    broker = Service(f"mosquitto-{conf.parent.name}", [exe, "-c", str(conf)], logs).start()
    for port in ports:
        wait_port(port)
    return broker


@dataclass
class Site:
    root: Path
    port: int
    tls_port: int
    broker: Service

    def password(self, ident: str) -> str:
        return password_of(self.root, ident)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("broker")
    provision("tls", "--dir", str(root), "--host", "127.0.0.1", "--host", "localhost")
    for kind, site_id, ident in [("relay", "site-a", "relay-a"), ("relay", "site-b", "relay-b"),
                                 ("device", "site-a", "dev-a1"), ("device", "site-a", "dev-a2"),
                                 ("device", "site-a", "dev-a9"), ("device", "site-b", "dev-b1")]:
        provision(kind, "--dir", str(root), "--site", site_id, "--id", ident)
    port, tls_port = free_port(), free_port()
    provision("broker-config", "--dir", str(root), "--port", str(port), "--tls-port", str(tls_port),
              "--bind", "127.0.0.1", "--tls-bind", "127.0.0.1", "--user", ME)
    broker = start_mosquitto(root / "mosquitto.conf", tmp_path_factory.mktemp("logs"), port, tls_port)
    yield Site(root, port, tls_port, broker)
    assert broker.stop() == 0, broker.tail()


class Probe:
    """A bare paho client that records what the broker answers: CONNACK, SUBACK and PUBACK codes,
    disconnects, and the messages it receives, each waited for with a timeout."""

    def __init__(self, port: int, user: str, password: str, *, v5: bool = False, ca: Path | None = None,
                 host: str = "127.0.0.1"):
        self.host, self.port = host, port
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{user}-{time.monotonic_ns()}",
                                  protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                                  reconnect_on_failure=False)  # a refused or cut-off probe stays so
        self.client.username_pw_set(user, password)
        if ca:
            self.client.tls_set(ca_certs=str(ca))
        self.connacks: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.messages: queue.Queue = queue.Queue()
        self.disconnected = threading.Event()
        self._pubacks: dict[int, mqtt.ReasonCode] = {}
        self._acked = threading.Condition()
        self.client.on_connect = lambda c, u, f, rc, p: self.connacks.put(rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        # Retained messages that earlier tests left (an agent's state) are history, not traffic.
        self.client.on_message = lambda c, u, m: None if m.retain else self.messages.put((m.topic, m.payload))
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnected.set()
        self.client.on_publish = self._on_publish

    def _on_publish(self, client, userdata, mid, rc, properties):
        with self._acked:
            self._pubacks[mid] = rc
            self._acked.notify_all()

    def connect(self) -> mqtt.ReasonCode:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        return self.connacks.get(timeout=TIMEOUT)

    def subscribe(self, topic_filter: str) -> None:
        self.client.subscribe(topic_filter, qos=1)
        assert not any(rc.is_failure for rc in self.subacks.get(timeout=TIMEOUT))

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> mqtt.ReasonCode:
        """QoS 1 -> the PUBACK's reason code (3.1.1: always success, even when the broker drops it)."""
        mid = self.client.publish(topic, payload, qos=1, retain=retain).mid
        with self._acked:
            assert self._acked.wait_for(lambda: mid in self._pubacks, TIMEOUT), f"no PUBACK for {topic}"
            return self._pubacks[mid]

    def next_message(self) -> tuple[str, bytes]:
        return self.messages.get(timeout=TIMEOUT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def probes():
    opened: list[Probe] = []

    def open_probe(site: Site, user: str, password: str | None = None, **kw) -> Probe:
        probe = Probe(site.port, user, site.password(user) if password is None else password, **kw)
        opened.append(probe)
        return probe

    yield open_probe
    for p in opened:
        p.close()


def connected(probe: Probe) -> Probe:
    rc = probe.connect()
    assert not rc.is_failure, rc
    return probe


def refusal(probe: Probe) -> mqtt.ReasonCode:
    rc = probe.connect()
    assert rc.is_failure, f"the broker accepted the connection ({rc})"
    return rc


NOT_AUTHORIZED = {"Not authorized", "Bad user name or password"}


# --- what a device may write ----------------------------------------------------------------------

def leaks(site, probes, forbidden: list[str]) -> tuple[list[str], list[str]]:
    """dev-a1 publishes to each forbidden topic (3.1.1), then each side publishes a marker it may;
    -> (topics relay-a received before its marker, topics relay-b received before its marker)."""
    relay_a = connected(probes(site, "relay-a"))
    relay_a.subscribe("edgeloop/site-a/#")
    relay_b = connected(probes(site, "relay-b"))
    relay_b.subscribe("edgeloop/site-b/#")
    dev = connected(probes(site, "dev-a1"))
    for topic in forbidden:
        assert not dev.publish(topic, b"forbidden").is_failure  # 3.1.1: acknowledged all the same
    # The broker routed (or dropped) each forbidden message before its PUBACK: markers come after.
    assert not dev.publish("edgeloop/site-a/dev-a1/samples", b"marker").is_failure
    assert not connected(probes(site, "dev-b1")).publish("edgeloop/site-b/dev-b1/samples", b"marker").is_failure
    out = []
    for relay, marker in [(relay_a, "edgeloop/site-a/dev-a1/samples"), (relay_b, "edgeloop/site-b/dev-b1/samples")]:
        before = []
        while (msg := relay.next_message()) != (marker, b"marker"):
            before.append(msg[0])
        out.append(before)
    return out[0], out[1]


def test_a_device_writes_under_its_own_topic_and_not_under_another_device_or_site(site, probes):
    leaked_a, leaked_b = leaks(site, probes, [
        "edgeloop/site-a/dev-a2/samples",  # another device of its site
        "edgeloop/site-a/dev-a2/state",
        "edgeloop/site-b/dev-a1/samples",  # its own id under another site
        "edgeloop/site-b/dev-b1/samples",  # another site's device
        "edgeloop/site-a/dev-a1/desired",  # its own, but read-only: the relay sets it
        "edgeloop/site-a/campaigns",
        "edgeloop/site-a/models/v1/manifest",
    ])
    assert leaked_a == [] and leaked_b == []


def test_a_device_may_write_its_state_and_feedback_and_read_what_the_relay_sets(site, probes):
    relay = connected(probes(site, "relay-a"))
    relay.subscribe("edgeloop/site-a/+/state")
    relay.subscribe("edgeloop/site-a/+/feedback")
    dev = connected(probes(site, "dev-a1"))
    dev.subscribe("edgeloop/site-a/dev-a1/desired")
    dev.subscribe("edgeloop/site-a/campaigns")
    dev.subscribe("edgeloop/site-a/models/#")
    dev.publish("edgeloop/site-a/dev-a1/state", b"online")
    dev.publish("edgeloop/site-a/dev-a1/feedback", b"{}")
    assert [relay.next_message()[0] for _ in range(2)] == ["edgeloop/site-a/dev-a1/state",
                                                           "edgeloop/site-a/dev-a1/feedback"]
    for topic in ["edgeloop/site-a/dev-a1/desired", "edgeloop/site-a/campaigns", "edgeloop/site-a/models/v1/chunk-0"]:
        relay.publish(topic, b"from the relay")
        assert dev.next_message() == (topic, b"from the relay")


def test_mqtt5_says_not_authorized_where_311_drops_silently(site, probes):
    dev = connected(probes(site, "dev-a1", v5=True))
    assert str(dev.publish("edgeloop/site-b/dev-a1/samples", b"x")) == "Not authorized"
    assert str(dev.publish("edgeloop/site-a/dev-a2/samples", b"x")) == "Not authorized"
    assert not dev.publish("edgeloop/site-a/dev-a1/samples", b"x").is_failure


def test_a_relay_reads_only_its_own_site(site, probes):
    relay_a = connected(probes(site, "relay-a"))
    relay_a.subscribe("edgeloop/#")  # granted by mosquitto; the ACL filters what is delivered
    assert not connected(probes(site, "dev-b1")).publish("edgeloop/site-b/dev-b1/samples", b"b").is_failure
    assert not connected(probes(site, "dev-a2")).publish("edgeloop/site-a/dev-a2/samples", b"a").is_failure
    assert relay_a.next_message() == ("edgeloop/site-a/dev-a2/samples", b"a")


def test_the_old_pattern_acl_leaks_across_sites(site, probes, tmp_path):
    """The control: the ACL this work replaced (`pattern write edgeloop/+/%u/samples`) lets dev-a1
    write under site-b, and `leaks` sees it, so its empty answers above mean something."""
    old = tmp_path / "old"
    old.mkdir()
    (old / "edgeloop.acl").write_text("pattern write edgeloop/+/%u/samples\n"
                                      "user relay-a\ntopic readwrite edgeloop/site-a/#\n"
                                      "user relay-b\ntopic readwrite edgeloop/site-b/#\n")
    os.chmod(old / "edgeloop.acl", 0o600)
    port = free_port()
    conf = (site.root / "mosquitto.conf").read_text().split("\n\n")[0]  # the settings, not the listeners
    conf = conf.replace(str(site.root / "edgeloop.acl"), str(old / "edgeloop.acl"))
    conf = conf.replace("persistence true", "persistence false")
    (old / "mosquitto.conf").write_text(f"{conf}\nlistener {port} 127.0.0.1\n")
    broker = start_mosquitto(old / "mosquitto.conf", tmp_path / "logs", port)
    try:
        control = Site(site.root, port, 0, broker)
        leaked_a, leaked_b = leaks(control, probes, ["edgeloop/site-b/dev-a1/samples"])
        assert leaked_a == [] and leaked_b == ["edgeloop/site-b/dev-a1/samples"]
    finally:
        assert broker.stop() == 0, broker.tail()


# --- who may connect ------------------------------------------------------------------------------

def test_a_wrong_password_or_an_unknown_user_is_refused_at_connect(site, probes):
    assert str(refusal(probes(site, "dev-a1", "not-the-password"))) in NOT_AUTHORIZED
    assert str(refusal(probes(site, "dev-zz", "any"))) in NOT_AUTHORIZED
    assert str(refusal(probes(site, "", ""))) in NOT_AUTHORIZED  # no anonymous clients


def test_revoking_cuts_a_device_off_and_refuses_it_after_the_reload(site, probes):
    old_password = site.password("dev-a9")
    online = connected(probes(site, "dev-a9"))
    out = provision("revoke", "--dir", str(site.root), "--id", "dev-a9", "--reload-pid", str(site.broker.proc.pid))
    assert "revoked device dev-a9" in out
    # The reload drops clients whose password no longer verifies: our cue that it has happened.
    assert online.disconnected.wait(TIMEOUT), "the revoked device is still connected after SIGHUP"
    assert str(refusal(probes(site, "dev-a9", old_password))) in NOT_AUTHORIZED
    assert not (site.root / "credentials" / "dev-a9.env").exists()
    assert "user dev-a9" not in (site.root / "edgeloop.acl").read_text()
    # The others are untouched by the reload.
    assert not connected(probes(site, "dev-a1")).publish("edgeloop/site-a/dev-a1/samples", b"x").is_failure


def test_a_device_provisioned_while_the_broker_runs_gets_in_after_the_reload(site, probes):
    provision("device", "--dir", str(site.root), "--site", "site-a", "--id", "dev-a5",
              "--reload-pid", str(site.broker.proc.pid))
    deadline = time.monotonic() + TIMEOUT
    while True:  # SIGHUP is handled by the broker's loop, a moment later: poll until it answers yes
        probe = probes(site, "dev-a5")
        if not probe.connect().is_failure:
            break
        assert time.monotonic() < deadline, "the broker never accepted the new device"
        time.sleep(0.1)
    relay = connected(probes(site, "relay-a"))
    relay.subscribe("edgeloop/site-a/dev-a5/samples")
    probe.publish("edgeloop/site-a/dev-a5/samples", b"hello")
    assert relay.next_message() == ("edgeloop/site-a/dev-a5/samples", b"hello")


# --- TLS ------------------------------------------------------------------------------------------

def test_tls_with_the_site_ca_works(site, probes):
    relay = connected(probes(site, "relay-a"))
    relay.subscribe("edgeloop/site-a/dev-a2/samples")
    for host in ("127.0.0.1", "localhost"):  # both names are in the certificate
        conn = Connection(f"mqtts://{host}:{site.tls_port}", f"tls-{host}", username="dev-a2",
                          password=site.password("dev-a2"), ca_file=site.root / "tls" / "ca.crt").start()
        try:
            assert conn.wait_connected(TIMEOUT)
            conn.publish("edgeloop/site-a/dev-a2/samples", host.encode()).wait_for_publish(TIMEOUT)
        finally:
            conn.stop()
        assert relay.next_message() == ("edgeloop/site-a/dev-a2/samples", host.encode())


def test_tls_without_the_site_ca_or_with_another_ca_fails_verification(site, tmp_path):
    provision("tls", "--dir", str(tmp_path), "--host", "127.0.0.1")  # another CA: the wrong one
    for ca in (None, tmp_path / "tls" / "ca.crt"):  # None: the system's CAs
        conn = Connection(f"mqtts://127.0.0.1:{site.tls_port}", "tls-untrusting", username="dev-a2",
                          password=site.password("dev-a2"), ca_file=ca)
        # The handshake itself, synchronously (Connection.start would retry it in the background).
        with pytest.raises(ssl.SSLCertVerificationError):
            conn.client.connect(conn.host, conn.port)


def test_a_ca_file_with_a_plain_url_or_a_missing_ca_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not TLS"):
        Connection("mqtt://127.0.0.1:1883", "x", ca_file=tmp_path / "ca.crt")
    with pytest.raises(ConfigError, match="CA file"):
        Connection("mqtts://127.0.0.1", "x", ca_file=tmp_path / "missing.crt")


@pytest.mark.parametrize("url, expected", [
    ("mqtt://gw:1884", ("gw", 1884, False)),
    ("mqtts://gw", ("gw", 8883, True)),
    ("mqtts://10.0.0.2:8884", ("10.0.0.2", 8884, True)),
    ("gw:1883", ("gw", 1883, False)),
])
def test_broker_urls(url, expected):
    assert tuple(broker_address(url)) == expected


@pytest.mark.parametrize("url", ["http://gw:1883", "mqtts://", "mqtt://gw:notaport"])
def test_bad_broker_urls(url):
    with pytest.raises(ConfigError):
        broker_address(url)


def test_an_agent_with_provisioned_credentials_reports_over_tls(site, probes, tmp_path):
    """The real entry point: credentials from the provisioned env file, the CA from EDGELOOP_MQTT_CA."""
    from edgeloop.shared.signing import generate_keypair

    (tmp_path / "hub.pub").write_bytes(generate_keypair()[1])
    relay = connected(probes(site, "relay-a"))
    relay.subscribe("edgeloop/site-a/dev-a2/state")
    env = {"EDGELOOP_MQTT_PASSWORD": site.password("dev-a2"),
           "EDGELOOP_MQTT_CA": str(site.root / "tls" / "ca.crt")}
    argv = [sys.executable, "-m", "edgeloop", "agent", "run", "--device", "dev-a2", "--site", "site-a",
            "--broker", f"mqtts://localhost:{site.tls_port}", "--data", str(tmp_path / "agent"),
            "--pubkey", str(tmp_path / "hub.pub"), "--state-interval", "0.5"]
    agent = Service("agent", argv, tmp_path / "logs", env=env).start()
    try:
        try:
            topic, payload = relay.messages.get(timeout=60)
        except queue.Empty:
            pytest.fail("no state from the agent over TLS\n" + agent.tail())
        state = decode(payload, DeviceState)
        assert (state.device_id, state.status) == ("dev-a2", "online")
    finally:
        assert agent.stop() == 0, agent.tail()
        relay.publish("edgeloop/site-a/dev-a2/state", b"", retain=True)  # clear the retained state it left


# --- the files ------------------------------------------------------------------------------------

def test_the_acl_names_each_site_and_leaves_revoked_identities_out():
    acl = render_acl([Identity("device", "dev-1", "site-0"), Identity("relay", "relay-0", "site-0"),
                      Identity("device", "dev-2", "site-1", revoked=True)])
    blocks = [b for b in acl.split("\n\n") if b.lstrip().startswith("#") and "\nuser " in b]
    assert [b.split("\nuser ")[1].split("\n")[0] for b in blocks] == ["dev-1", "relay-0"]
    assert "+" not in "".join(line for line in acl.splitlines() if line.startswith("topic"))
    assert "user dev-2" not in acl and "dev-2 (site site-1): revoked" in acl
    assert acl_rules(Identity("relay", "relay-0", "site-0")) == [("readwrite", "edgeloop/site-0/#")]
    assert ("write", "edgeloop/site-0/dev-1/samples") in acl_rules(Identity("device", "dev-1", "site-0"))
    assert not any(access != "read" for access, topic in acl_rules(Identity("device", "dev-1", "site-0"))
                   if "desired" in topic or "campaigns" in topic or "models" in topic)


@pytest.mark.parametrize("name", ["", "-D", ".hidden", "a/b", "a+b", "a#", "dév", "a b", "x" * 65, "%u"])
def test_ids_that_could_not_be_a_username_topic_level_or_file_name_are_refused(name):
    with pytest.raises(ProvisionError):
        check_name(name, "--id")


@pytest.mark.parametrize("reserved", ["models", "campaigns"])
def test_a_device_may_not_take_a_site_wide_topic_name(tmp_path, reserved):
    result = CliRunner().invoke(main, ["provision", "device", "--dir", str(tmp_path), "--site", "s", "--id", reserved])
    assert result.exit_code == 2 and "reserved" in result.output


def test_provisioning_twice_needs_rotate_and_the_secrets_are_private(tmp_path):
    provision("device", "--dir", str(tmp_path), "--site", "s", "--id", "dev-1")
    first = password_of(tmp_path, "dev-1")
    again = CliRunner().invoke(main, ["provision", "device", "--dir", str(tmp_path), "--site", "s", "--id", "dev-1"])
    assert again.exit_code == 2 and "--rotate" in again.output
    moved = CliRunner().invoke(main, ["provision", "device", "--dir", str(tmp_path), "--site", "t", "--id", "dev-1"])
    assert moved.exit_code == 2 and "revoke it first" in moved.output
    assert "new password" in provision("device", "--dir", str(tmp_path), "--site", "s", "--id", "dev-1", "--rotate")
    assert password_of(tmp_path, "dev-1") != first
    assert first not in (tmp_path / "edgeloop.passwd").read_text()  # hashed by mosquitto_passwd
    for secret in ["credentials/dev-1.env", "edgeloop.passwd", "identities.json"]:
        assert (tmp_path / secret).stat().st_mode & 0o077 == 0, secret
    registry = json.loads((tmp_path / "identities.json").read_text())["identities"]
    assert [(i["kind"], i["id"], i["site"], i["revoked"]) for i in registry] == [("device", "dev-1", "s", False)]


def test_a_missing_mosquitto_passwd_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgeloop", "provision", "device", "--dir", str(tmp_path),
                           "--site", "s", "--id", "dev-1"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": str(tmp_path)})
    assert proc.returncode == 2 and "mosquitto_passwd is not installed" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_tls_files_are_ecdsa_with_the_hosts_and_a_private_key(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    provision("tls", "--dir", str(tmp_path), "--host", "gw.site-0.local", "--host", "192.168.1.10")
    tls = tmp_path / "tls"
    ca = x509.load_pem_x509_certificate((tls / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((tls / "server.crt").read_bytes())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["gw.site-0.local"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["192.168.1.10"]
    assert (tls / "server.key").stat().st_mode & 0o077 == 0 and (tls / "ca.key").stat().st_mode & 0o077 == 0
    # A second run renews the server certificate under the same CA: clients keep their ca.crt.
    assert "reused the CA" in provision("tls", "--dir", str(tmp_path), "--host", "gw.site-0.local")
    assert x509.load_pem_x509_certificate((tls / "ca.crt").read_bytes()) == ca


def test_the_deploy_examples_are_what_provision_generates():
    from edgeloop.provision import render_broker_conf

    deploy = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto"
    ids = [Identity("relay", "relay-0", "site-0"), Identity("device", "dev-001", "site-0"),
           Identity("device", "dev-002", "site-0")]
    # Each file: a paragraph saying it is an example, then exactly what the renderer writes.
    assert (deploy / "edgeloop.acl").read_text().split("\n\n", 1)[1] == render_acl(ids)
    assert (deploy / "mosquitto.conf").read_text().split("\n\n", 1)[1] == render_broker_conf(
        Path("/etc/mosquitto/edgeloop"), 1883, 8883, "mosquitto", "127.0.0.1", None, Path("/var/lib/mosquitto"))


# --- client ids: nobody takes over the relay's session ----------------------------------------------

class Session:
    """A paho client with the client id and session kind of our choosing (what an attacker chooses)."""

    def __init__(self, site: Site, user: str, client_id: str, clean: bool):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean,
                                  reconnect_on_failure=False)
        self.client.username_pw_set(user, site.password(user))
        self.connacks: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.received: list[bytes] = []
        self.gone = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: self.connacks.put(rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        self.client.on_message = lambda c, u, m: self.received.append(m.payload)
        self.client.on_disconnect = lambda c, u, f, rc, p: self.gone.set()
        self.client.connect("127.0.0.1", site.port, keepalive=30)
        self.client.loop_start()
        assert not self.connacks.get(timeout=TIMEOUT).is_failure

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        assert not any(rc.is_failure for rc in self.subacks.get(timeout=TIMEOUT))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_device_cannot_wipe_or_kick_the_relays_session_with_its_client_id(site, probes):
    # The setting opens no listener of its own (written before a `listener` line, mosquitto 2.0
    # would open one on 1883, every interface).
    opened = set(re.findall(r"Opening ipv[46] listen socket on port (\d+)", site.broker.log_path.read_text()))
    assert opened == {str(site.port), str(site.tls_port)}, opened
    # The relay, as relay/service.py connects: a predictable client id and a persistent session.
    relay = Session(site, "relay-a", "relay-relay-a", clean=False)
    relay.subscribe("edgeloop/site-a/+/samples")
    relay.close()  # the relay restarts: the broker queues what agents send meanwhile
    dev = connected(probes(site, "dev-a1"))
    for i in range(3):
        assert not dev.publish("edgeloop/site-a/dev-a1/samples", f"queued-{i}".encode()).is_failure

    # Another device's credentials, the relay's client id, a clean session.
    thief = Session(site, "dev-a2", "relay-relay-a", clean=True)
    thief.close()
    # The relay comes back to its session: what was queued for it is still there.
    relay = Session(site, "relay-a", "relay-relay-a", clean=False)
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(relay.received) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(relay.received) == [b"queued-0", b"queued-1", b"queued-2"]
        # And while it runs, connecting under its client id does not kick it off.
        thief = Session(site, "dev-a2", "relay-relay-a", clean=True)
        assert not relay.gone.wait(1.0), "a device's credentials kicked the live relay off the broker"
        thief.close()
    finally:
        relay.close()
