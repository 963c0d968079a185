"""Final selection for labeling at the hub: the best K unlabeled samples under a label budget."""

from __future__ import annotations

import zlib

from edgeloop.shared.config import SignalConfig
from edgeloop.shared.sampling import select_top
from edgeloop.shared.sampling.signals import score

STRATEGIES = ("uncertainty", "random")
UNCERTAINTY = (SignalConfig("least_confidence", 1.0), SignalConfig("margin", 0.5))


class _Item:
    __slots__ = ("sample_id", "value", "captured_at", "nbytes")

    def __init__(self, sample_id: str, value: float, captured_at: float):
        self.sample_id, self.value, self.captured_at, self.nbytes = sample_id, value, captured_at, 0


def select_for_labeling(pool: list[dict], budget: int, strategy: str = "uncertainty", seed: int = 0) -> dict[str, float]:
    """pool: rows with sample_id, probs, captured_at -> {sample_id: priority} for at most `budget` of them."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    items = []
    for row in pool:
        if strategy == "random":
            value = (zlib.crc32(f"{seed}:{row['sample_id']}".encode()) & 0xFFFFFFFF) / 0xFFFFFFFF
        else:
            value, _, _ = score(row["probs"], row["sample_id"], UNCERTAINTY, seed)
        items.append(_Item(row["sample_id"], value, row["captured_at"]))
    return {it.sample_id: it.value for it in select_top(items, budget)}
