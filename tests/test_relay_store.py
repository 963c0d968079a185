"""The relay's store: what a full forward queue refuses is reported to the caller (which counts it),
never silently gone."""

from __future__ import annotations

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
