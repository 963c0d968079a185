"""The relay's store: what a full forward queue refuses is reported to the caller (which counts it),
never silently gone."""

from __future__ import annotations

import dataclasses
import sqlite3

from edgeloop.relay.store import RelayStore

from factories import make_candidate


def test_a_full_forward_queue_reports_what_it_refused(tmp_path):
    store = RelayStore(tmp_path / "relay.sqlite", forward_quota=4000)
    image = bytes(1000)
    rich = [make_candidate(value=0.9, image_bytes=image) for _ in range(3)]
    poor = [make_candidate(value=0.1, image_bytes=image) for _ in range(2)]
    assert store.accept(rich + poor) == rich + poor
    assert store.settle(rich, []) == []
    refused = store.settle(poor, [])  # the queue holds the three worth more: no room for these
    assert refused == [c.sample_id for c in poor]
    assert store.pending() == []  # settled either way; the relay counts `refused` as forward_refused
    assert len(store.forward) == 3


def test_feedback_on_a_frame_seen_before_is_new_once_and_replaces_the_frame_in_the_queue(tmp_path):
    from edgeloop.shared.sampling.policy import FEEDBACK_WRONG

    store = RelayStore(tmp_path / "relay.sqlite", forward_quota=1 << 20)
    frame = make_candidate(value=0.3)
    assert store.accept([frame]) == [frame] and store.accept([frame]) == []  # a frame is new once
    store.settle([frame], [])
    flagged = make_candidate(sample_id=frame.sample_id, value=1000.3, reasons=(FEEDBACK_WRONG,))
    assert store.accept([flagged]) == [flagged]  # its feedback is new, under the same id
    assert store.accept([flagged]) == []  # ... once
    store.settle([flagged], [])
    (queued,) = store.forward.lease(10, 1 << 20)
    assert queued.sample_id == frame.sample_id and queued.reasons == (FEEDBACK_WRONG,)
    store.close()


def test_ids_seen_long_ago_are_forgotten_and_the_rest_kept(tmp_path):
    import time

    store = RelayStore(tmp_path / "relay.sqlite", forward_quota=1 << 20)
    old, recent = make_candidate(), make_candidate()
    store.accept([old])
    store.accept([recent])
    # A week and a day on for `old`, a minute for `recent`.
    assert store.prune_seen(7 * 86400, now=time.time() + 60) == 0
    store._db.execute("UPDATE seen SET at = at - 8 * 86400 WHERE sample_id = ?", (old.sample_id,))
    assert store.prune_seen(7 * 86400, now=time.time() + 60) == 1 and store.seen_count() == 1
    assert store.accept([recent]) == [] and store.accept([old]) == [old]  # forgotten: taken again (the hub dedups)
    store.close()


def test_a_relay_file_from_before_seen_times_opens_and_prunes_its_old_ids(tmp_path):
    import sqlite3

    path = tmp_path / "relay.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE seen (sample_id TEXT PRIMARY KEY)")
        db.execute("INSERT INTO seen VALUES ('01ARZ3NDEKTSV4RRFFQ69G5FAV')")
    store = RelayStore(path, forward_quota=1 << 20)
    fresh = make_candidate()
    store.accept([fresh])
    assert store.prune_seen(86400) == 1 and store.seen_count() == 1  # the id of unknown age went
    store.close()


def test_the_journal_tells_every_id_s_fate_and_a_feedback_s_over_its_frame_s(tmp_path):
    from edgeloop.relay.store import read_journal
    from edgeloop.shared.sampling.policy import FEEDBACK_WRONG

    store = RelayStore(tmp_path / "relay.sqlite", forward_quota=4000)  # three of these
    image = bytes(1000)
    sent, dropped, waiting, rich, richer = (make_candidate(value=0.9, image_bytes=image) for _ in range(5))
    poor = make_candidate(value=0.1, image_bytes=image)
    store.accept([sent, dropped, waiting, poor, rich, richer])
    store.settle([sent], [dropped.sample_id])
    store.settle([poor], [])
    store.settle([rich], [])
    store.settle([dataclasses.replace(richer, value=0.95)], [])  # the queue is full: the poorest leaves it
    store.dead_letter({sent.sample_id: "image does not decode"}, [sent])
    flagged = make_candidate(sample_id=dropped.sample_id, value=1000.0, reasons=(FEEDBACK_WRONG,))
    store.accept([flagged])
    store.settle([flagged], [])
    journal = store.journal()
    assert journal[sent.sample_id] == "dead" and journal[waiting.sample_id] is None
    assert journal[poor.sample_id] == "evicted" and journal[rich.sample_id] == "kept"
    assert journal[dropped.sample_id] == "kept"  # dropped by the budget, then its feedback went up
    assert read_journal(tmp_path / "relay.sqlite") == journal  # the same, read-only from the file
    store.close()


