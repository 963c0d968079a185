"""Feedback from the application that uses the model: "that prediction was wrong" (or "right").

The application names a recent frame by its id (`sample_id`, as listed by GET /recent) or by its
capture time (`at`, seconds since the epoch: the nearest recent frame within `tolerance_s`). The
agent keeps a short ring of recent frames, bounded in count and bytes, so the flagged frame can
still be sent; it becomes a candidate with the reason `feedback:wrong` or `feedback:confirmed`.

Two ways in, with the same JSON body:
- HTTP on loopback: POST /feedback  {"sample_id": "...", "verdict": "wrong", "label": "7"}
- MQTT: publish it to edgeloop/{site}/{device}/feedback
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from edgeloop.shared.errors import EdgeloopError, ProtocolError, StorageError
from edgeloop.shared.protocol import MAX_STR
from edgeloop.shared.sampling.policy import PRIORITY

from .pipeline import build_candidate

log = logging.getLogger("edgeloop.agent")

VERDICTS = ("wrong", "confirmed")
MAX_FEEDBACK_BYTES = 4096


class FrameGone(EdgeloopError):
    """The flagged frame is no longer (or never was) in the agent's recent frames."""

    hint = "flag frames within the last few seconds; GET /recent lists the ones still held"


@dataclass(frozen=True)
class Feedback:
    verdict: str
    sample_id: str | None = None
    at: float | None = None
    tolerance_s: float = 1.0
    label: str | None = None  # what the application believes the right answer is, if it knows

    @classmethod
    def parse(cls, data: bytes | str) -> "Feedback":
        if len(data) > MAX_FEEDBACK_BYTES:
            raise ProtocolError(f"feedback: {len(data)} bytes exceeds the limit of {MAX_FEEDBACK_BYTES}")
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"feedback: not valid JSON ({exc})") from exc
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Any) -> "Feedback":
        if not isinstance(raw, dict):
            raise ProtocolError("feedback: expected a JSON object")
        unknown = sorted(set(raw) - {"verdict", "sample_id", "at", "tolerance_s", "label"})
        if unknown:
            raise ProtocolError(f"feedback: unknown key(s) {', '.join(map(str, unknown))}")
        verdict = raw.get("verdict")
        if verdict not in VERDICTS:
            raise ProtocolError(f"feedback.verdict: expected one of {', '.join(VERDICTS)}, got {verdict!r}")
        sid, at = raw.get("sample_id"), raw.get("at")
        if (sid is None) == (at is None):
            raise ProtocolError("feedback: give exactly one of sample_id or at")
        if sid is not None and (not isinstance(sid, str) or not 0 < len(sid) <= MAX_STR):
            raise ProtocolError("feedback.sample_id: expected a frame id string")
        if at is not None and not _finite(at):
            raise ProtocolError("feedback.at: expected a capture time in seconds since the epoch")
        tol = raw.get("tolerance_s", 1.0)
        if not _finite(tol) or not 0 <= tol <= 3600:
            raise ProtocolError("feedback.tolerance_s: expected seconds from 0 to 3600")
        label = raw.get("label")
        if label is not None and (not isinstance(label, str) or not 0 < len(label) <= MAX_STR):
            raise ProtocolError("feedback.label: expected a short string")
        return cls(verdict, sid, None if at is None else float(at), float(tol), label)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class RecentFrame:
    sample_id: str
    frame: Any  # SourceFrame (the raw image: encoding every frame would cost the device too much)
    pred: Any  # Prediction
    model_version: str

    @property
    def nbytes(self) -> int:
        return self.frame.image.nbytes


class RecentFrames:
    """A ring of the last frames, bounded in count and bytes; thread-safe (frame loop writes, API reads)."""

    def __init__(self, max_frames: int = 64, max_bytes: int = 32 << 20):
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self._items: OrderedDict[str, RecentFrame] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def add(self, sample_id: str, frame, pred, model_version: str) -> None:
        item = RecentFrame(sample_id, frame, pred, model_version)
        if self.max_frames <= 0 or item.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(sample_id, None)
            self._bytes -= old.nbytes if old else 0
            self._items[sample_id] = item
            self._bytes += item.nbytes
            while len(self._items) > self.max_frames or self._bytes > self.max_bytes:
                _, gone = self._items.popitem(last=False)
                self._bytes -= gone.nbytes

    def find(self, fb: Feedback) -> RecentFrame:
        with self._lock:
            if fb.sample_id is not None:
                item = self._items.get(fb.sample_id)
                if item is None:
                    raise FrameGone(f"frame {fb.sample_id} is not among the {len(self._items)} recent frames")
                return item
            best = min(self._items.values(), key=lambda r: abs(r.frame.captured_at - fb.at), default=None)
            if best is None or abs(best.frame.captured_at - fb.at) > fb.tolerance_s:
                raise FrameGone(f"no recent frame within {fb.tolerance_s} s of {fb.at}")
            return best

    def listing(self) -> list[dict]:
        with self._lock:
            return [{"sample_id": r.sample_id, "captured_at": r.frame.captured_at, "camera_id": r.frame.camera_id,
                     "predicted": int(r.pred.label), "confidence": round(float(r.pred.confidence), 4),
                     "model_version": r.model_version} for r in self._items.values()]

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes


class FeedbackDesk:
    """Turns the application's feedback into candidates: the flagged frame, outside every budget.

    A frame already queued for its own merit is upgraded in place (same id, feedback's worth)."""

    def __init__(self, recent: RecentFrames, outbox, site: str, device_id: str, wake: threading.Event):
        self.recent, self.outbox, self.site, self.device_id, self.wake = recent, outbox, site, device_id, wake
        self.counts: Counter[str] = Counter()

    def take(self, fb: Feedback) -> dict:
        """Queue the flagged frame; FrameGone if no longer held, StorageError if the outbox refuses it."""
        item = self.recent.find(fb)
        reason = f"feedback:{fb.verdict}"
        extra = {"feedback_label": fb.label} if fb.label else {}
        cand = build_candidate(item.frame, item.pred, item.model_version, item.sample_id, self.site,
                               self.device_id, PRIORITY[reason], {}, (reason,), extra)
        if not self.outbox.put(cand, cand.value, replace=True):
            raise StorageError(f"the outbox refused feedback frame {item.sample_id}")
        self.counts[fb.verdict] += 1
        self.wake.set()
        log.info("feedback %s on frame %s queued", fb.verdict, item.sample_id)
        return {"sample_id": item.sample_id, "reason": reason, "captured_at": item.frame.captured_at}

    def failed(self) -> None:
        self.counts["failed"] += 1
