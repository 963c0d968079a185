"""Group commit for the relay's MQTT ingest, on a thread of its own: paho's thread reads what
arrived together and decodes and scores it (shared/mqtt._BatchingClient, Relay._prepare); this
thread stores everything queued meanwhile in one SQLite transaction, then acks it.

A commit with synchronous=FULL waits for the disk (an fsync: ~2 ms here, 10 ms on an SD card), so one
transaction per message caps a relay at a few hundred candidates per second whatever the CPU. The
split is where the GIL allows overlap: sqlite3 releases it while a statement runs (the 20 KB rows'
pages, the log's writes), so the store runs on one core while paho's thread decodes the next
messages on the other (`edgeloop bench scale --parts relay`: README, "Throughput and sizing").
`handle(items) -> the messages to ack`; `ack(msg)` each. The broker's in-flight window bounds what
waits, and a message is on disk before its PUBACK. A message not acked (the disk refused it, or the
relay stopped first) stays with the broker, which sends it again: nothing is lost.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("edgeloop.relay")
# Read passes waiting to be stored (each up to the broker's in-flight window) before paho's thread
# waits too: the broker keeps the rest, not the relay's memory. Without a bound, a window's settle
# that held the store for 1.9 s let 9,672 candidates pile up here, and a 20,000-candidate burst
# ran at two thirds of the rate of a 10,000 one (`edgeloop bench scale --parts relay`).
MAX_WAITING = 4


class Inbox:
    """`put(item)` from paho's thread; `handle(items) -> the messages to ack`, then `ack(msg)` each, on
    a thread of its own (`start()` / `stop()`)."""

    def __init__(self, handle: Callable[[list], list], ack: Callable[[object], None]):
        self._handle, self._ack = handle, ack
        self._queue: queue.Queue = queue.Queue(MAX_WAITING)
        self._thread: threading.Thread | None = None
        self._stop = object()

    def put(self, item) -> None:
        """Queue `item`; waits while MAX_WAITING are queued already."""
        self._queue.put(item)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="relay-inbox", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the group being stored, ack it, and stop; what is still queued is not acked (the
        broker sends it again to the next session)."""
        if self._thread is not None:
            try:
                self._queue.put(self._stop, timeout=timeout)
            except queue.Full:  # the thread is stuck storing: what it holds stays unacked, with the broker
                log.error("the inbox did not take its stop mark in %.0f s; stopping without it", timeout)
                return
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            group = [self._queue.get()]
            while True:  # everything queued: at most MAX_WAITING, and the stop mark
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopping = any(m is self._stop for m in group)
            group = [m for m in group if m is not self._stop]
            if group:
                try:
                    done = self._handle(group)
                except Exception:  # noqa: BLE001 - a bug must not kill ingest; unacked, the broker resends
                    log.exception("unexpected error storing %d messages", len(group))
                    done = []
                for msg in done:
                    try:
                        self._ack(msg)
                    except Exception:  # noqa: BLE001 - a failed ack must not end ingest; the broker resends
                        log.exception("could not acknowledge a stored message")
            if stopping:
                return
