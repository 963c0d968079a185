"""The simulated labeler: answers the hub's label queue from the world's ground truth.

A separate, optional component that talks to the hub only through its public API, exactly as a
human labeling tool would; replace it with people and nothing else changes.
"""

from __future__ import annotations

import logging

from edgeloop.shared.hubclient import HubClient

from .world import World

log = logging.getLogger("edgeloop.sim.oracle")


def label_queue(hub: HubClient, world: World, limit: int = 1000) -> int:
    """Label everything waiting in the hub's queue; -> how many labels were posted."""
    total = 0
    while True:
        items = hub.get(f"/api/v1/label-queue?limit={limit}")["items"]
        if not items:
            return total
        labels = {}
        for it in items:
            frame = it["tags"].get("frame")
            if frame is None or not frame.isdigit():
                log.warning("sample %s carries no simulated frame index; skipped", it["sample_id"])
                continue
            labels[it["sample_id"]] = world.truth(it["camera_id"], int(frame))
        if not labels:
            return total
        total += hub.post("/api/v1/labels", {"labels": labels, "source": "oracle"})["labeled"]
