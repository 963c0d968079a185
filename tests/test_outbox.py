"""SqliteOutbox: a stateful model test against a plain-Python outbox, plus the basic promises."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import sqlite3
import tempfile
from collections import Counter
from dataclasses import dataclass
from types import SimpleNamespace
from unittest import mock

import msgpack
import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edgeloop.shared import outbox as outbox_module
from edgeloop.shared.errors import StorageError
from edgeloop.shared.outbox import SqliteOutbox

from factories import make_candidate

QUOTA = 4000


def sid(n: int) -> str:
    """A valid, deterministic ULID-shaped id (digits are Crockford characters)."""
    return f"01J{n:023d}"


def payload_size(c) -> int:
    """What the outbox charges against its quota: the stored msgpack payload."""
    return len(msgpack.packb(c.to_wire(), use_bin_type=True))


@dataclass
class Entry:
    sample_id: str
    value: float
    size: int
    seq: int  # insertion order: the outbox breaks value ties by creation time
    leased: bool
    wire: dict


class OutboxModel:
    """The outbox as the docstring describes it, in plain Python."""

    def __init__(self, quota: int):
        self.quota = quota
        self.items: dict[str, Entry] = {}
        self.held: dict[str, Entry] = {}  # written, not queued: outside the quota, never leased
        self.counters: Counter[str] = Counter()
        self.seq = itertools.count()

    @property
    def used(self) -> int:
        return sum(e.size for e in self.items.values())

    def put(self, c, value: float) -> tuple[bool, list[str]]:
        """A held sample is released: its held bytes are queued (or, refused, deleted)."""
        if c.sample_id in self.items:
            return True, []
        held = self.held.pop(c.sample_id, None)
        size, wire = (held.size, held.wire) if held else (payload_size(c), c.to_wire())
        if size > self.quota:
            self.counters["refused"] += 1
            return False, []
        used, victims = self.used, []
        if used + size > self.quota:
            for e in sorted((e for e in self.items.values() if not e.leased), key=lambda e: (e.value, e.seq)):
                if e.value >= value:
                    break
                victims.append(e.sample_id)
                used -= e.size
                if used + size <= self.quota:
                    break
            if used + size > self.quota:
                self.counters["refused"] += 1
                return False, []
            for v in victims:
                del self.items[v]
            self.counters["evicted"] += len(victims)
        self.items[c.sample_id] = Entry(c.sample_id, float(value), size, next(self.seq), False, wire)
        self.counters["accepted"] += 1
        return True, victims

    def hold(self, c, value: float) -> None:
        if c.sample_id not in self.items and c.sample_id not in self.held:
            self.held[c.sample_id] = Entry(c.sample_id, float(value), payload_size(c), -1, False, c.to_wire())

    def lease(self, max_items: int, max_bytes: int) -> list[str]:
        ranked = sorted((e for e in self.items.values() if not e.leased), key=lambda e: (-e.value, e.sample_id))
        chosen, used = [], 0
        for e in ranked[:max_items]:
            if chosen and used + e.size > max_bytes:
                break
            chosen.append(e)
            used += e.size
        for e in chosen:
            e.leased = True
        return [e.sample_id for e in chosen]

    def ack(self, ids) -> None:
        for i in set(ids):
            if self.items.pop(i, None) is not None:
                self.counters["sent"] += 1

    def release(self, ids) -> None:
        for i in ids:
            if i in self.items:
                self.items[i].leased = False

    def reopen(self) -> None:
        for e in self.items.values():
            e.leased = False


values = st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]) | st.floats(0.0, 1.0)
image_sizes = st.integers(0, 2500) | st.integers(3700, 4200)  # the second range is near or over the quota


class OutboxMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="edgeloop-outbox-")
        self.path = os.path.join(self.dir, "outbox.db")
        # Creation times 1, 2, 3, ...: value ties are evicted oldest first, as in the model.
        clock = itertools.count(1)
        self._clock = mock.patch.object(outbox_module, "time", SimpleNamespace(time=lambda: float(next(clock))))
        self._clock.start()
        self.evictions: list[str] = []
        self.box = SqliteOutbox(self.path, QUOTA, on_evict=self.evictions.extend)
        self.model = OutboxModel(QUOTA)
        self.ever: dict[str, object] = {}  # every candidate built, by id
        self.n = 0

    def teardown(self):
        try:
            self.box.close()
        finally:
            self._clock.stop()
            shutil.rmtree(self.dir, ignore_errors=True)

    def candidate(self, value, size, data):
        """A new candidate, or one built before: at-least-once delivery brings a candidate back
        (stored, held, acked or evicted meanwhile), possibly scored differently."""
        if self.ever and data.draw(st.booleans(), label="the same candidate again"):
            return self.ever[data.draw(st.sampled_from(sorted(self.ever)), label="sample_id")]
        c = make_candidate(value=value, image_bytes=bytes([size % 251]) * size, sample_id=sid(self.n))
        self.n += 1
        self.ever[c.sample_id] = c
        return c

    # -- rules ---------------------------------------------------------------------------------
    @rule(value=values, size=image_sizes, data=st.data())
    def put(self, value, size, data):
        c = self.candidate(value, size, data)
        leased_before = {i for i, e in self.model.items.items() if e.leased}
        values_before = {i: e.value for i, e in self.model.items.items()}
        expected, victims = self.model.put(c, value)
        n_evictions = len(self.evictions)

        assert self.box.put(c, value) is expected
        event("put: " + ("evicted" if victims else "accepted" if expected else "refused"))

        evicted = self.evictions[n_evictions:]
        assert evicted == victims
        assert not set(evicted) & leased_before, "a leased item was evicted"
        assert all(values_before[v] < value for v in evicted), "evicted an item worth as much as the new one"

    @rule(value=values, size=image_sizes, data=st.data())
    def hold(self, value, size, data):
        """A relay's arrival: written now, queued when its window keeps it."""
        c = self.candidate(value, size, data)
        self.model.hold(c, value)
        self.box.hold(c.sample_id, value, msgpack.packb(c.to_wire(), use_bin_type=True))

    @precondition(lambda self: self.model.held)
    @rule(data=st.data())
    def release_held(self, data):
        """Its window kept it: put_many queues the held bytes, whatever the candidate it is given,
        each at its own value; one queued already may come among them (a resent frame)."""
        ids = data.draw(st.lists(st.sampled_from(sorted(self.model.held)), min_size=1, unique=True), label="kept")
        if self.model.items and data.draw(st.booleans(), label="a queued one among them"):
            ids.insert(data.draw(st.integers(0, len(ids)), label="at"),
                       data.draw(st.sampled_from(sorted(self.model.items)), label="queued"))
        kept = [(i, data.draw(values, label=f"value of {i}")) for i in ids]
        n_evictions = len(self.evictions)
        expected = [self.model.put(make_candidate(sample_id=i, value=v), v) for i, v in kept]
        got = self.box.put_many([(make_candidate(sample_id=i, value=v), v, False) for i, v in kept])
        assert got == [ok for ok, _ in expected]
        assert self.evictions[n_evictions:] == [v for _, victims in expected for v in victims]

    @precondition(lambda self: self.model.held)
    @rule(data=st.data())
    def drop_held(self, data):
        ids = data.draw(st.lists(st.sampled_from(sorted(self.model.held)), min_size=1, unique=True), label="dropped")
        for i in ids:
            del self.model.held[i]
        self.box.drop_held(ids + sorted(self.model.items)[:1])  # a queued one named too: it stays

    @rule(max_items=st.integers(0, 6), max_bytes=st.integers(0, 6000))
    def lease(self, max_items, max_bytes):
        expected = self.model.lease(max_items, max_bytes)
        got = self.box.lease(max_items, max_bytes)
        assert [c.sample_id for c in got] == expected
        for c in got:
            assert c.to_wire() == self.model.items[c.sample_id].wire

    @precondition(lambda self: any(e.leased for e in self.model.items.values()))
    @rule(data=st.data())
    def ack(self, data):
        leased = sorted(i for i, e in self.model.items.items() if e.leased)
        ids = data.draw(st.lists(st.sampled_from(leased), min_size=1, unique=True), label="ack")
        if data.draw(st.booleans(), label="also ack an unknown id"):
            ids.append(sid(10**9))
        self.model.ack(ids)
        self.box.ack(ids)

    @precondition(lambda self: any(e.leased for e in self.model.items.values()))
    @rule(data=st.data())
    def release(self, data):
        leased = sorted(i for i, e in self.model.items.items() if e.leased)
        ids = data.draw(st.lists(st.sampled_from(leased), min_size=1, unique=True), label="release")
        self.model.release(ids)
        self.box.release(ids)

    @rule()
    def reopen(self):
        self.box.close()
        self.box = SqliteOutbox(self.path, QUOTA, on_evict=self.evictions.extend)
        self.model.reopen()

    # -- invariants ----------------------------------------------------------------------------
    @invariant()
    def within_quota(self):
        assert self.box.used_bytes <= QUOTA
        assert self.box.used_bytes == self.model.used

    @invariant()
    def same_contents(self):
        assert len(self.box) == len(self.model.items)
        assert self.box.ids() == set(self.model.items)
        with contextlib.closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as db:  # each one's worth
            assert dict(db.execute("SELECT sample_id, value FROM outbox WHERE held IS NULL")) == {
                i: e.value for i, e in self.model.items.items()}
        held = [msgpack.unpackb(p, raw=False) for p in self.box.held()]
        assert sorted(held, key=lambda w: w["sample_id"]) == [self.model.held[i].wire for i in sorted(self.model.held)]

    @invariant()
    def counters_consistent(self):
        counters = self.box.counters()
        assert counters == {k: v for k, v in self.model.counters.items() if v}
        assert counters.get("accepted", 0) - counters.get("evicted", 0) - counters.get("sent", 0) == len(self.box)


OutboxMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestOutboxMachine = OutboxMachine.TestCase


# --- plain tests --------------------------------------------------------------------------------

@pytest.fixture
def box(tmp_path):
    b = SqliteOutbox(tmp_path / "outbox.db", 1 << 20)
    yield b
    b.close()


def test_lease_is_highest_value_first(box):
    for i, v in enumerate([0.2, 0.9, 0.5, 0.7, 0.5]):
        assert box.put(make_candidate(value=v, sample_id=sid(i)), v)
    got = box.lease(10, 1 << 20)
    assert [c.sample_id for c in got] == [sid(1), sid(3), sid(2), sid(4), sid(0)]  # ties by sample_id
    assert box.lease(10, 1 << 20) == []  # all leased


def test_lease_limits_and_release(box):
    for i in range(5):
        box.put(make_candidate(image_bytes=bytes(1000), sample_id=sid(i)), i / 10)
    size = payload_size(make_candidate(image_bytes=bytes(1000), sample_id=sid(0)))
    assert [c.sample_id for c in box.lease(2, 1 << 20)] == [sid(4), sid(3)]
    assert [c.sample_id for c in box.lease(10, 2 * size)] == [sid(2), sid(1)]
    assert [c.sample_id for c in box.lease(10, 1)] == [sid(0)]  # at least one, whatever its size
    box.release([sid(3), sid(1)])
    assert [c.sample_id for c in box.lease(10, 1 << 20)] == [sid(3), sid(1)]


