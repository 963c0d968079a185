"""From a [sampling] config to the functions a tier runs: the window picker, the audit draw, and
which reasons carry a candidate past every budget."""

from __future__ import annotations

import math

from ..config import SamplingConfig
from .batch import select_diverse
from .selectors import select_top
from .signals import random_signal

_AUDIT_SALT = 0x5EED_A0D1  # the audit draw must be independent of the `random` signal


def window_picker(cfg: SamplingConfig):
    """-> pick(pool, k, max_bytes) for WindowedSelector, as the config's `strategy` says."""
    if cfg.strategy == "top":
        return select_top

    def pick(pool, k, max_bytes):
        return select_diverse(pool, k, max_bytes=max_bytes, dedup_threshold=cfg.dedup_threshold,
                              balance_classes=cfg.balance_classes)

    return pick


POOL_CAP = 10_000  # candidates a window holds under no count budget (a byte budget alone, or none)


def window_pool_limit(cfg: SamplingConfig) -> int:
    """How many candidates a window may hold: enough for its budget (more for the diverse picker).
    Bounded always, so that no clock and no burst makes a tier hold every candidate in memory."""
    per_window = cfg.budget.per_window
    if not math.isfinite(per_window):
        return POOL_CAP
    k = int(per_window) + 1
    return min(POOL_CAP, 2 * k + 4 if cfg.strategy == "top" else 8 * k + 16)


def is_audit(sample_id: str, cfg: SamplingConfig) -> bool:
    """A fixed random fraction of frames, decided by id and seed: kept outside every budget."""
    return cfg.audit_fraction > 0 and random_signal(sample_id, cfg.seed ^ _AUDIT_SALT) < cfg.audit_fraction


# Reasons a candidate carries up the tree; every tier reads them here, not by its own string tests.
AUDIT = "audit"
FEEDBACK_WRONG = "feedback:wrong"
FEEDBACK_CONFIRMED = "feedback:confirmed"
CAMPAIGN_PREFIX = "campaign:"


def is_feedback(reasons) -> bool:
    return FEEDBACK_WRONG in reasons or FEEDBACK_CONFIRMED in reasons


def outside_budgets(reasons) -> bool:
    """Audit and application feedback pass every tier outside its budget (campaigns have quotas)."""
    return AUDIT in reasons or is_feedback(reasons)


def campaign_of(reasons) -> str | None:
    return next((r[len(CAMPAIGN_PREFIX):] for r in reasons if r.startswith(CAMPAIGN_PREFIX)), None)


# Added to the value of candidates kept outside a window budget, at every tier: they are sent first
# and evicted last from a full queue. Feedback that a prediction was wrong is the most valuable thing
# a device can send. The agent adds it when it keeps the frame; a relay, which scores afresh, adds it
# again to its own score (the agent's value is not comparable across devices).
PRIORITY = {FEEDBACK_WRONG: 1000.0, AUDIT: 100.0, "campaign": 50.0, FEEDBACK_CONFIRMED: 50.0}


def priority_bonus(reasons) -> float:
    """The largest PRIORITY among a candidate's reasons (a campaign's counts as "campaign"), else 0."""
    keys = [r for r in reasons if r in PRIORITY] + (["campaign"] if campaign_of(reasons) is not None else [])
    return max((PRIORITY[k] for k in keys), default=0.0)
