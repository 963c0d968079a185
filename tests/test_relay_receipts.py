"""The relay's receipts (relay/service.py, `receipts`): every id of every batch stored together is
receipted exactly once, on its own device's topic, in one receipt a device unless past MAX_BATCH."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.relay.service import receipts
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
        want = [c.sample_id for d, b in batches if d == device for c in b.samples]
        assert [i for r in mine for i in r.sample_ids] == want  # all, once each, in arrival order
        assert len(mine) == -(-len(want) // MAX_BATCH)  # one receipt unless past MAX_BATCH
        assert all(r.relay_id == "relay-1" and decode(encode(r), Receipt) == r for r in mine)