def test_a_lease_and_a_release_are_one_commit_each(box):
    """Not a commit (an fsync) a row with the lock held: a relay's lease of 128 while its hub was
    down held its ingest back for as long (README, "Throughput and sizing")."""
    box.put_many([(make_candidate(sample_id=sid(i)), 0.5, False) for i in range(600)])
    statements: list[str] = []
    box._db.set_trace_callback(statements.append)
    leased = [c.sample_id for c in box.lease(600, 1 << 30)]
    box.release(leased)
    box._db.set_trace_callback(None)
    writes = [s for s in statements if not s.lstrip().upper().startswith("SELECT")]
    assert len(leased) == 600
    assert [w.split()[0].upper() for w in writes] == ["BEGIN", "UPDATE", "UPDATE", "COMMIT"] * 2  # 500 ids a statement
    assert [c.sample_id for c in box.lease(600, 1 << 30)] == leased  # released, all of them


def test_a_lease_that_fails_leaves_no_transaction_open(box):
    """On the relay's shared connection a transaction left open would fail every later BEGIN."""
    box.put(make_candidate(sample_id=sid(0)), 0.5)
    box._db.execute("CREATE TRIGGER refuse BEFORE UPDATE ON outbox BEGIN SELECT RAISE(ABORT, 'refused'); END")
    with pytest.raises(sqlite3.IntegrityError):
        box.lease(10, 1 << 20)
    box._db.execute("DROP TRIGGER refuse")
    assert box.put(make_candidate(sample_id=sid(1)), 0.7)  # a BEGIN of its own: none is open
    assert [c.sample_id for c in box.lease(10, 1 << 20)] == [sid(1), sid(0)]  # the failed lease left sid(0)


