"""Group commit at the relay: what queued up while a transaction committed is stored in the next one,
each message acked only after the transaction that stored it; and the forward queue's batch put
answers exactly as putting one by one does."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from factories import make_candidate
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.relay.inbox import Inbox
from edgeloop.shared.outbox import SqliteOutbox


def test_messages_that_queue_up_meanwhile_are_stored_together_and_acked_after():
    groups, acks, events = [], [], []
    busy, release = threading.Event(), threading.Event()

    def handle(msgs):
        groups.append(list(msgs))
        events.append(("stored", tuple(msgs)))
        if len(groups) == 1:
            busy.set()
            release.wait(10)
        return [m for m in msgs if m != "refused-by-disk"]

    def ack(msg):
        events.append(("ack", msg))
        acks.append(msg)

    inbox = Inbox(handle, ack)
    inbox.start()
    inbox.put("m0")
    assert busy.wait(10)
    for m in ("m1", "m2", "refused-by-disk", "m3"):  # arrive while m0's transaction commits
        inbox.put(m)
    release.set()
    inbox.stop()
    assert groups == [["m0"], ["m1", "m2", "refused-by-disk", "m3"]]
    assert acks == ["m0", "m1", "m2", "m3"]  # the refused one stays with the broker, unacked
    # No ack before the transaction holding it returned.
    for i, (kind, what) in enumerate(events):
        if kind == "ack":
            assert any(k == "stored" and what in w for k, w in events[:i])


def test_a_bug_in_a_group_acks_nothing_and_the_inbox_goes_on():
    acks, calls = [], []

    def handle(msgs):
        calls.append(list(msgs))
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return msgs
    inbox = Inbox(handle, acks.append)
    inbox.start()
    inbox.put("a")
    inbox.stop()
    inbox = Inbox(handle, acks.append)
    inbox.start()
    inbox.put("b")
    inbox.stop()
    assert acks == ["b"]


puts = st.lists(st.tuples(st.integers(0, 12), st.floats(0, 1), st.booleans(), st.integers(1, 6)), max_size=25)


@settings(deadline=None, max_examples=40)
@given(puts, puts)
def test_put_many_answers_as_put_one_by_one(first, second):
    """Over a small quota (evictions happen), with repeated ids and replaces, two batches."""
    cands = {}

    def cand(i, kb):
        return cands.setdefault((i, kb), make_candidate(sample_id=f"01J{i:023d}", image_bytes=b"\xff" * (kb * 1000)))
    with tempfile.TemporaryDirectory() as tmp:
        ev_one, ev_many = [], []
        one = SqliteOutbox(Path(tmp) / "one.db", 12_000, on_evict=ev_one.extend)
        many = SqliteOutbox(Path(tmp) / "many.db", 12_000, on_evict=ev_many.extend)
        for batch in (first, second):
            items = [(cand(i, kb), v, r) for i, v, r, kb in batch]
            assert many.put_many(items) == [one.put(c, v, r) for c, v, r in items]
        assert many.ids() == one.ids() and ev_many == ev_one and len(many) == len(one)
        one.close()
        many.close()
