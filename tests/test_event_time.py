"""Budgets by event time: a backlog is judged per the windows it was captured in (late panes against
what each window kept), and one device's wrong clock does not decide for a site (watermarks per
device, capture times too far ahead corrected). Pure properties, then a real relay and mosquitto."""

from __future__ import annotations

import math
import sqlite3
import time

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.shared.config import Budget
from edgeloop.shared.protocol import Candidate
from edgeloop.shared.sampling import WindowedSelector
from edgeloop.shared.sampling.watermarks import CLAIMED_AT, CLOCK_CORRECTED, Watermarks

from factories import make_candidate
from test_sampling import Item, item_lists

WINDOW_S = 60.0


def live(budget: Budget, items) -> set[str]:
    """What the selector keeps when everything comes in time (all offered before any window closes)."""
    sel = WindowedSelector(budget)
    for it in items:
        sel.offer(it)
    return {c.sample_id for c in sel.close_until(None)}


@settings(max_examples=150, deadline=None)
@given(per_window=st.integers(0, 4), items=item_lists(max_items=40), close_times=st.lists(st.floats(-60, 500), max_size=8),
       rnd=st.randoms(use_true_random=False))
def test_whatever_comes_late_keeps_at_least_what_live_would_have_kept(per_window, items, close_times, rnd):
    """A count budget and the top picker: in any arrival order, with windows closing in between, every
    candidate the live run keeps is kept (a late one is judged against what its window kept so far),
    and a window keeps at most its share once per pane it was judged in."""
    budget = Budget(per_hour=per_window * 3600 / WINDOW_S, window_s=WINDOW_S)
    sel = WindowedSelector(budget, lateness_s=10 * 86400)
    ops = [("offer", it) for it in items] + [("close", t) for t in close_times]
    rnd.shuffle(ops)
    kept, panes = [], {}
    for op, arg in ops + [("close", None)]:
        if op == "offer":
            sel.offer(arg)
            continue
        judged = set(sel.open_windows() + sel.late_panes())
        kept += sel.close_until(arg)
        for w in judged - set(sel.open_windows() + sel.late_panes()):
            panes[w] = panes.get(w, 0) + 1
    ids = {c.sample_id for c in kept}
    assert live(budget, items) <= ids
    for w, n in panes.items():
        assert sum(1 for c in kept if sel.window_of(c.captured_at) == w) <= per_window * n
    if not any(op == "close" for op, _ in ops):
        assert ids == live(budget, items)  # nothing was late


def _devices_over_an_hour(rng, devices: list[str], windows: int, per_window: int) -> list[Item]:
    return [Item(f"{d}-{w:03d}-{i}", float(rng.random()), w * WINDOW_S + rng.uniform(0, WINDOW_S), 1)
            for d in devices for w in range(windows) for i in range(per_window)]


def test_an_hour_of_backlog_gets_the_share_the_same_hour_had_live():
    rng = np.random.default_rng(7)
    budget = Budget(per_hour=120, window_s=WINDOW_S)  # two a window, for the whole site
    on_time = _devices_over_an_hour(rng, ["a", "b", "c"], 60, 5)
    backlog = _devices_over_an_hour(rng, ["late"], 60, 5)
    counterfactual = live(budget, on_time + backlog)
    sel = WindowedSelector(budget, lateness_s=86400)
    for it in sorted(on_time, key=lambda it: it.captured_at):  # the site, live, windows closing as it goes
        sel.offer(it)
        sel.close_until(it.captured_at - WINDOW_S)
    sel.close_until(61 * WINDOW_S)
    for it in sorted(backlog, key=lambda it: -it.value):  # the agent's outbox sends its best first
        sel.offer(it)
    kept = {c.sample_id for c in sel.close_until(None)}
    wanted = {sid for sid in counterfactual if sid.startswith("late-")}
    assert len(wanted) >= 20  # the backlog agent's fair share of the hour is real
    assert kept == wanted  # exactly what the same hour live would have kept of it
    assert sel.late_kept == len(wanted)


def device(item) -> str:
    return item.sample_id.split("-")[0]