def test_put_is_idempotent_by_sample_id(box):
    c = make_candidate(value=0.3)
    assert box.put(c, 0.3) is True
    assert box.put(c, 0.3) is True
    assert box.put(c.with_value(0.9), 0.9) is True
    assert len(box) == 1 and box.ids() == {c.sample_id}
    assert box.counters() == {"accepted": 1}
    assert box.used_bytes == payload_size(c)


def test_data_survives_close_and_reopen(tmp_path):
    path = tmp_path / "sub" / "outbox.db"
    box = SqliteOutbox(path, 1 << 20)
    cands = [make_candidate(value=v, image_bytes=bytes([i]) * 100, tags={"i": str(i)})
             for i, v in enumerate([0.1, 0.8, 0.4])]
    for c in cands:
        box.put(c, c.value)
    assert [c.sample_id for c in box.lease(1, 1 << 20)] == [cands[1].sample_id]
    box.ack([cands[1].sample_id])
    box.lease(10, 1 << 20)  # leased, not acked: must come back after a restart
    used = box.used_bytes
    box.close()

    box = SqliteOutbox(path, 1 << 20)
    try:
        assert box.ids() == {cands[0].sample_id, cands[2].sample_id}
        assert box.used_bytes == used
        assert box.counters() == {"accepted": 3, "sent": 1}
        got = box.lease(10, 1 << 20)
        assert [c.to_wire() for c in got] == [cands[2].to_wire(), cands[0].to_wire()]
    finally:
        box.close()


def test_candidate_larger_than_quota_is_refused(tmp_path):
    box = SqliteOutbox(tmp_path / "o.db", 1000)
    try:
        assert box.put(make_candidate(image_bytes=bytes(2000)), 1.0) is False
        assert len(box) == 0 and box.used_bytes == 0
        assert box.counters() == {"refused": 1}
    finally:
        box.close()


def test_full_outbox_evicts_lowest_value_first(tmp_path):
    evicted: list[list[str]] = []
    small = payload_size(make_candidate(image_bytes=bytes(500), sample_id=sid(0)))
    box = SqliteOutbox(tmp_path / "o.db", 3 * small, on_evict=evicted.append)
    try:
        for i, v in enumerate([0.5, 0.2, 0.8]):
            assert box.put(make_candidate(image_bytes=bytes(500), sample_id=sid(i)), v)
        assert box.put(make_candidate(image_bytes=bytes(500), sample_id=sid(3)), 0.2) is False  # ties stay
        assert box.put(make_candidate(image_bytes=bytes(500), sample_id=sid(4)), 0.6) is True
        assert evicted == [[sid(1)]]
        assert box.ids() == {sid(0), sid(2), sid(4)}
        assert box.counters() == {"accepted": 4, "evicted": 1, "refused": 1}
    finally:
        box.close()


