"""Publishes the outbox to the relay over MQTT: lease a batch, publish QoS 1, delete on PUBACK.

A crash between publish and PUBACK resends on restart (leases do not survive the process): the
relay deduplicates by sample_id, so at-least-once delivery loses nothing and doubles nothing.
Batches are sized to the link's measured rate (shared/pacing.py), and a PUBACK that is late while
the link is up is waited for, not answered with a second copy queued behind the first: so a slow
link (a cellular modem, a congested site) drains at its speed instead of never.
"""

from __future__ import annotations

import logging
import threading
import time

from edgeloop.shared import topics
from edgeloop.shared.mqtt import Connection
from edgeloop.shared.outbox import SqliteOutbox
from edgeloop.shared.pacing import Pace
from edgeloop.shared.protocol import SampleBatch, encode

log = logging.getLogger(__name__)
LATE_FACTOR = 3.0  # a PUBACK later than this many timeouts, link up or not, means the copy is gone: resend


class Uplink(threading.Thread):
    def __init__(self, conn: Connection, outbox: SqliteOutbox, site: str, device: str,
                 batch_items: int = 32, batch_bytes: int = 256 << 10, ack_timeout: float = 10.0):
        super().__init__(name="uplink", daemon=True)
        self.conn, self.outbox, self.site, self.device = conn, outbox, site, device
        self.batch_items = batch_items
        self.pace = Pace(max_bytes=batch_bytes, min_timeout_s=ack_timeout)
        self.late_acks = 0  # PUBACKs that came after their timeout, while the link stayed up
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
            batch = self.outbox.lease(self.batch_items, self.pace.batch_bytes())
            if not batch:
                self.wake.wait(0.5)
                self.wake.clear()
                continue
            payload = encode(SampleBatch(source=self.device, site=self.site, samples=tuple(batch)))
            ids = [c.sample_id for c in batch]
            t0 = time.monotonic()
            acked = self._await_puback(self.conn.publish(topic, payload, qos=1), len(payload), t0)
            if acked:
                self.pace.acked(len(payload), time.monotonic() - t0)
                # Delete only after PUBACK: a crash before this line resends, never loses.
                self.outbox.ack(ids)
                self.bytes_sent += len(payload)
                self.batches_sent += 1
            else:
                self.outbox.release(ids)
                log.info("no PUBACK for %d samples; will resend", len(ids))
                self.stop_event.wait(1.0)

    def _await_puback(self, info, nbytes: int, t0: float) -> bool:
        """True once the broker acknowledges the publish. Past the pace's timeout, while the link is
        up, the copy is still on its way: keep waiting (and send smaller batches next), up to
        LATE_FACTOR timeouts; False when the link dropped or the copy is given up for lost."""
        timeout = self.pace.timeout_s(nbytes)
        late = False
        while not self.stop_event.is_set():
            try:
                info.wait_for_publish(timeout=min(1.0, timeout))
                if info.is_published():
                    self.late_acks += late
                    return True
            except (RuntimeError, ValueError):  # not queued: the link dropped under us
                return False
            waited = time.monotonic() - t0
            if not self.conn.connected.is_set() or waited > LATE_FACTOR * timeout:
                return False
            if waited > timeout and not late:
                late = True
                self.pace.timed_out(nbytes, waited)
                log.info("no PUBACK for %d bytes after %.0f s on a live link: waiting for it, sending at most %d "
                         "bytes a batch next", nbytes, waited, self.pace.batch_bytes())
        return False

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()