def _late_run(budget: Budget, on_time, late_ops) -> set[str]:
    """The site live (windows closing as it goes, then all closed), then late ops in order: ("offer",
    item) or ("close", t) -> the ids kept, with late candidates judged per device."""
    sel = WindowedSelector(budget, lateness_s=86400, late_key=device)
    kept = []
    for it in sorted(on_time, key=lambda it: it.captured_at):
        sel.offer(it)
        kept += sel.close_until(it.captured_at - WINDOW_S)
    kept += sel.close_until(10 * WINDOW_S)  # every window closed, and remembered
    for op, arg in late_ops + [("close", None)]:
        if op == "offer":
            sel.offer(arg)
        else:
            kept += sel.close_until(arg)
    return {c.sample_id for c in kept}


@settings(max_examples=100, deadline=None)
@given(per_window=st.integers(1, 3), seed=st.integers(0, 2**32 - 1), closes=st.lists(st.integers(0, 60), max_size=4),
       rnd=st.randoms(use_true_random=False))
def test_with_a_late_key_a_device_s_backlog_gets_its_live_share_whoever_else_came_late(per_window, seed, closes, rnd):
    """Another device's late candidates (before, after or among a backlog's) change nothing of what the
    backlog keeps; with no window closing while it arrives, that is exactly what the same windows live
    would have kept of it, and otherwise at least that."""
    rng = np.random.default_rng(seed)
    budget = Budget(per_hour=per_window * 3600 / WINDOW_S, window_s=WINDOW_S)
    on_time = _devices_over_an_hour(rng, ["a", "b"], 6, 2)
    backlog = _devices_over_an_hour(rng, ["x"], 6, 2)
    other = _devices_over_an_hour(rng, ["y"], 6, 3)
    ops = [("offer", it) for it in backlog + other] + [("close", float(c * WINDOW_S / 10)) for c in closes]
    rnd.shuffle(ops)
    alone = [op for op in ops if not (op[0] == "offer" and device(op[1]) == "y")]
    kept_x = {sid for sid in _late_run(budget, on_time, ops) if sid.startswith("x-")}
    assert kept_x == {sid for sid in _late_run(budget, on_time, alone) if sid.startswith("x-")}
    live_x = {sid for sid in live(budget, on_time + backlog) if sid.startswith("x-")}
    assert live_x <= kept_x
    if not closes:
        assert kept_x == live_x


def test_without_a_late_key_other_late_devices_raise_the_bar_for_a_backlog():
    """The contrast (and why the relay judges per device): judged against everything its window kept
    so far, a backlog that comes after another device's better late candidates keeps less than live."""
    budget = Budget(per_hour=60, window_s=WINDOW_S)  # one a window
    on_time, backlog, other = [Item("a-0", 0.1, 5, 1)], [Item("x-0", 0.5, 6, 1)], [Item("y-0", 0.9, 7, 1)]
    for late_key, expect in ((None, set()), (device, {"x-0"})):
        sel = WindowedSelector(budget, lateness_s=86400, late_key=late_key)
        sel.offer(on_time[0])
        assert [c.sample_id for c in sel.close_until(120)] == ["a-0"]
        sel.offer(other[0])
        assert [c.sample_id for c in sel.close_until(None)] == ["y-0"]  # better than what the window kept
        sel.offer(backlog[0])
        assert {c.sample_id for c in sel.close_until(None)} == expect


