"""What a relay makes of the hub's campaigns: pure logic, no I/O."""

from __future__ import annotations

import logging

import numpy as np

from edgeloop.shared.errors import ProtocolError
from edgeloop.shared.protocol import MAX_ITEMS, Campaign

log = logging.getLogger("edgeloop.relay")

def campaigns_from_hub(reply) -> tuple[Campaign, ...]:
    """The hub's GET /api/v1/campaigns -> the campaigns a site's topic can carry: each validated as an
    agent will (a bad one is skipped, not fatal), at most MAX_ITEMS of them (the oldest first, as the hub
    lists them: a flood of new ones cannot push out those already running)."""
    items = reply.get("campaigns") if isinstance(reply, dict) else None
    out: list[Campaign] = []
    for i, c in enumerate(items if isinstance(items, list) else []):
        if len(out) == MAX_ITEMS:
            log.warning("the hub lists %d campaigns; a site carries %d: the rest are left out", len(items), MAX_ITEMS)
            break
        try:
            camp = Campaign(c["campaign_id"], np.asarray(c["exemplars"], np.float16), float(c["threshold"]),
                            int(c["quota"]), float(c["expires_at"]))
            out.append(Campaign.from_wire(camp.to_wire(), f"campaigns[{i}]"))
        except (ProtocolError, KeyError, TypeError, ValueError, IndexError) as exc:
            log.warning("skipped campaign %d from the hub: %s", i, exc)
    return tuple(out)
