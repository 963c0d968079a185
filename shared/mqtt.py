"""paho-mqtt glue shared by agent and relay: connect with a last will, reconnect with backoff.

Decides nothing: callers pass callbacks. Errors from paho are mapped to PeerUnavailable.
"""

from __future__ import annotations

import functools
import logging
import ssl
import sys
import threading
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .errors import ConfigError, PeerUnavailable

log = logging.getLogger(__name__)


def _surviving(handler):
    """on_message that logs what its handler raises instead of raising it into paho's network
    thread, which the exception would end: the client would hear nothing more, a receipt would
    never arrive (an agent hung draining its outbox so, bench chaos). A QoS 1 message is then
    acknowledged unless the client acks by hand, as the relay does after storing."""
    def on_message(client, userdata, msg):
        try:
            handler(client, userdata, msg)
        except Exception:  # noqa: BLE001 - one message's bug must not silence the connection
            log.exception("unexpected error handling a message on %s; going on with the next", msg.topic)
    return on_message

# The brokers we configure send this many QoS 1 messages to a client before its acks: the relay
# stores what is in flight to it in one commit (_BatchingClient), so mosquitto's default of 20 made
# that group 20 at most, an fsync per 20 candidates.
BROKER_MAX_INFLIGHT = 256


class _BatchingClient(mqtt.Client):
    """A paho client whose network loop reads every message already waiting on the socket (up to
    BROKER_MAX_INFLIGHT) and then hands them, in order, to `on_batch` on the same thread.

    For a receiver that stores what it gets before acking it by hand (the relay): what arrived
    together is decoded in one pass and stored in one transaction, one fsync. paho's `loop_read`
    reads as many packets as it has messages in flight (often one): it is called again until a
    pass brings no new message."""

    def __init__(self, *args, on_batch, **kwargs):
        super().__init__(*args, **kwargs)
        self._batch: list[mqtt.MQTTMessage] = []
        self._on_batch = on_batch
        self.on_message = lambda client, userdata, msg: self._batch.append(msg)

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        rc = mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        try:
            while len(self._batch) < BROKER_MAX_INFLIGHT:
                had = len(self._batch)
                rc = super().loop_read(max_packets)
                if rc != mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS or len(self._batch) == had:
                    break
        finally:
            batch, self._batch = self._batch, []
            if batch:
                try:
                    self._on_batch(batch)
                except Exception:  # noqa: BLE001 - as _surviving: the network thread must live on
                    log.exception("unexpected error handling %d messages (from %s on); going on", len(batch),
                                  batch[0].topic)
        return rc
SESSION_EXPIRY_S = 7 * 86400  # MQTT 5 persistent sessions: a week offline before the broker drops the queue


class BrokerAddress(NamedTuple):
    host: str
    port: int
    tls: bool


_SCHEMES = {"mqtt": (1883, False), "tcp": (1883, False), "mqtts": (8883, True)}


def broker_address(url: str) -> BrokerAddress:
    """mqtt://host[:1883] or mqtts://host[:8883] (TLS) -> BrokerAddress; a bare host:port is mqtt://."""
    u = urlparse(url if "://" in url else f"mqtt://{url}")
    try:
        port = u.port
    except ValueError:  # a port that is not a number or out of range
        port = -1
    if u.scheme not in _SCHEMES or not u.hostname or port == -1:
        raise ConfigError(f"broker URL {url!r}: expected mqtt://host:port or mqtts://host:port (TLS)")
    default_port, tls = _SCHEMES[u.scheme]
    return BrokerAddress(u.hostname, port or default_port, tls)


def parse_url(url: str) -> tuple[str, int]:
    """mqtt://host:port (or mqtts://) -> (host, port)."""
    host, port, _ = broker_address(url)
    return host, port