def test_a_closed_window_is_queued_and_settled_in_one_transaction_or_not_at_all(tmp_path):
    import sqlite3

    import pytest

    from edgeloop.shared.errors import StorageError

    store = RelayStore(tmp_path / "relay.sqlite", forward_quota=1 << 20)
    kept, dropped = [make_candidate(value=0.9) for _ in range(3)], make_candidate(value=0.1)
    store.accept(kept + [dropped])
    # The journal's part of the settle fails after the forward queue's part was written...
    with sqlite3.connect(tmp_path / "relay.sqlite") as db:
        db.execute("CREATE TRIGGER no_meta BEFORE INSERT ON meta BEGIN SELECT RAISE(ABORT, 'refused'); END")
    with pytest.raises(StorageError):
        store.settle(kept, [dropped.sample_id], closed_until=7.0)
    # ... so neither stands: nothing queued, everything still pending, no window recorded as closed.
    assert len(store.forward) == 0 and len(store.pending()) == 4 and store.closed_until() is None
    with sqlite3.connect(tmp_path / "relay.sqlite") as db:
        db.execute("DROP TRIGGER no_meta")
    assert store.settle(kept, [dropped.sample_id], closed_until=7.0) == []
    assert store.forward.ids() == {c.sample_id for c in kept} and store.pending() == []
    assert store.closed_until() == 7.0 and store.journal()[dropped.sample_id] == "dropped"
    # What went to the queue is the candidate as it arrived (its held row's bytes, not packed again).
    assert sorted(c.sample_id for c in store.forward.lease(10, 1 << 22)) == sorted(c.sample_id for c in kept)
    store.close()


def test_a_file_from_before_holds_its_pending_candidates_in_the_forward_queue(tmp_path):
    import msgpack

    path = tmp_path / "relay.sqlite"
    waiting = [make_candidate(value=v) for v in (0.2, 0.8)]
    with sqlite3.connect(path) as db:  # the table earlier relays kept open windows' candidates in
        db.execute("CREATE TABLE pending (sample_id TEXT PRIMARY KEY, payload BLOB NOT NULL)")
        db.executemany("INSERT INTO pending VALUES (?, ?)",
                       [(c.sample_id, msgpack.packb(c.to_wire(), use_bin_type=True)) for c in waiting])
    store = RelayStore(path, forward_quota=1 << 20)
    assert sorted(c.sample_id for c in store.pending()) == sorted(c.sample_id for c in waiting)
    assert len(store.forward) == 0  # held for their windows, not queued
    assert store.settle(waiting[1:], [waiting[0].sample_id]) == []
    assert store.pending() == [] and store.forward.ids() == {waiting[1].sample_id}
    store.close()
    with sqlite3.connect(path) as db:
        assert not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'pending'").fetchone()
    assert RelayStore(path, forward_quota=1 << 20).pending() == []  # and opening it again changes nothing


def test_candidates_held_for_their_windows_survive_a_restart_held(tmp_path):
    path = tmp_path / "relay.sqlite"
    store = RelayStore(path, forward_quota=1 << 20)
    cands = [make_candidate(value=0.5) for _ in range(3)]
    store.accept(cands)
    assert store.forward.lease(10, 1 << 20) == []  # held: nothing to send before a window keeps it
    store.close()
    store = RelayStore(path, forward_quota=1 << 20)
    assert sorted(c.sample_id for c in store.pending()) == sorted(c.sample_id for c in cands)
    assert store.forward.lease(10, 1 << 20) == []
    store.settle(cands[:1], [c.sample_id for c in cands[1:]])
    assert [c.sample_id for c in store.forward.lease(10, 1 << 20)] == [cands[0].sample_id]
    store.close()


def test_accept_keeps_the_first_of_each_id_in_order_across_groups_as_one_at_a_time_would():
    """Multi-row statements (RelayStore.accept) answer as the rule a candidate at a time: a frame is new
    once, its feedback is new once more under the same id, repeats in one group count once, order kept."""
    import tempfile
    from pathlib import Path

    from hypothesis import example, given, settings
    from hypothesis import strategies as st

    from edgeloop.shared.sampling.policy import FEEDBACK_WRONG

    ids = [f"01J{i:023d}" for i in range(200)]  # more than ROWS_A_STATEMENT new in a group
    arrivals = st.lists(st.lists(st.tuples(st.integers(0, 199), st.booleans()), max_size=300), min_size=1, max_size=4)

    @settings(deadline=None, max_examples=30)
    @given(arrivals)
    @example([[(i, False) for i in range(200)], [(i, i % 2 == 0) for i in range(199, -1, -1)]])  # many statements
    def check(groups):
        with tempfile.TemporaryDirectory() as tmp:
            store = RelayStore(Path(tmp) / "relay.sqlite", forward_quota=1 << 30)
            seen: set = set()
            for group in groups:
                cands = [make_candidate(sample_id=ids[i], image_bytes=bytes(50),
                                        reasons=(FEEDBACK_WRONG,) if fb else ()) for i, fb in group]
                expected = []
                for c, key in zip(cands, group):
                    if key not in seen:
                        seen.add(key)
                        expected.append(c)
                assert store.accept(cands) == expected
            assert len(store.forward.held()) == len({i for group in groups for i, _ in group})
            assert set(store.journal()) == {ids[i] for i, _ in seen}  # every one journaled, for dedup
            store.close()
    check()