def test_leased_items_are_never_evicted(tmp_path):
    small = payload_size(make_candidate(image_bytes=bytes(500), sample_id=sid(0)))
    box = SqliteOutbox(tmp_path / "o.db", 2 * small)
    try:
        box.put(make_candidate(image_bytes=bytes(500), sample_id=sid(0)), 0.1)
        box.put(make_candidate(image_bytes=bytes(500), sample_id=sid(1)), 0.2)
        box.lease(10, 1 << 20)
        assert box.put(make_candidate(image_bytes=bytes(500), sample_id=sid(2)), 1.0) is False
        assert box.ids() == {sid(0), sid(1)}
        box.release([sid(0)])
        assert box.put(make_candidate(image_bytes=bytes(500), sample_id=sid(2)), 1.0) is True
        assert box.ids() == {sid(1), sid(2)}
    finally:
        box.close()


def test_ack_counts_only_what_it_deleted(box):
    c = make_candidate()
    box.put(c, 0.5)
    box.lease(1, 1 << 20)
    box.ack([c.sample_id, sid(999), c.sample_id])
    box.ack([c.sample_id])
    assert len(box) == 0
    assert box.counters() == {"accepted": 1, "sent": 1}


def test_a_file_that_is_not_a_database_is_a_storage_error(tmp_path):
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="cannot open the outbox"):
        SqliteOutbox(path, 1 << 20)