def test_a_restarted_selector_keeps_judging_late_candidates_per_device():
    """restore() puts what was kept late back under its device (the relay journals `late`): a device's
    later candidates are judged against its own earlier late picks, not another device's."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Kept:
        sample_id: str
        value: float
        captured_at: float
        nbytes: int
        late: bool

    budget = Budget(per_hour=60, window_s=WINDOW_S)
    sel = WindowedSelector(budget, lateness_s=86400, late_key=device)
    sel.restore([Kept("a-0", 0.1, 5, 1, False), Kept("y-0", 0.9, 7, 1, True), Kept("x-0", 0.5, 6, 1, True)], 1)
    sel.offer(Item("x-1", 0.4, 8, 1))  # below x's own earlier late pick: dropped
    sel.offer(Item("z-0", 0.3, 9, 1))  # a device new to the window: against what it kept in time only
    assert [c.sample_id for c in sel.close_until(None)] == ["z-0"]


def test_a_late_candidate_of_a_forgotten_window_is_judged_with_its_peers_alone():
    sel = WindowedSelector(Budget(per_hour=60, window_s=WINDOW_S), lateness_s=120)  # remembers two windows
    sel.offer(Item("old-best", 0.9, 5, 1))
    assert [c.sample_id for c in sel.close_until(61)] == ["old-best"]
    sel.close_until(600)  # window 0 is forgotten
    sel.offer(Item("late-1", 0.2, 10, 1))
    sel.offer(Item("late-2", 0.3, 20, 1))
    assert [c.sample_id for c in sel.close_until(None)] == ["late-2"]  # one, as its window's share


def test_a_flush_of_a_window_far_ahead_does_not_make_every_window_late():
    """A corrected clock put a candidate at the receiver's time (2026-12) while the site lives in
    2026-01; an idle flush closed that window, and every window before it became late."""
    sel = WindowedSelector(Budget(per_hour=60, window_s=WINDOW_S), lateness_s=86400)
    sel.offer(Item("far-ahead", 0.5, 1e9, 1))
    assert [c.sample_id for c in sel.close_until(None)] == ["far-ahead"]  # an idle flush
    sel.offer(Item("site", 0.5, 130.0, 1))
    assert sel.open_windows() == [2] and sel.late_panes() == []  # on time, not late
    sel.offer(Item("again-ahead", 0.9, 1e9 + 1, 1))
    assert sel.late_panes() == [sel.window_of(1e9)]  # the flushed window is closed: late, judged with it
    assert [c.sample_id for c in sel.close_until(None)] == ["site", "again-ahead"]


def test_a_window_remembers_what_it_kept_without_its_images():
    sel = WindowedSelector(Budget(per_hour=60, window_s=WINDOW_S), lateness_s=3600)
    big = make_candidate(captured_at=5.0, image_bytes=b"\xff" * 100_000, value=0.9)
    sel.offer(big)
    assert sel.close_until(120) == [big]
    (k, remembered), = sel._memory.values()
    assert k == 1 and remembered[0].sample_id == big.sample_id and remembered[0].image == b""
    assert remembered[0].nbytes == big.nbytes  # byte budgets still count the image
    worse = make_candidate(captured_at=6.0, value=0.5)
    sel.offer(worse)
    assert sel.close_until(None) == []  # it would not have been kept in time either


def test_a_restarted_relay_judges_a_backlog_against_what_its_journal_says_the_windows_kept(tmp_path):
    from edgeloop.relay.store import RelayStore

    budget = Budget(per_hour=60, window_s=WINDOW_S)  # one a window
    store = RelayStore(tmp_path / "relay.sqlite", 1 << 20)
    live = [make_candidate(captured_at=w * WINDOW_S + 1, value=0.5) for w in range(10)]
    store.accept(live)
    sel = WindowedSelector(budget, lateness_s=86400)
    for c in live:
        sel.offer(c)
    store.settle(sel.close_until(10 * WINDOW_S), [], closed_until=sel.closed_until)
    store.close()

    store = RelayStore(tmp_path / "relay.sqlite", 1 << 20)  # the relay restarts
    kept, closed = store.windows_kept(-math.inf), store.closed_until()
    assert closed == 10 and len(kept) == 10
    restarted = WindowedSelector(budget, lateness_s=86400)
    restarted.restore(kept, closed)
    backlog = [make_candidate(captured_at=w * WINDOW_S + 2, value=0.9 if w % 2 else 0.1) for w in range(10)]
    for c in backlog:
        restarted.offer(c)
    assert restarted.late_panes() == list(range(10))  # late, not in windows of their own again
    assert {c.sample_id for c in restarted.close_until(None)} == {c.sample_id for c in backlog[1::2]}
    store.close()


@pytest.mark.parametrize("per_hour, strategy, limit", [(None, "top", 10_000), (60, "top", 8), (60, "diverse", 32),
                                                      (10**9, "top", 10_000)])
def test_every_window_pool_is_bounded_whatever_the_budget(per_hour, strategy, limit):
    """A relay's pool had no bound: a clock that closed no window made it hold every candidate."""
    from edgeloop.shared.config import SamplingConfig
    from edgeloop.shared.sampling.policy import window_pool_limit

    assert window_pool_limit(SamplingConfig(budget=Budget(per_hour=per_hour, window_s=WINDOW_S),
                                            strategy=strategy)) == limit


