"""The chaos run: its parts (schedule, reconciliation, the outbox journal, the faulty link) in
isolation, then a short run for real: every fault kind at least once, nothing lost, nothing twice."""

from __future__ import annotations

import json
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from edgeloop.bench.chaos import KINDS, LinkHost, draw_schedule, reconcile
from edgeloop.shared import outbox as outbox_module
from edgeloop.shared.errors import StorageError
from edgeloop.shared.outbox import Journal, SqliteOutbox, read_journal

from factories import make_candidate

FLEET, SMALL, RELAYS = ["fleet-0", "fleet-1", "fleet-2", "fleet-3"], ["fleet-0", "fleet-2"], ["relay-0", "relay-1"]


# --- the schedule ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seconds, per_kind", [(600, 12), (90, 1), (90, 3), (30, 5)])
def test_the_schedule_has_every_kind_per_kind_times_within_the_window_never_overlapping_itself(seconds, per_kind):
    faults = draw_schedule(3, seconds, per_kind, FLEET, SMALL, RELAYS)
    assert Counter(f.kind for f in faults) == {k: per_kind for k in KINDS}
    assert [f.at for f in faults] == sorted(f.at for f in faults)
    for kind in KINDS:
        mine = [f for f in faults if f.kind == kind]
        cs = [(round(100 * f.at), round(100 * (f.at + f.duration))) for f in mine]  # whole centiseconds
        assert all(0 <= start < end <= 100 * seconds for start, end in cs)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(cs, cs[1:]))


def test_the_same_seed_draws_the_same_schedule_and_another_seed_another():
    a, b, c = (draw_schedule(s, 600, 12, FLEET, SMALL, RELAYS) for s in (1, 1, 2))
    assert a == b and a != c


def test_targets_come_from_the_right_pools():
    faults = draw_schedule(0, 600, 30, FLEET, SMALL, RELAYS)

    def by(kind: str) -> set[str]:
        return {f.target for f in faults if f.kind == kind}

    assert by("disk_full") == set(SMALL)  # small disks fill; link_drop takes the others, never masked by a cut
    assert by("link_drop") == by("slow_link") == set(FLEET) - set(SMALL)
    assert by("agent_kill") == set(FLEET) and by("relay_kill") == by("relay_disk") == set(RELAYS)
    assert by("hub_kill") == {"hub"} and by("broker_kill") == {"broker"} and by("proxy_404") == {"hub-link"}
    assert {f.mode for f in faults if f.kind == "hub_unreachable"} == {"refuse", "blackhole"}
    # the hub is unreachable for minutes in all, one outage far longer than the others
    outages = sorted(f.duration for f in faults if f.kind == "hub_unreachable")
    assert outages[-1] > 2 * outages[-2]


def test_a_schedule_needs_small_and_big_disks():
    with pytest.raises(ValueError):
        draw_schedule(0, 60, 1, ["fleet-0"], ["fleet-0"], RELAYS)


# --- reconciliation --------------------------------------------------------------------------------
def journal(committed=(), evicted=(), queued=()) -> Journal:
    return Journal(frozenset(committed), frozenset(evicted), frozenset(queued))


@pytest.mark.parametrize("journals, hub, expect", [
    # delivered once; evicted and counted: nothing lost
    ([journal("abc", "c")], Counter("ab"), {"committed": 3, "at_hub": 2, "evicted": 1, "lost": 0}),
    # committed, neither at the hub nor evicted: lost (and still queued if its outbox holds it)
    ([journal("abc", queued="c")], Counter("ab"), {"lost": 1, "still_queued": 1, "lost_ids": ["c"]}),
    # sent, its PUBACK lost with the link, then evicted: it is at the hub, counted once
    ([journal("ab", "b")], Counter("ab"), {"at_hub": 2, "evicted": 0, "evicted_after_delivery": 1, "lost": 0}),
    # a row stored twice (what the primary key forbids) is found
    ([journal("ab")], Counter({"a": 2, "b": 1}), {"duplicates_at_hub": 1, "at_hub": 2}),
    # evicted, never committed (refused): not counted
    ([journal("a", "z")], Counter("a"), {"committed": 1, "evicted": 0, "lost": 0}),
    # several agents
    ([journal("ab"), journal("cd", "d")], Counter("abc"), {"committed": 4, "at_hub": 3, "evicted": 1, "lost": 0}),
])
def test_reconcile(journals, hub, expect):
    got = reconcile(journals, hub, set(hub))
    assert {k: got[k] for k in expect} == expect
    assert got["committed"] == got["at_hub"] + got["evicted"] + got["lost"]


