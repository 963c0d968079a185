"""The relay's ingest, the parts without I/O: a candidate re-scored by the relay, the receipts for
what a transaction stored, and a group of messages between decoding and storing (relay/inbox.py)."""

from __future__ import annotations

import dataclasses

from edgeloop.shared.config import SamplingConfig
from edgeloop.shared.protocol import MAX_BATCH, MAX_ITEMS, Candidate, Receipt, SampleBatch
from edgeloop.shared.sampling import Observation, score


def rescored(c: Candidate, sampling: SamplingConfig) -> Candidate:
    """`c` with the relay's value, its reasons added to the agent's and its scores as relay_*."""
    # Stateless here (candidates of many agents, out of capture order): interval, novelty and
    # every_nth score 0; the agent's own scores stay in c.scores.
    value, scores, reasons = score(Observation.from_candidate(c), sampling.signals, sampling.seed)
    # Keep within the protocol's limits, or the hub would refuse the candidate.
    merged_reasons = tuple(dict.fromkeys(c.reasons + reasons))[:MAX_ITEMS]
    merged_scores = dict(list({**c.scores, **{f"relay_{k}": v for k, v in scores.items()}}.items())[:MAX_ITEMS])
    return Candidate(**{**c.__dict__, "value": value, "reasons": merged_reasons, "scores": merged_scores})


def receipts(relay_id: str, batches: list[tuple[str, SampleBatch]]) -> list[tuple[str, Receipt]]:
    """(device, batch) stored together -> (device, receipt) to publish: one a device (more only past
    MAX_BATCH ids), not one a message, since each is a QoS 1 round trip of its own."""
    ids: dict[str, dict[str, None]] = {}
    for device, batch in batches:  # an id once, though a resent batch and its first copy came together
        ids.setdefault(device, {}).update(dict.fromkeys(c.sample_id for c in batch.samples))
    return [(device, Receipt(relay_id, tuple(got[i:i + MAX_BATCH])))
            for device, got in ((d, list(v)) for d, v in ids.items()) for i in range(0, len(got), MAX_BATCH)]


@dataclasses.dataclass
class Prepared:
    """Messages decoded, checked and scored by Relay._prepare, not stored yet."""

    msgs: list  # every one, to ack once stored (a malformed one too: it never will be)
    batches: list  # (msg, device, SampleBatch) of the well-formed sample messages among them
    rescored: list  # their candidates, admitted and scored by the relay

    @classmethod
    def merged(cls, items: list[Prepared]) -> Prepared:
        return cls([m for p in items for m in p.msgs], [b for p in items for b in p.batches],
                   [c for p in items for c in p.rescored])
