"""How busy the whole box was over a stretch of a benchmark, from /proc/stat (Linux).

A ratio that misses its target on a shared 2-core box says little by itself; what the cores did
meanwhile says why: a second hub process with no idle core left to use, a pass slowed because the
hypervisor gave our virtual CPUs to other machines (`steal`). A thread reads /proc/stat every
EVERY_S, so that a stretch can end at a time another process reports (the last message a
subscriber counted), not when this one noticed it.

    with BoxMeter() as meter:
        meter.follow(pid)                           # a process of the pass (optional)
        t0 = time.time(); ...; t1 = time.time()     # a timed pass
    meter.use(t0, t1, pid)         # {"busy": 0.95, "iowait": 0.02, "steal": 0.01, "process": 0.6}:
                                   # fractions of all cores' time
"""

from __future__ import annotations

import bisect
import threading
import time
from pathlib import Path

EVERY_S = 0.02
_STAT = Path("/proc/stat")


def _ticks() -> list[int] | None:
    """The `cpu` line of /proc/stat: user nice system idle iowait irq softirq steal (clock ticks)."""
    try:
        fields = _STAT.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    return [int(v) for v in fields[1:9]] if fields[:1] == ["cpu"] and len(fields) >= 9 else None


def process_ticks(pid: int) -> int | None:
    """utime + stime of a process, in the same clock ticks as /proc/stat; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])


def share(before: list[int] | None, after: list[int] | None) -> dict | None:
    """Two readings -> {"busy", "iowait", "steal"}, fractions of all cores' time between them; None
    without /proc/stat or with no tick between them. Busy is all but idle and iowait (steal included:
    those cores were not ours to use); iowait, idle with a read or write of ours outstanding (an fsync)."""
    if before is None or after is None:
        return None
    d = [b - a for a, b in zip(before, after)]
    total = sum(d)
    if total <= 0:
        return None
    return {"busy": round((total - d[3] - d[4]) / total, 3), "iowait": round(d[4] / total, 3),
            "steal": round(d[7] / total, 3)}


class BoxMeter:
    """Reads /proc/stat every EVERY_S while open; `use(t0, t1)` for any stretch inside that time."""

    def __init__(self, every_s: float = EVERY_S):
        self.every_s = every_s
        self._times: list[float] = []
        self._ticks: list[list[int]] = []
        self._pids: list[int] = []  # processes followed (follow), read with every reading
        self._procs: list[dict[int, int | None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="box-meter", daemon=True)

    def _read(self) -> bool:
        with self._lock:  # the meter's thread, and follow()'s caller
            procs = {pid: process_ticks(pid) for pid in self._pids}
            ticks = _ticks()
            if ticks is None:
                return False  # not Linux: every use() is None
            self._times.append(time.time())
            self._procs.append(procs)
            self._ticks.append(ticks)
            return True

    def follow(self, pid: int) -> None:
        """Read this process's CPU time with every reading from now on (use(..., pid)), starting
        with one at once."""
        with self._lock:
            self._pids.append(pid)
        self._read()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s) and self._read():
            pass
        self._read()  # a last reading when stopped: the end of every stretch before it

    def __enter__(self) -> BoxMeter:
        if self._read():  # the start of every stretch after it
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def use(self, t0: float, t1: float, pid: int | None = None) -> dict | None:
        """How busy the box was from wall-clock time t0 to t1 (time.time()), to within EVERY_S:
        between the last reading at or before t0 and the first at or after t1. With a followed pid,
        also "process": its share of all cores' time then (None if it was not followed all along)."""
        with self._lock:
            times, ticks, procs = list(self._times), list(self._ticks), list(self._procs)
        i = bisect.bisect_right(times, t0) - 1
        j = bisect.bisect_left(times, t1)
        if i < 0 or j >= len(times) or j <= i:
            return None
        out = share(ticks[i], ticks[j])
        if out is not None and pid is not None:
            a, b = procs[i].get(pid), procs[j].get(pid)
            total = sum(ticks[j]) - sum(ticks[i])
            out["process"] = None if a is None or b is None else round((b - a) / total, 3)
        return out


def describe(use: dict | None) -> str:
    """{"busy", "iowait", "steal"} -> '95% busy' (with the disk wait and the steal when there was
    any), or 'busy: unknown'."""
    if not use:
        return "busy: unknown"
    more = [f"{use[k]:.0%} {what}" for k, what in (("iowait", "waiting on the disk"), ("steal", "stolen"))
            if use.get(k, 0) >= 0.005]
    return ", ".join([f"{use['busy']:.0%} busy", *more])