@pytest.mark.parametrize("fates, expect", [
    # the relay's budget dropped it on purpose and said so: not lost
    ({"c": "dropped", "d": "dropped"}, {"dropped_by_relay_budget": 2, "lost": 0}),
    # a full forward queue refused or evicted it; the hub refused it into the dead letters
    ({"c": "evicted", "d": "dead"}, {"dropped_by_relay_quota": 1, "dead_letters": 1, "lost": 0}),
    # the relay kept it (or still holds it) but the hub has not: lost
    ({"c": "kept", "d": None}, {"lost": 2, "lost_ids": ["c", "d"]}),
    # dropped at one relay's window, yet at the hub (restarted, judged again): at the hub, once
    ({"a": "dropped"}, {"at_hub": 2, "dropped_by_relay_budget": 0}),
])
def test_reconcile_reads_the_relays_journals(fates, expect):
    got = reconcile([journal("abcd")], Counter("ab"), set("ab"), fates)
    assert {k: got[k] for k in expect} == expect
    assert got["committed"] == sum(got[k] for k in ("at_hub", "evicted", "dropped_by_relay_budget",
                                                    "dropped_by_relay_quota", "dead_letters", "lost"))


def test_reconcile_finds_rows_of_the_fleet_that_no_agent_committed():
    assert reconcile([journal("a")], Counter("ax"), {"a", "x"})["at_hub_never_committed"] == 1


def test_a_backlog_s_share_is_measured_against_the_same_windows_live():
    from edgeloop.bench.chaos_reconcile import backlog_share

    # Two windows of 60 s: live devices a, b; the backlog device c, cut at wall time 100.
    rows = [("c0", "c", 50.0, 0.1, "kept", 10.0, 0)]  # c's last candidate before the cut
    rows += [(f"{d}{w}", d, 60.0 * w + 5, v, "kept" if d == "a" else "dropped", 200.0, 0)
             for w in (1, 2) for d, v in (("a", 0.5), ("b", 0.2))]
    rows += [("c1", "c", 65.0, 0.9, "kept", 300.0, 1), ("c2", "c", 125.0, 0.3, "dropped", 300.0, 1)]
    rows += [("x2", "x", 126.0, 0.95, "kept", 400.0, 1)]  # another device's straggler, after c's
    got = backlog_share(rows, "c", cut_at=100.0, offline_capture_s=130.0, per_hour=60, window_s=60.0)
    # live, one a window: c1 beats a1 in window 1; a2 beats c2 in window 2 (the straggler came after)
    assert got == {"windows": 2, "backlog": 2, "kept_at_relay": 1, "live_would_keep": 1, "ratio": 1.0,
                   "all_at_once_would_keep": 1, "late_from_others": 1}


# --- the outbox journal -------------------------------------------------------------------------------
def test_a_journal_keeps_every_commit_and_every_eviction(tmp_path, monkeypatch):
    monkeypatch.setattr(outbox_module, "EVICTIONS_KEPT", 5)
    box = SqliteOutbox(tmp_path / "o.db", 4 * 400, journal=True)
    accepted = set()
    for i in range(20):
        c = make_candidate(image_bytes=bytes(300) + bytes([i]))
        if box.put(c, float(i)):
            accepted.add(c.sample_id)
    refused = make_candidate(image_bytes=bytes(300))
    assert box.put(refused, -1.0) is False  # worth less than everything queued: never committed
    box.put(make_candidate(sample_id=next(iter(box.ids()))), 99.0)  # already queued: not a new commit
    j = read_journal(tmp_path / "o.db")  # while the outbox is open
    assert j.committed == accepted and refused.sample_id not in j.committed
    assert len(j.evicted) == box.counters()["evicted"] > 5  # beyond EVICTIONS_KEPT
    assert j.queued == box.ids() and j.committed == j.evicted | j.queued
    box.close()


def test_without_a_journal_evictions_stay_bounded_and_read_journal_says_so(tmp_path):
    box = SqliteOutbox(tmp_path / "o.db", 1 << 20)
    box.put(make_candidate(), 1.0)
    box.close()
    with pytest.raises(StorageError, match="journal"):
        read_journal(tmp_path / "o.db")


# --- the faulty link ----------------------------------------------------------------------------------
class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(1024):
            self.request.sendall(data)


@pytest.fixture
def link():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = LinkHost()
    yield host.add("echo", server.server_address[1])
    host.close()
    server.shutdown()
    server.server_close()


def echo_once(sock: socket.socket, data: bytes = b"ping") -> bytes:
    sock.sendall(data)
    return sock.recv(1024)


