"""The simulated labeler: answers the hub's label queue from the world's ground truth (a class per frame
in the digits world, the boxes of a frame in the scenes world).

A separate, optional component that talks to the hub only through its public API, exactly as a
human labeling tool would; replace it with people and nothing else changes.
"""

from __future__ import annotations

import logging

from edgeloop.shared.hubclient import HubClient

from .world import World

log = logging.getLogger("edgeloop.sim.oracle")


def label_queue(hub: HubClient, world, limit: int = 1000, class_map: dict[int, int] | None = None) -> int:
    """Label everything waiting in the hub's queue; -> how many labels were posted.

    world: a digits `World` (a class per frame) or a `ScenesWorld` (the frame's boxes, or none).
    class_map: world class -> the project's class, for a project of fewer classes (the others unlabeled)."""
    boxes = not isinstance(world, World)
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
            labels[it["sample_id"]] = (_boxes(world, it, int(frame), class_map) if boxes
                                       else world.truth(it["camera_id"], int(frame)))
        if not labels:
            return total
        key = "boxes" if boxes else "labels"
        total += hub.post("/api/v1/labels", {key: labels, "source": "oracle"})["labeled"]


def _boxes(world, item: dict, frame: int, class_map: dict[int, int] | None = None) -> list[dict]:
    """The frame's ground-truth boxes in the pixels of the stored image (the agent may have shrunk it)."""
    truth = world.truth(item["camera_id"], frame)
    w, h = world.size
    sx, sy = item.get("width", w) / w, item.get("height", h) / h
    return [{"class": int(c) if class_map is None else class_map[int(c)],
             "xyxy": [float(b[0] * sx), float(b[1] * sy), float(b[2] * sx), float(b[3] * sy)]}
            for b, c in zip(truth.boxes, truth.classes) if class_map is None or int(c) in class_map]