def test_a_full_disk_evicts_the_cheapest_instead_of_failing(tmp_path):
    """SQLite's own page limit makes the disk 'full' at ~250 KB, far below the 1 GB quota:
    every write fails with the real SQLITE_FULL until the outbox evicts."""
    box = SqliteOutbox(tmp_path / "o.db", 1 << 30)
    box._db.execute("PRAGMA max_page_count = 60")
    rng = __import__("random").Random(7)
    values = {}
    for _ in range(150):
        c = make_candidate(value=rng.random(), image_bytes=os.urandom(5000))
        if box.put(c, c.value):
            values[c.sample_id] = c.value
    counters = box.counters()
    assert counters["evicted"] > 0 and 20 < len(box) < 60
    kept = {s: values[s] for s in box.ids()}
    evicted = box.evictions()
    assert len(evicted) == counters["evicted"]
    # what stayed is worth more than anything given up for it (each eviction made room for a better one)
    assert min(kept.values()) >= min(v for _, v in evicted)
    assert sorted(kept.values())[len(kept) // 2] > sorted(v for _, v in evicted)[len(evicted) // 2]
    assert all(sid not in kept for sid, _ in evicted)
    box.close()
    reopened = SqliteOutbox(tmp_path / "o.db", 1 << 30)  # the file is intact
    assert reopened.ids() == set(kept)


def test_a_full_disk_raises_for_a_caller_that_holds_the_candidate_elsewhere(tmp_path):
    """The relay's forward queue: a full disk must not evict or refuse what a window kept (it is
    still pending, unacked at the broker); put() raises and the caller retries once there is room."""
    box = SqliteOutbox(tmp_path / "o.db", 1 << 30, evict_on_full_disk=False)
    box._db.execute("PRAGMA max_page_count = 60")
    stored = []
    with pytest.raises(StorageError, match="full"):
        for _ in range(150):
            c = make_candidate(value=0.5, image_bytes=os.urandom(5000))
            box.put(c, c.value)
            stored.append(c.sample_id)
    assert box.ids() == set(stored) and box.counters().get("evicted", 0) == 0
    box._db.execute("PRAGMA max_page_count = 100000")  # room again
    late = make_candidate()
    assert box.put(late, 0.1) and late.sample_id in box.ids()
    box.close()


def test_the_last_evictions_are_kept_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(outbox_module, "EVICTIONS_KEPT", 5)
    box = SqliteOutbox(tmp_path / "o.db", 4 * 400)
    for i in range(20):
        box.put(make_candidate(image_bytes=bytes(300) + bytes([i])), float(i))
    n_evicted = 20 - len(box)  # rising values: each put evicts the oldest, cheapest ones
    assert n_evicted > 5 and box.counters()["evicted"] == n_evicted
    assert [v for _, v in box.evictions()] == [float(i) for i in range(n_evicted - 5, n_evicted)]


def test_replace_raises_the_worth_of_a_queued_candidate_and_one_in_flight_is_sent_again(box):
    a, b = make_candidate(tags={"v": "old"}), make_candidate()
    box.put(a, 0.1)
    box.put(b, 0.5)
    box.put(make_candidate(sample_id=a.sample_id, tags={"v": "new"}), 0.1)  # plain put: idempotent
    box.put(make_candidate(sample_id=a.sample_id, tags={"v": "new"}), 1000.0, replace=True)
    first = box.lease(1, 1 << 20)[0]
    assert first.sample_id == a.sample_id and first.tags == {"v": "new"}
    # Replaced while out (feedback on a frame being sent): the peer's ack of the old copy keeps the new one.
    box.put(make_candidate(sample_id=a.sample_id, tags={"v": "newer"}), 2000.0, replace=True)
    assert [c.sample_id for c in box.lease(5, 1 << 20)] == [b.sample_id]  # a is still out
    box.ack([a.sample_id])
    again = box.lease(5, 1 << 20)
    assert [(c.sample_id, c.tags) for c in again] == [(a.sample_id, {"v": "newer"})]
    box.ack([a.sample_id, b.sample_id])
    assert box.ids() == set() and box.counters()["sent"] == 2  # a's second send, and b


def test_a_replacement_in_flight_survives_a_restart(tmp_path):
    box = SqliteOutbox(tmp_path / "o.db", 1 << 20)
    a = make_candidate(tags={"v": "old"})
    box.put(a, 0.1)
    box.lease(1, 1 << 20)
    box.put(make_candidate(sample_id=a.sample_id, tags={"v": "new"}), 9.0, replace=True)
    box.close()
    box = SqliteOutbox(tmp_path / "o.db", 1 << 20)  # the lease died with the process: sent again, new copy
    assert [(c.sample_id, c.tags) for c in box.lease(5, 1 << 20)] == [(a.sample_id, {"v": "new"})]
    box.close()


def test_a_file_from_before_held_rows_keeps_its_queue(tmp_path):
    import sqlite3

    path = tmp_path / "outbox.db"
    cands = [make_candidate(value=v, sample_id=sid(i)) for i, v in enumerate((0.2, 0.9))]
    with sqlite3.connect(path) as db:  # the schema before `held`
        db.execute("CREATE TABLE outbox (sample_id TEXT PRIMARY KEY, value REAL NOT NULL, nbytes INTEGER NOT NULL, "
                   "leased INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, payload BLOB NOT NULL)")
        db.executemany("INSERT INTO outbox (sample_id, value, nbytes, leased, created, payload) VALUES (?, ?, ?, ?, ?, ?)",
                       [(c.sample_id, c.value, payload_size(c), i, 1.0 + i,
                         msgpack.packb(c.to_wire(), use_bin_type=True)) for i, c in enumerate(cands)])
    box = SqliteOutbox(path, 1 << 20)
    assert len(box) == 2 and box.used_bytes == sum(payload_size(c) for c in cands) and box.held() == []
    assert [c.sample_id for c in box.lease(10, 1 << 20)] == [sid(1), sid(0)]  # the lease did not outlive its process
    box.ack([sid(1)])
    assert box.ids() == {sid(0)}
    box.close()
