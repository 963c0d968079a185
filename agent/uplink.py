"""Publishes the outbox to the relay over MQTT: lease a batch, publish QoS 1, and delete what the
relay's receipt names (protocol.Receipt, on `.../received`), once the relay has it on disk.

Not on the broker's PUBACK: mosquitto acknowledges a message before it saves it (its autosave runs
every 30 minutes by default, and saving on every change would rewrite its whole store per message),
so a power cut at the broker would lose what a relay that was away had not yet taken. The PUBACK
still paces the link; a sample the broker acknowledged waits in the outbox, leased, for its
receipt. A new session with the broker (it may have restarted empty) or a receipt later than
`receipt_timeout` sends it again. A crash resends on restart too (leases do not survive the
process): the relay deduplicates by sample_id and answers a duplicate with a receipt, so
at-least-once delivery loses nothing and doubles nothing.
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
from edgeloop.shared.protocol import Receipt, SampleBatch, encode

log = logging.getLogger(__name__)
LATE_FACTOR = 3.0  # a PUBACK later than this many timeouts, link up or not, means the copy is gone: resend


class Uplink(threading.Thread):
    def __init__(self, conn: Connection, outbox: SqliteOutbox, site: str, device: str,
                 batch_items: int = 32, batch_bytes: int = 256 << 10, ack_timeout: float = 10.0,
                 receipt_timeout: float = 600.0, max_awaiting: int = 1024):
        super().__init__(name="uplink", daemon=True)
        self.conn, self.outbox, self.site, self.device = conn, outbox, site, device
        self.batch_items = batch_items
        self.receipt_timeout, self.max_awaiting = receipt_timeout, max_awaiting
        # Sample id -> (broker session it was sent in, when): acknowledged by the broker, not yet
        # received by the relay. A receipt counts only for a send of the current session.
        self._awaiting: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._session = 0
        self.receipts = 0  # samples the relay confirmed, so deleted
        self.resent = 0  # samples sent again for want of a receipt
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
            self._resend_unreceipted()
            with self._lock:
                room = self.max_awaiting - len(self._awaiting)
            batch = self.outbox.lease(min(self.batch_items, room), self.pace.batch_bytes()) if room > 0 else []
            if not batch:
                self.wake.wait(0.5)
                self.wake.clear()
                continue
            payload = encode(SampleBatch(source=self.device, site=self.site, samples=tuple(batch)))
            ids = [c.sample_id for c in batch]
            t0 = time.monotonic()
            with self._lock:  # before publishing: the receipt may come before we see the PUBACK
                self._awaiting.update((i, (self._session, t0)) for i in ids)
            acked = self._await_puback(self.conn.publish(topic, payload, qos=1), len(payload), t0)
            if acked:
                self.pace.acked(len(payload), time.monotonic() - t0)
                self.bytes_sent += len(payload)
                self.batches_sent += 1
            else:
                with self._lock:
                    for i in ids:
                        self._awaiting.pop(i, None)
                self.outbox.release(ids)
                log.info("no PUBACK for %d samples; will resend", len(ids))
                self.stop_event.wait(1.0)

    def received(self, receipt: Receipt) -> None:
        """The relay has these on disk (paho's thread): delete them. A sample replaced meanwhile
        (feedback on the frame) is kept and sent again (SqliteOutbox.ack)."""
        with self._lock:
            # Once each: a relay may name a sample twice (it stored two copies of a resent batch).
            ids = [i for i in dict.fromkeys(receipt.sample_ids) if self._awaiting.get(i, (-1,))[0] == self._session]
            for i in ids:
                del self._awaiting[i]
        if ids:
            self.outbox.ack(ids)
            self.receipts += len(ids)
            self.wake.set()

    def _resend_unreceipted(self) -> None:
        """Release, to send again, what waits for a receipt from an earlier broker session (the
        broker may have lost it) or for longer than receipt_timeout."""
        session = self.conn.sessions
        now = time.monotonic()
        new_session = session != self._session
        with self._lock:
            if new_session:
                again, self._session = list(self._awaiting), session
            else:
                again = [i for i, (_, t) in self._awaiting.items() if now - t > self.receipt_timeout]
            for i in again:
                del self._awaiting[i]
        if again:
            self.outbox.release(again)
            self.resent += len(again)
            log.info("sending %d samples again: no receipt from the relay %s", len(again),
                     "before this broker session" if new_session else
                     f"within {self.receipt_timeout:.0f} s")

    @property
    def awaiting(self) -> int:
        with self._lock:
            return len(self._awaiting)

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