# -- watermarks ----------------------------------------------------------------------------------

def test_a_wrong_clock_heard_first_has_no_say_in_the_site_watermark():
    """Corrected to the receiver's clock (no one else to go by), a lone wrong clock used to set the
    site's watermark to it: windows of cameras that came next, in the past, were all closed."""
    now = 1_800_000_000.0
    marks = Watermarks(max_ahead_s=600)
    assert marks.admit("ahead", now + 5 * 365 * 86400, now) == now
    assert marks.site(now) == -math.inf
    assert marks.admit("camera", 1_767_225_600.0, now) is None  # lives in 2026-01, believed
    assert marks.site(now) == 1_767_225_600.0


@settings(max_examples=200)
@given(good=st.lists(st.floats(0, 1e6), min_size=3, max_size=9), bad=st.lists(st.floats(-1e12, 1e12), max_size=4))
def test_a_minority_of_wrong_clocks_does_not_move_the_site_watermark(good, bad):
    """Fewer wrong clocks than half the devices: the median is a right one, and the watermark no more
    than max_lag behind it."""
    bad = bad[:(len(good) - 1) // 2]
    marks = Watermarks(max_ahead_s=math.inf, max_lag_s=600)
    now = 2e6
    for i, t in enumerate(good):
        marks.admit(f"good-{i}", t, now)
    for i, t in enumerate(bad):
        marks.admit(f"bad-{i}", t, now)
    assert min(good) - 600 <= marks.site(now) <= max(good)
    assert marks.site(now) in good + bad


def test_a_clock_years_ahead_is_corrected_to_the_site_and_an_hour_behind_is_believed():
    now = 1_800_000_000.0
    marks = Watermarks(max_ahead_s=600)
    assert marks.admit("lone", now + 5 * 365 * 86400, now) == now  # nobody else: our own clock
    marks = Watermarks(max_ahead_s=600)
    assert marks.admit("a", now - 10, now) is None
    assert marks.admit("b", now - 20, now) is None
    assert marks.admit("ahead", now + 5 * 365 * 86400, now) == now - 20  # the site's watermark
    assert marks.admit("behind", now - 3600, now) is None
    assert marks.corrected == {"ahead": 1}
    # the oldest of a and b (behind is more than max_lag behind them); 'ahead' has no say while corrected
    assert marks.site(now) == now - 20
    assert marks.admit("a", math.nan, now) == now - 20  # not a time at all: corrected too
    assert marks.site(now + 301) == -math.inf  # everyone went quiet
    assert marks.forget_idle(now + 10_000, 3600) == 4


# -- a real relay and mosquitto ------------------------------------------------------------------

SURE = np.array([0.98, 0.01, 0.01], np.float32)  # the relay's least_confidence of these is lowest
FAIR = np.array([0.9, 0.05, 0.05], np.float32)
GOOD = np.array([0.5, 0.25, 0.25], np.float32)
BEST = np.array([0.34, 0.33, 0.33], np.float32)
RELAY_WINDOW_S = 10.0


@pytest.mark.e2e
def test_a_relay_budgets_a_backlog_by_its_windows_and_corrects_a_clock_from_2036(tmp_path):
    """Two live devices (one 'good', one 'fair' frame per window), a device whose clock is ten years
    ahead, then an agent's backlog for the same windows, best where the window index is even. The
    relay keeps one per window: live, 'good' each window; late, the backlog's even windows exactly
    (on the old code the whole backlog competed in one open window and one survived). The 2036
    candidate is kept, its time corrected, and no live window closed early because of it."""
    from edgeloop.broker import free_port
    from edgeloop.onebox import sampling_toml
    from edgeloop.procs import Service, mosquitto_service, wait_port
    from edgeloop.shared import topics
    from edgeloop.shared.mqtt import Connection
    from edgeloop.shared.protocol import DeviceState, SampleBatch, encode

    from test_relay_share import get, wait

    site, windows = "site-0", 12
    t0 = 1_767_225_600.0  # the simulator's epoch: 2026-01-01
    logs, port = tmp_path / "logs", free_port()
    broker = mosquitto_service(port, tmp_path / "mosquitto", logs).start()
    relay = dev = None
    try:
        wait_port(port)
        conf = tmp_path / "relay.toml"
        conf.write_text(sampling_toml(3600 / RELAY_WINDOW_S, {"least_confidence": 1.0}, 0, window_s=RELAY_WINDOW_S))
        relay = Service.edgeloop("relay", [
            "relay", "run", "--id", "relay-0", "--site", site, "--broker", f"mqtt://127.0.0.1:{port}",
            "--hub", f"http://127.0.0.1:{free_port()}", "--token", "t", "--data", str(tmp_path / "relay"),
            "--config", str(conf), "--flush-idle", "3"], logs, ready=True).start()
        url = relay.wait_ready(timeout=60)["url"]
        dev = Connection(f"mqtt://127.0.0.1:{port}", client_id="fake-devices").start()
        assert dev.wait_connected(20)

        def publish(device, cands):
            dev.publish(topics.samples(site, device), encode(SampleBatch(source=device, site=site, samples=tuple(cands))),
                        qos=1).wait_for_publish(10)

        def cand(device, w, probs, at=None):
            return make_candidate(device_id=device, camera_id=device, probs=probs,
                                  captured_at=at if at is not None else t0 + w * RELAY_WINDOW_S + 1.0)

        for d in ("good", "fair", "future", "backlog"):
            dev.publish(topics.state(site, d), encode(DeviceState(d, "online", None, ts=time.time())), retain=True)
        wait("the relay to see the devices", lambda: len(get(url + "/status")["devices"]) == 4, 30)
        future = cand("future", 0, BEST, at=time.time() + 10 * 365 * 86400)
        publish("future", [future])
        # Heard first and alone, the wrong clock has the site to itself until it is flushed: it must not
        # have closed the windows of the cameras that come next (corrected to our clock, 2026-12, while
        # they live in 2026-01, it did: every one of their candidates was then late).
        wait("the corrected candidate flushed alone", lambda: get(url + "/status")["counts"]["kept"] == 1, 30)
        good = {w: cand("good", w, GOOD) for w in range(windows + 3)}  # three more: the watermark moves on
        for w in range(windows + 3):
            publish("good", [good[w]])
            publish("fair", [cand("fair", w, FAIR)])
        wait("the live windows to close", lambda: get(url + "/status")["counts"]["kept"] >= 1 + windows, 60)
        backlog = {w: cand("backlog", w, BEST if w % 2 == 0 else SURE) for w in range(windows)}
        publish("backlog", sorted(backlog.values(), key=lambda c: c.probs.max()))
        total = 1 + 2 * (windows + 3) + windows
        # every candidate judged and its fate stored (kept and dropped count after the store's commit)
        status = wait("every window and pane closed and settled",
                      lambda: (s := get(url + "/status"))["counts"]["received"] == total and s["pending"] == 0
                      and s["counts"]["kept"] + s["counts"]["dropped"] == total and s, 60)
        with sqlite3.connect(tmp_path / "relay" / "relay.sqlite") as db:
            queued = {sid: Candidate.from_wire(msgpack.unpackb(p, raw=False))
                      for sid, p in db.execute("SELECT sample_id, payload FROM outbox WHERE held IS NULL")}
        assert {w for w, c in backlog.items() if c.sample_id in queued} == set(range(0, windows, 2))
        assert all(good[w].sample_id in queued for w in range(windows))  # live windows each kept theirs
        assert status["counts"]["late_kept"] == windows // 2
        fixed = queued[future.sample_id]
        assert CLOCK_CORRECTED in fixed.reasons and fixed.scores[CLAIMED_AT] == pytest.approx(future.captured_at)
        assert fixed.captured_at < time.time() + 600
        assert status["clock_corrected"] == {"future": 1} and status["counts"]["clock_corrected"] == 1
    finally:
        if dev is not None:
            dev.stop()
        if relay is not None:
            relay.stop()
        broker.stop()
