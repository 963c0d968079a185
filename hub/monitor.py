"""Production as the audit stream shows it: live accuracy per site and device class, and drift alarms.

The I/O side of hub/live.py: rows from the store, each model's drift reference from its blob (kept
in memory once read), the answers for the API (GET /api/v1/live, /api/v1/drift) and the dashboard.
"""

from __future__ import annotations

import dataclasses
import logging
import threading

from . import live
from .store import HubStore

log = logging.getLogger("edgeloop.hub.monitor")

_references: dict[str, live.Reference] = {}  # blob sha256 -> Reference; blobs never change
_lock = threading.Lock()


def references(store: HubStore) -> dict[str, live.Reference]:
    """model version -> its drift reference, for every model trained here with one."""
    out = {}
    for m in store.models():
        sha = (m["metrics"].get("drift_reference") or {}).get("sha256")
        if not sha:
            continue
        with _lock:
            ref = _references.get(sha)
        if ref is None:
            data = store.blobs.get(sha)
            if data is None:
                log.warning("drift reference of %s (%s) is missing from the blobs", m["version"], sha[:12])
                continue
            ref = live.Reference.from_bytes(data)
            with _lock:
                _references[sha] = ref
        out[m["version"]] = ref
    return out


def live_view(store: HubStore) -> dict:
    """{"accuracy": {"site": [...], "device_class": [...]}, "alarms": [...], "audit": n, "audit_labeled": n}."""
    rows = store.audit_rows()
    estimates = {by: [dataclasses.asdict(e) for e in live.live_accuracy(rows, by=by)] for by in ("site", "device_class")}
    alarms = [dataclasses.asdict(a) for a in live.drift_alarms(rows, references(store))]
    return {"accuracy": estimates, "alarms": alarms, "audit": len(rows),
            "audit_labeled": sum(r["label"] is not None for r in rows)}
