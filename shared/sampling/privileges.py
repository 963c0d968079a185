"""Which of a device's claims to pass every budget a relay honours: devices do not choose their own
privileges.

A candidate's `audit` and `feedback:*` reasons carry it past every budget and to the head of every
queue, and a device writes its own reasons. So the relay checks them before it honours them:

- `audit` holds only when the sample id falls in the audit draw (`is_audit`, the relay's own seed and
  fraction: the draw the agent makes), and within `audit_per_device_hour` per device: a device can no
  longer mark the frames it likes, and one that mints ids to fit the draw gets a bounded share;
- `feedback:wrong` / `feedback:confirmed` hold within `feedback_per_device_hour` per device.

A claim refused is renamed (`audit:refused`, `feedback:wrong:limited`), so no tier above treats it as
privileged, and the candidate competes in the window like any other: nothing is lost for it.

    priv = Privileges(cfg)
    c2 = priv.admit(c, now)        # c, or c with its privileged reasons renamed
    priv.refused                   # {"audit": n, "feedback": n}
"""

from __future__ import annotations

import dataclasses

from ..config import SamplingConfig
from ..protocol import Candidate
from .policy import AUDIT, FEEDBACK_CONFIRMED, FEEDBACK_WRONG, is_audit

REFUSED_AUDIT = "audit:refused"
LIMITED = ":limited"
MAX_DEVICES = 100_000  # buckets kept; past it the oldest device's is forgotten (it starts full again)


class _Bucket:
    """A token bucket: `rate` per hour, holding at most an hour's worth (and that much at first)."""

    __slots__ = ("tokens", "at")

    def __init__(self, rate: float, now: float):
        self.tokens, self.at = rate, now

    def take(self, rate: float, now: float) -> bool:
        self.tokens = min(rate, self.tokens + max(0.0, now - self.at) * rate / 3600.0)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Privileges:
    def __init__(self, cfg: SamplingConfig):
        self.cfg = cfg
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self.refused = {"audit": 0, "feedback": 0}

    def admit(self, c: Candidate, now: float) -> Candidate:
        """`c` as the relay will treat it: privileged reasons it may not claim renamed."""
        reasons = list(c.reasons)
        if AUDIT in reasons and not (is_audit(c.sample_id, self.cfg) and
                                     self._take(c.device_id, "audit", self.cfg.audit_per_device_hour, now)):
            reasons = [REFUSED_AUDIT if r == AUDIT else r for r in reasons]  # every copy: ("audit", "audit")
            self.refused["audit"] += 1
        feedback = [r for r in reasons if r in (FEEDBACK_WRONG, FEEDBACK_CONFIRMED)]
        if feedback and not self._take(c.device_id, "feedback", self.cfg.feedback_per_device_hour, now):
            reasons = [r + LIMITED if r in feedback else r for r in reasons]
            self.refused["feedback"] += 1
        return c if reasons == list(c.reasons) else dataclasses.replace(c, reasons=tuple(reasons))

    def _take(self, device: str, kind: str, rate: float, now: float) -> bool:
        if rate == float("inf"):
            return True
        key = (device, kind)
        bucket = self._buckets.pop(key, None) or _Bucket(rate, now)
        self._buckets[key] = bucket  # most recently used last
        if len(self._buckets) > MAX_DEVICES:
            del self._buckets[next(iter(self._buckets))]
        return bucket.take(rate, now)
