"""Event-time progress per device, at a receiver that budgets many devices' candidates (the relay).
Pure, no I/O: the caller passes its own clock.

Capture times come from device clocks, and one wrong clock must not decide for a site:

- The site's watermark, which closes selection windows, is the oldest of the active devices' own
  watermarks (each the newest capture time that device sent; active: heard from within `idle_s`),
  as in Flink, but among those no more than `max_lag_s` behind the median device: a window waits
  for a device that is a little behind, not for one an hour behind (whose candidates are then late
  and judged in the late panes of their windows). A minority of clocks ahead or behind does not
  move it, and a device that went quiet does not hold it back.
- A capture time more than `max_ahead_s` ahead of the receiver's clock is not believed (a device
  whose clock says 2100 would otherwise open windows nobody else reaches). It is corrected to the
  site's watermark (the receiver's clock when no device has one), and the candidate says so: reason
  `clock:corrected`, the time it claimed in its scores. Nothing is refused for a wrong clock. While
  its times are corrected, a device has no say in the site's watermark, even alone: a corrected time
  is the receiver's clock when nobody else is heard, and a site whose cameras live in the past (a
  simulator's epoch, a backlog) would find every window closed when they came. With no believed
  device the site has no watermark, and the receiver flushes its windows instead (a flush marks the
  windows it closes, it does not close everything before them).
- Times in the past are believed: a backlog is old by nature (and simulated cameras live in
  2026-01). A device an hour behind is an hour late in everything it sends; its candidates are
  judged in the late panes of their own windows (selectors.py), with the share they would have had.
"""

from __future__ import annotations

import math

CLOCK_CORRECTED = "clock:corrected"
CLAIMED_AT = "claimed_captured_at"  # the score that keeps a corrected candidate's own capture time


class Watermarks:
    def __init__(self, max_ahead_s: float = 600.0, idle_s: float = 300.0, max_lag_s: float = 600.0):
        if max_ahead_s < 0 or idle_s <= 0 or max_lag_s < 0:
            raise ValueError("max_ahead_s and max_lag_s must be >= 0, idle_s > 0")
        self.max_ahead_s, self.idle_s, self.max_lag_s = max_ahead_s, idle_s, max_lag_s
        self._marks: dict[str, float] = {}  # device -> newest capture time it sent (as admitted)
        self._heard: dict[str, float] = {}  # device -> receiver time it was last heard from
        self.corrected: dict[str, int] = {}  # device -> how many of its capture times were corrected
        self._suspect: set[str] = set()  # devices whose latest capture time was corrected

    def admit(self, device: str, captured_at: float, now: float) -> float | None:
        """Note a candidate of `device`; -> None if its capture time is believed, else the time to
        use instead. Either way the device's watermark advances to the time used."""
        fixed = None
        if not math.isfinite(captured_at) or captured_at > now + self.max_ahead_s:
            others = self.site(now, without=device)
            fixed = others if math.isfinite(others) else now
            self.corrected[device] = self.corrected.get(device, 0) + 1
            self._suspect.add(device)
        else:
            self._suspect.discard(device)
        t = captured_at if fixed is None else fixed
        self._marks[device] = max(self._marks.get(device, -math.inf), t)
        self._heard[device] = now
        return fixed

    def site(self, now: float, without: str | None = None) -> float:
        """The oldest of the active devices' watermarks within max_lag_s of their upper median, of
        those whose clocks are believed; -inf when there are none."""
        active = [d for d in self._marks if d != without and now - self._heard[d] <= self.idle_s]
        marks = sorted(self._marks[d] for d in active if d not in self._suspect)
        if not marks:
            return -math.inf
        median = marks[len(marks) // 2]
        return next(m for m in marks if m >= median - self.max_lag_s)

    def of(self, device: str) -> float:
        return self._marks.get(device, -math.inf)

    def forget_idle(self, now: float, older_than_s: float) -> int:
        """Drop devices not heard from for older_than_s (a site's fleet changes) -> how many."""
        gone = [d for d, t in self._heard.items() if now - t > older_than_s]
        for d in gone:
            del self._marks[d], self._heard[d]
            self.corrected.pop(d, None)
            self._suspect.discard(d)
        return len(gone)
