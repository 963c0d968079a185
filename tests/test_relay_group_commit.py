"""Group commit at the relay: the messages that arrived together are stored in one transaction, each
acked only once that transaction is on disk (a malformed one is acked, as it will never store; one
the disk refused is not, so the broker keeps it); and the forward queue's batch put answers exactly
as putting one by one does."""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from factories import make_candidate
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.relay.service import Relay
from edgeloop.relay.settings import RelaySettings
from edgeloop.shared import topics
from edgeloop.shared.config import SamplingConfig
from edgeloop.shared.errors import StorageError
from edgeloop.shared.outbox import SqliteOutbox
from edgeloop.shared.protocol import SampleBatch, encode

SITE = "site-g"


def _relay(tmp_path) -> Relay:
    return Relay(RelaySettings("relay-g", SITE, "mqtt://127.0.0.1:1", "http://127.0.0.1:1", "t", tmp_path / "relay",
                               SamplingConfig()))


def _message(mid: int, payload: bytes, device: str = "dev-1") -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(mid, topics.samples(SITE, device).encode())
    msg.payload, msg.qos = payload, 1
    return msg


def _batch(device: str = "dev-1") -> tuple[str, bytes]:
    c = make_candidate(device_id=device)
    return c.sample_id, encode(SampleBatch(source=device, site=SITE, samples=(c,)))


def test_a_batch_is_stored_in_one_transaction_before_any_of_it_is_acked(tmp_path):
    relay = _relay(tmp_path)
    sent = [_batch() for _ in range(5)]
    msgs = [_message(i + 1, body) for i, (_, body) in enumerate(sent)] + [_message(99, b"not msgpack")]
    journal = sqlite3.connect(tmp_path / "relay" / "relay.sqlite", check_same_thread=False)  # as another process
    acked = []

    def ack(mid, qos):  # paho's PUBACK, seen from the wire's side: what is on disk at that moment
        acked.append((mid, {r[0] for r in journal.execute("SELECT sample_id FROM seen")}))
    relay.conn.client.ack = ack
    relay.inbox.start()
    relay._on_batch(msgs)  # on paho's thread: decoded and scored there, stored by the inbox's
    relay.inbox.stop()  # once what it was given is stored and acked
    assert [mid for mid, _ in acked] == [1, 2, 3, 4, 5, 99]  # the malformed one too: it will never store
    ids = {sid for sid, _ in sent}
    assert all(on_disk == ids for _, on_disk in acked)  # every ack after the whole batch was committed
    assert relay.counts["received"] == 5 and relay.counts["rejected"] == 1
    journal.close()
    relay.store.close()


def test_a_batch_the_disk_refuses_is_not_acked_and_is_stored_later(tmp_path, monkeypatch):
    relay = _relay(tmp_path)
    acked = []
    relay.conn.client.ack = lambda mid, qos: acked.append(mid)
    accept = relay.store.accept

    def full_disk(cands):
        raise StorageError("relay store: database or disk is full")
    monkeypatch.setattr(relay.store, "accept", full_disk)
    relay.inbox.start()
    relay._on_batch([_message(1, _batch()[1]), _message(2, _batch()[1])])
    relay.inbox.stop()
    assert acked == [] and relay.storage_failed and len(relay._unstored) == 2
    relay.inbox.start()
    relay._on_batch([_message(3, _batch()[1])])  # queued behind them, in order
    relay.inbox.stop()
    assert acked == [] and [m.mid for m in relay._unstored] == [1, 2, 3]
    monkeypatch.setattr(relay.store, "accept", accept)
    for msg in list(relay._unstored):  # what storage_retry does once the disk takes them again
        relay._receive(msg)
    assert relay.store.seen_count() == 3
    relay.store.close()


def test_a_bug_on_one_message_does_not_hold_the_others_of_its_batch(tmp_path, monkeypatch):
    import edgeloop.relay.service as service

    relay = _relay(tmp_path)
    acked = []
    relay.conn.client.ack = lambda mid, qos: acked.append(mid)
    real_decode = service.decode

    def decode(payload, kind):  # stands in for a bug the decoder hits on one payload
        if payload == b"trips a bug":
            raise KeyError("a bug")
        return real_decode(payload, kind)
    monkeypatch.setattr(service, "decode", decode)
    relay.inbox.start()
    relay._on_batch([_message(1, _batch()[1]), _message(2, b"trips a bug"), _message(3, _batch()[1])])
    relay.inbox.stop()
    assert acked == [1, 3]  # the one left unacked stays with the broker, which sends it again
    assert relay.store.seen_count() == 2
    relay.store.close()


def test_paho_s_thread_waits_while_the_inbox_holds_its_limit_so_the_broker_keeps_the_rest():
    import threading

    from edgeloop.relay.inbox import MAX_WAITING, Inbox

    busy, release, stored = threading.Event(), threading.Event(), []

    def handle(items):
        busy.set()
        release.wait(20)
        stored.extend(items)
        return []
    inbox = Inbox(handle, lambda msg: None)
    inbox.start()
    inbox.put("first")
    assert busy.wait(20)  # the inbox is storing "first"; what comes now waits
    put = []
    reader = threading.Thread(target=lambda: [put.append(inbox.put(i)) for i in range(MAX_WAITING + 1)])
    reader.start()
    deadline = time.monotonic() + 20
    while len(put) < MAX_WAITING and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # room for one more put, were there room in the inbox
    assert reader.is_alive() and len(put) == MAX_WAITING  # the one past the limit waits
    release.set()
    reader.join(20)
    inbox.stop()
    assert not reader.is_alive() and stored == ["first", *range(MAX_WAITING + 1)]


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
