"""How much to send at once, and how long to wait for its acknowledgement, on a link whose speed is
only known by measuring it: pure logic, used by the agent's uplink (MQTT) and the relay's forwarder
(HTTP).

    pace = Pace(max_bytes=256 << 10)
    n = pace.batch_bytes()            # what the next batch may carry
    ... send n bytes, acknowledged after t seconds ...
    pace.acked(n, t)                  # the measured rate moves the next batches and timeouts
    pace.timeout_s(n)                 # how long an n-byte batch may take before it counts as lost

A fixed batch against a fixed timeout never drains a slow link: below batch / timeout bytes a second
every send times out and is sent again behind the copy still in flight. Here a batch is sized to take
about `target_s` at the measured rate, and its timeout is a multiple of what it should take.
"""

from __future__ import annotations

from dataclasses import dataclass

EWMA = 0.3  # weight of the newest measurement


@dataclass
class Pace:
    max_bytes: int
    min_bytes: int = 16 << 10  # below this, per-message overhead dominates: send at least this much
    start_bytes: int = 64 << 10  # before anything is measured
    target_s: float = 2.0  # a batch should take about this long
    min_timeout_s: float = 10.0
    slack: float = 4.0  # a batch may take this many times its expected time before it counts as lost
    rate: float | None = None  # bytes per second, smoothed; None until the first acknowledgement

    def batch_bytes(self) -> int:
        if self.rate is None:
            return max(self.min_bytes, min(self.max_bytes, self.start_bytes))
        return int(max(self.min_bytes, min(self.max_bytes, self.rate * self.target_s)))

    def timeout_s(self, nbytes: int) -> float:
        """How long an n-byte send may take before it counts as lost."""
        rate = self.rate if self.rate else nbytes / self.target_s  # unmeasured: assume it fits the target
        return max(self.min_timeout_s, self.slack * nbytes / max(rate, 1.0))

    def acked(self, nbytes: int, seconds: float) -> None:
        """An n-byte send was acknowledged after `seconds`."""
        measured = nbytes / max(seconds, 1e-3)
        self.rate = measured if self.rate is None else (1 - EWMA) * self.rate + EWMA * measured

    def timed_out(self, nbytes: int, seconds: float) -> None:
        """No acknowledgement within `seconds`: the link is at most that fast; halve what we assumed."""
        bound = nbytes / max(seconds, 1e-3)
        self.rate = min(self.rate or bound, bound) / 2
