"""The pace of a link (shared/pacing.py): batches within bounds and sized to the measured rate,
timeouts that grow with the batch and never below the floor, and a timeout that always slows it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgeloop.shared.pacing import Pace

events = st.lists(st.tuples(st.booleans(), st.integers(1, 1 << 22), st.floats(0.001, 600)), max_size=30)


@given(events, st.integers(1 << 14, 1 << 24))
def test_batches_stay_within_bounds_and_timeouts_above_the_floor(evs, max_bytes):
    pace = Pace(max_bytes=max_bytes)
    for ok, n, secs in evs:
        (pace.acked if ok else pace.timed_out)(n, secs)
        b = pace.batch_bytes()
        assert min(pace.min_bytes, max_bytes) <= b <= max(pace.min_bytes, max_bytes)
        assert pace.timeout_s(b) >= pace.min_timeout_s


@given(events, st.integers(1, 1 << 22), st.floats(0.001, 600))
def test_a_timeout_always_slows_the_pace(evs, n, secs):
    pace = Pace(max_bytes=1 << 22)
    for ok, m, s in evs:
        (pace.acked if ok else pace.timed_out)(m, s)
    before = pace.rate
    pace.timed_out(n, secs)
    assert pace.rate <= n / max(secs, 1e-3) / 2 and (before is None or pace.rate < before)


def test_a_steady_link_settles_on_its_rate_and_batches_of_the_target_time():
    pace = Pace(max_bytes=256 << 10)
    for _ in range(30):
        n = pace.batch_bytes()
        pace.acked(n, n / 20_000)  # a 20 kB/s link
    assert abs(pace.rate - 20_000) < 200 and pace.batch_bytes() == 40_000
    assert pace.timeout_s(40_000) == max(10.0, 4 * 2.0)  # four times what it should take, at least 10 s
