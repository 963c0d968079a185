"""The relay's receipts (relay/service.py, `receipts`): every id of every batch stored together is
receipted exactly once (the agent's uplink takes a repeated id once too), on its own device's topic, in one receipt a device unless past MAX_BATCH."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.relay.ingest import receipts
from edgeloop.shared.protocol import MAX_BATCH, Receipt, SampleBatch, decode, encode

from factories import make_candidate

CANDS = [make_candidate() for _ in range(300)]


@settings(deadline=None, max_examples=60)
@given(st.lists(st.tuples(st.sampled_from(["dev-a", "dev-b", "dev-c"]), st.integers(1, 300)), min_size=1, max_size=8))
def test_every_stored_id_is_receipted_once_to_its_device(spec):
    batches = [(device, SampleBatch(source=device, site="s", samples=tuple(CANDS[:n]))) for device, n in spec]
    out = receipts("relay-1", batches)
    assert {d for d, _ in out} == {d for d, _ in batches}
    for device in {d for d, _ in batches}:
        mine = [r for d, r in out if d == device]
        want = list(dict.fromkeys(c.sample_id for d, b in batches if d == device for c in b.samples))
        # all, once each (a resent batch stored beside its first copy too), in arrival order
        assert [i for r in mine for i in r.sample_ids] == want
        assert len(mine) == -(-len(want) // MAX_BATCH)  # one receipt unless past MAX_BATCH
        assert all(r.relay_id == "relay-1" and decode(encode(r), Receipt) == r for r in mine)


def test_the_agent_takes_a_receipt_that_names_a_sample_twice(tmp_path):
    """It deleted each once and went on (a repeated id once killed paho's thread: the agent never
    heard another receipt, and hung draining its outbox)."""
    import time

    from edgeloop.agent.uplink import Uplink
    from edgeloop.shared.mqtt import Connection
    from edgeloop.shared.outbox import SqliteOutbox

    outbox = SqliteOutbox(tmp_path / "outbox.sqlite", 1 << 20)
    a, b = make_candidate(), make_candidate()
    assert outbox.put(a, 0.5) and outbox.put(b, 0.5) and len(outbox.lease(10, 1 << 20)) == 2
    uplink = Uplink(Connection("mqtt://127.0.0.1:1", client_id="never-connects"), outbox, "s", "dev-1")
    uplink._awaiting = {a.sample_id: (0, time.monotonic()), b.sample_id: (0, time.monotonic())}  # sent
    uplink.received(Receipt("relay-1", (a.sample_id, a.sample_id, b.sample_id)))
    assert uplink.receipts == 2 and len(outbox) == 0 and uplink.awaiting == 0
