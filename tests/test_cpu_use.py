"""bench/cpu_use.py: how busy the box was over a stretch, from /proc/stat readings."""

from __future__ import annotations

import os
import time

from hypothesis import given
from hypothesis import strategies as st

from edgeloop.bench.cpu_use import BoxMeter, describe, share

ticks = st.lists(st.integers(0, 10**6), min_size=8, max_size=8)


@given(ticks, ticks)
def test_a_share_is_a_fraction_of_the_ticks_between_two_readings(before, step):
    after = [a + d for a, d in zip(before, step)]
    use = share(before, after)
    if sum(step) == 0:
        assert use is None  # no time between them
        return
    idle = step[3] + step[4]  # idle, iowait
    assert use["busy"] == round((sum(step) - idle) / sum(step), 3)
    assert use["steal"] == round(step[7] / sum(step), 3) and use["iowait"] == round(step[4] / sum(step), 3)
    assert 0 <= use["steal"] <= use["busy"] + 0.001 <= 1.001


def test_without_readings_there_is_no_share():
    assert share(None, [1] * 8) is None and share([1] * 8, None) is None
    assert describe(None) == "busy: unknown"
    assert describe({"busy": 0.953, "iowait": 0.0, "steal": 0.0}) == "95% busy"
    assert describe({"busy": 0.5, "iowait": 0.1, "steal": 0.02}) == "50% busy, 10% waiting on the disk, 2% stolen"


def test_a_core_kept_busy_shows_in_the_stretch_it_spun_and_not_outside_the_meter():
    with BoxMeter(every_s=0.01) as meter:
        meter.follow(os.getpid())
        t0 = time.time()
        while time.time() - t0 < 0.4:  # one core of os.cpu_count(), all the time
            pass
        t1 = time.time()
    use = meter.use(t0, t1, os.getpid())
    cores = os.cpu_count() or 1
    assert use is not None and use["busy"] >= 0.8 / cores
    # this process's share: the spinning core, within the box's busy share (a tick of reading skew)
    assert 0.8 / cores <= use["process"] <= use["busy"] + 0.05
    assert meter.use(t0, t1)["busy"] == use["busy"] and "process" not in meter.use(t0, t1)
    assert meter.use(t0, t1, pid=2**22 + 7)["process"] is None  # never followed
    assert meter.use(t0 - 60, t1) is None and meter.use(t0, t1 + 60) is None  # outside the readings
