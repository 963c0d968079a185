"""Campaign matching ("find me more like this"): pure, shared by agent and relay.

A tier holds a `CampaignMatcher`; for each candidate embedding it names the first active campaign
whose exemplars lie within the campaign's threshold and whose quota (at this tier) is not spent.
"""

from __future__ import annotations

import numpy as np

from ..protocol import Campaign


class CampaignMatcher:
    def __init__(self):
        self.campaigns: tuple[Campaign, ...] = ()
        self.used: dict[str, int] = {}  # campaign id -> candidates kept for it at this tier

    def update(self, campaigns: tuple[Campaign, ...]) -> None:
        self.campaigns = campaigns
        self.used = {c.campaign_id: self.used.get(c.campaign_id, 0) for c in campaigns}

    def match(self, embedding: np.ndarray | None, now: float) -> str | None:
        """-> the id of a campaign this embedding belongs to (and counts it), or None."""
        if embedding is None:
            return None
        e = np.asarray(embedding, np.float32)
        e = e / max(float(np.linalg.norm(e)), 1e-8)
        for c in self.campaigns:
            if now > c.expires_at or self.used[c.campaign_id] >= c.quota or c.exemplars.shape[1] != e.shape[0]:
                continue
            ex = c.exemplars.astype(np.float32)
            ex = ex / np.maximum(np.linalg.norm(ex, axis=1, keepdims=True), 1e-8)
            if float((1.0 - ex @ e).min()) <= c.threshold:
                self.used[c.campaign_id] += 1
                return c.campaign_id
        return None