class Connection:
    """A paho client running its network loop in a thread; `connected` tells the link state."""

    def __init__(self, url: str, client_id: str, *, username: str | None = None, password: str | None = None,
                 will: tuple[str, bytes] | None = None, on_message=None, subscriptions: list[tuple[str, int]] = (),
                 clean_session: bool = True, manual_ack: bool = False, v5: bool = False,
                 ca_file: str | Path | None = None, on_batch=None):
        """v5: speak MQTT 5 (needed for shared subscriptions, `$share/...`; mosquitto has it, the
        embedded amqtt broker does not). A persistent session (clean_session=False) then lives for
        SESSION_EXPIRY_S after a disconnect, as a 3.1.1 session does until the broker forgets it.

        An mqtts:// URL speaks TLS and verifies the broker's certificate and host name against
        ca_file (PEM; e.g. the site CA from `edgeloop provision tls`), or against the system's CAs
        when ca_file is None. on_batch(messages), instead of on_message: the messages that arrived
        together, on paho's thread (_BatchingClient). Raises ConfigError for an unusable URL or CA file, or a CA file given
        with a plain mqtt:// URL (the link would not be encrypted, whatever the operator meant)."""
        self.host, self.port, tls = broker_address(url)
        if ca_file is not None and not tls:
            raise ConfigError(f"a CA file ({ca_file}) was given but the broker URL {url!r} is not TLS; "
                              f"use mqtts://{self.host}:8883")
        self.connected = threading.Event()
        self.sessions = 0  # connections made so far: a new one may be with a broker that restarted
        self._stopping = False
        self._subs = list(subscriptions)
        self._connect_kw: dict = {}
        # manual_ack: the receiver sends PUBACK itself, once what it received is on disk.
        client = functools.partial(_BatchingClient, on_batch=on_batch) if on_batch else mqtt.Client
        if v5:
            self.client = client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                                 manual_ack=manual_ack)
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0 if clean_session else SESSION_EXPIRY_S
            self._connect_kw = {"clean_start": clean_session, "properties": props}
        else:
            self.client = client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                 clean_session=clean_session, manual_ack=manual_ack)
        if tls:
            try:
                # Verifies the chain and the host name (paho's defaults: CERT_REQUIRED, not insecure).
                self.client.tls_set(ca_certs=str(ca_file) if ca_file is not None else None)
            except (OSError, ssl.SSLError) as exc:  # missing file, or not PEM certificates
                raise ConfigError(f"CA file {ca_file}: {getattr(exc, 'strerror', None) or exc}") from exc
        if username:
            self.client.username_pw_set(username, password)
        if will:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.max_inflight_messages_set(64)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self._tls_failure = ""  # the last TLS handshake error told, so a retry loop says it once
        if on_message:
            self.client.on_message = _surviving(on_message)

    def start(self) -> "Connection":
        try:
            self.client.connect_async(self.host, self.port, keepalive=15, **self._connect_kw)
        except (OSError, ValueError) as exc:
            raise PeerUnavailable(f"broker {self.host}:{self.port}: {exc}") from exc
        self.client.loop_start()
        return self

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def stop(self, final: tuple[str, bytes] | None = None) -> None:
        """Optionally publish a last retained message (e.g. state offline), then disconnect."""
        if final and self.connected.is_set():
            info = self.client.publish(final[0], final[1], qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2)
            except (RuntimeError, ValueError):
                pass
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("broker %s:%s refused the connection: %s", self.host, self.port, reason_code)
            return
        log.info("connected to broker %s:%s", self.host, self.port)
        self._tls_failure = ""
        for topic, qos in self._subs:
            client.subscribe(topic, qos)
        self.sessions += 1
        self.connected.set()

    def _on_connect_fail(self, client, userdata):
        # paho calls this inside its `except OSError`, and retries quietly: a wrong or missing CA
        # file would otherwise look like a broker that is down.
        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLError) and str(exc) != self._tls_failure:
            self._tls_failure = str(exc)
            log.warning("TLS with broker %s:%s failed: %s; retrying (check the CA file and the host name)",
                        self.host, self.port, exc)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        if self.connected.is_set() and not self._stopping:
            log.warning("lost the broker %s:%s (%s); reconnecting", self.host, self.port, reason_code)
        self.connected.clear()
