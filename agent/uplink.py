"""Publishes the outbox to the relay over MQTT: lease a batch, publish QoS 1, delete on PUBACK.

A crash between publish and PUBACK resends on restart (leases do not survive the process): the
relay deduplicates by sample_id, so at-least-once delivery loses nothing and doubles nothing.
"""

from __future__ import annotations

import logging
import threading

from edgeloop.shared import topics
from edgeloop.shared.mqtt import Connection
from edgeloop.shared.outbox import SqliteOutbox
from edgeloop.shared.protocol import SampleBatch, encode

log = logging.getLogger(__name__)


class Uplink(threading.Thread):
    def __init__(self, conn: Connection, outbox: SqliteOutbox, site: str, device: str,
                 batch_items: int = 32, batch_bytes: int = 256 << 10, ack_timeout: float = 10.0):
        super().__init__(name="uplink", daemon=True)
        self.conn, self.outbox, self.site, self.device = conn, outbox, site, device
        self.batch_items, self.batch_bytes, self.ack_timeout = batch_items, batch_bytes, ack_timeout
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.bytes_sent = 0
        self.batches_sent = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self._send_until_stopped()
            except Exception:  # noqa: BLE001 - the uplink must outlive any one bad pass
                log.exception("uplink pass failed; retrying in 2s")
                self.stop_event.wait(2.0)

    def _send_until_stopped(self) -> None:
        topic = topics.samples(self.site, self.device)
        while not self.stop_event.is_set():
            if not self.conn.connected.wait(0.5):
                continue
            batch = self.outbox.lease(self.batch_items, self.batch_bytes)
            if not batch:
                self.wake.wait(0.5)
                self.wake.clear()
                continue
            payload = encode(SampleBatch(source=self.device, site=self.site, samples=tuple(batch)))
            ids = [c.sample_id for c in batch]
            info = self.conn.publish(topic, payload, qos=1)
            try:
                info.wait_for_publish(timeout=self.ack_timeout)
                acked = info.is_published()
            except (RuntimeError, ValueError):  # not queued: the link dropped under us
                acked = False
            if acked:
                # Delete only after PUBACK: a crash before this line resends, never loses.
                self.outbox.ack(ids)
                self.bytes_sent += len(payload)
                self.batches_sent += 1
            else:
                self.outbox.release(ids)
                log.info("no PUBACK for %d samples; will resend", len(ids))
                self.stop_event.wait(1.0)

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()
