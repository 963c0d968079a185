"""What a device reports: the retained `state` (every few seconds, and when something happened), the
numbers behind /metrics, and the last will.

    tele = Telemetry(agent)          # reads the agent's parts; owns nothing but the fps estimate
    tele.stats()                     # numbers (at most MAX_STATS) for the state report
    tele.state("online")             # a DeviceState
    tele.publish()                   # retained, QoS 1, when connected
    tele.run(stop)                   # the reporter thread's loop

Figures of the active model count from the moment it became active; the shadow's (when one runs)
from the moment it was loaded.
"""

from __future__ import annotations

import logging
import threading
import time

from edgeloop.shared import topics
from edgeloop.shared.protocol import MAX_STATS, DeviceState, encode

log = logging.getLogger("edgeloop.agent")


class Telemetry:
    def __init__(self, agent):
        self.agent = agent
        self.fps = 0.0
        self._fps_mark = (time.monotonic(), 0)

    def stats(self) -> dict:
        a = self.agent
        p, sampler, slot, source = a.pipeline, a.pipeline.sampler, a.slot, a.source
        figures = p.figures
        p50, p95 = figures.latency_percentiles(50, 95) if figures else (0.0, 0.0)
        c = a.outbox.counters()
        out = {
            "frames_seen": p.frames, "frames_this_model": slot.frames_this_model, "fps": round(self.fps, 2),
            "latency_p50_ms": round(p50, 3), "latency_p95_ms": round(p95, 3),
            "offered": sampler.offered, "passed_over": sampler.passed_over, "audit": sampler.audited,
            "campaign": sampler.campaign_kept, "kept": c.get("accepted", 0), "evicted": c.get("evicted", 0),
            "refused": c.get("refused", 0), "disk_full": c.get("disk_full", 0), "sent": c.get("sent", 0),
            "corrupt": p.corrupt + getattr(source, "corrupt", 0), "skipped": getattr(source, "skipped", 0),
            "reconnects": getattr(source, "reconnects", 0),
            "feedback_wrong": a.desk.counts["wrong"], "feedback_confirmed": a.desk.counts["confirmed"],
            "feedback_failed": a.desk.counts["failed"], "recent_frames": len(a.recent),
            "bytes_sent": a.uplink.bytes_sent, "raw_bytes": p.raw_bytes, "awaiting_receipt": a.uplink.awaiting,
            "receipts": a.uplink.receipts, "resent": a.uplink.resent,
            "outbox_items": len(a.outbox), "outbox_bytes": a.outbox.used_bytes,
        }
        confidence = figures.mean_confidence if figures else None
        if confidence is not None:
            out["mean_confidence"] = round(confidence, 6)
        out.update(a.guard.stats())
        shadow = slot.shadow
        if shadow is not None:
            out.update(shadow.stats())
        return out

    def state(self, status: str = "online") -> DeviceState:
        a = self.agent
        stats = self.stats() if status == "online" else {}
        if len(stats) > MAX_STATS:  # the receiver would refuse the whole report
            log.error("state has %d stats, more than %d: the last ones are left out", len(stats), MAX_STATS)
            stats = dict(list(stats.items())[:MAX_STATS])
        error = a.last_error or a.pipeline.last_error
        version, facts = a.slot.facts()
        facts.update(a.guard.facts())
        return DeviceState(a.device_id, status, version, ts=time.time(), stats=stats, last_error=error[:1000],
                           facts=facts)

    def publish(self) -> None:
        a = self.agent
        now, n = time.monotonic(), a.pipeline.frames
        t0, n0 = self._fps_mark
        if now - t0 >= 1.0:
            self.fps, self._fps_mark = (n - n0) / (now - t0), (now, n)
        if a.conn.connected.is_set():
            a.conn.publish(topics.state(a.s.site, a.device_id), encode(self.state()), qos=1, retain=True)

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.agent.s.state_interval):
            try:
                self.publish()
            except Exception:  # noqa: BLE001 - telemetry must never stop the agent
                log.exception("state report failed")