def settle(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_refusing_link_resets_what_is_open_and_what_comes_next(link):
    sock = socket.create_connection(("127.0.0.1", link.port))
    assert echo_once(sock) == b"ping"
    link.set_cut("refuse")
    settle(lambda: link.cut == "refuse")
    with pytest.raises(ConnectionError):
        for _ in range(5):  # the reset may surface on the send or the receive
            if not echo_once(sock):
                raise ConnectionResetError
    with pytest.raises(ConnectionError):
        fresh = socket.create_connection(("127.0.0.1", link.port))
        if not echo_once(fresh):
            raise ConnectionResetError
    link.set_cut(None)
    settle(lambda: link.cut is None)
    assert echo_once(socket.create_connection(("127.0.0.1", link.port))) == b"ping"


def test_a_black_hole_holds_the_bytes_and_lets_them_through_late(link):
    sock = socket.create_connection(("127.0.0.1", link.port))
    assert echo_once(sock) == b"ping"
    link.set_cut("blackhole")
    settle(lambda: link.cut == "blackhole")
    sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        echo_once(sock, b"late")
    link.set_cut(None)
    sock.settimeout(5)
    assert sock.recv(1024) == b"late"


def test_a_slow_link_carries_its_rate_both_ways_together(link):
    sock = socket.create_connection(("127.0.0.1", link.port))
    link.set_rate(20_000)
    settle(lambda: link.rate == 20_000)
    t0 = time.monotonic()
    data = b"x" * 20_000
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        got += sock.recv(65536)
    assert time.monotonic() - t0 >= 1.8  # 20 kB there and 20 kB back at 20 kB/s: two seconds
    assert link.counts["throttled_bytes"] == 40_000


def test_a_proxy_error_resets_what_is_open_and_answers_every_request_with_its_page(link):
    import urllib.error
    import urllib.request

    kept_alive = socket.create_connection(("127.0.0.1", link.port))
    assert echo_once(kept_alive) == b"ping"
    link.set_http_error(404)
    settle(lambda: link.http_error == 404)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{link.port}/api/v1/samples",
                                                      data=b"\x80" * 100), timeout=5)
    assert err.value.code == 404 and b"<html>" in err.value.read()
    with pytest.raises(ConnectionError):
        for _ in range(5):  # the kept-alive connection was reset, as the proxy's restart would
            if not echo_once(kept_alive):
                raise ConnectionResetError
    link.set_http_error(None)
    settle(lambda: link.http_error is None)
    assert echo_once(socket.create_connection(("127.0.0.1", link.port))) == b"ping"


# --- the run ---------------------------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.timeout(900)  # about two minutes here: start, 90 s of faults, settle
def test_a_short_chaos_run_loses_nothing_and_stores_nothing_twice(tmp_path):
    """6 agents, 1 relay, a 90 s fault window with one fault of each kind and the standing ones (wrong
    clocks, a backlog): real mosquitto, hub, relay and fleet processes. The command exits 1 itself if
    anything was lost or stored twice."""
    proc = subprocess.run([sys.executable, "-m", "edgeloop", "bench", "chaos", "--agents", "6", "--relays", "1",
                           "--minutes", "1.5", "--faults-per-kind", "1", "--seed", "7", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fig = json.loads((tmp_path / "chaos.json").read_text())
    assert fig["faults"] == {k: 1 for k in KINDS}
    assert fig["lost"] == 0 and fig["duplicates_at_hub"] == 0, fig["lost_ids"]
    assert fig["committed"] == fig["at_hub"] + fig["evicted"] + fig["dropped_by_relay_budget"] + \
        fig["dropped_by_relay_quota"] + fig["dead_letters"] > 0 and fig["at_hub"] > 0
    assert fig["still_queued"] == 0 and fig["at_hub_never_committed"] == 0
    # the faults did what they are for: the small disk evicted, the lossy link reset or stalled
    assert fig["fault_effects"]["disk_full"]["evictions"] > 0
    effects = fig["fault_effects"]["link_drop"]
    assert effects["lossy_reset"] + effects["lossy_stall"] + effects["lossy_refused"] > 0
    assert fig["fault_effects"]["proxy_404"]["answered_404"] > 0
    assert fig["fault_effects"]["slow_link"]["throttled_bytes"] > 0
    assert fig["fault_effects"]["relay_disk"]["storage_errors"] > 0
    # the standing faults: a clock five years ahead is corrected at the relay, and a backlog is measured
    ahead = fig["standing_faults"]["clock_ahead"]
    assert ahead["committed"] > 0 and ahead["corrected_at_relay"] > 0  # (counted since the relay last started)
    assert fig["backlog"]["backlog"] > 0 and fig["backlog"]["live_would_keep"] > 0
    assert fig["unexpected_exits"] == [] and fig["undrained_fleet"] == []
    assert fig["seed"] == 7 and len(fig["events"]) == len(KINDS)
