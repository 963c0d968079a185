"""The chaos run's reconciliation (edgeloop/bench/chaos.py), pure but for reading the files: every
sample id an agent committed is accounted for, from the agents' outbox journals, the relays'
journals (relay/store.py: what a budget dropped on purpose) and the hub's rows.

    figures = reconcile(journals, *hub_rows(hub_db, devices), relay_fates=relay_journals(paths))
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from edgeloop.shared.outbox import Journal

# A relay's fate of an id that is not at the hub -> what the figures call it. Anything else (pending,
# "kept", no entry) is a loss.
DELIBERATE = {"dropped": "dropped_by_relay_budget", "refused": "dropped_by_relay_quota",
              "evicted": "dropped_by_relay_quota", "dead": "dead_letters"}


def reconcile(journals: Iterable[Journal], hub_rows: Counter[str], fleet_rows: set[str],
              relay_fates: Mapping[str, str | None] | None = None) -> dict:
    """Account for every committed sample id.

    journals: each agent's outbox journal; hub_rows: sample_id -> rows stored at the hub (every row of
    its samples table); fleet_rows: the hub's ids that came from this fleet's devices; relay_fates:
    sample_id -> its fate at the relay that took it. A committed id is at_hub if the hub holds it,
    else evicted if its outbox evicted it, else dropped on purpose if a relay's journal says its
    budget or full queue dropped it (or the hub refused it into the dead letters), else lost. An id
    both evicted and at the hub (sent, its acknowledgement lost with the link, then evicted) counts
    at_hub.
    """
    relay_fates = relay_fates or {}
    committed: set[str] = set()
    evicted_ids: set[str] = set()
    queued: set[str] = set()
    for j in journals:
        committed |= j.committed
        evicted_ids |= j.evicted
        queued |= j.queued
    at_hub = committed & hub_rows.keys()
    evicted = (committed & evicted_ids) - at_hub
    deliberate: dict[str, set[str]] = {name: set() for name in DELIBERATE.values()}
    for sid in committed - at_hub - evicted:
        if (name := DELIBERATE.get(relay_fates.get(sid) or "")) is not None:
            deliberate[name].add(sid)
    lost = committed - at_hub - evicted - set().union(*deliberate.values())
    return {
        "committed": len(committed), "evicted": len(evicted), "at_hub": len(at_hub),
        **{name: len(ids) for name, ids in deliberate.items()},
        "duplicates_at_hub": sum(n - 1 for n in hub_rows.values()),
        "lost": len(lost),
        "evicted_after_delivery": len(evicted_ids & at_hub),
        "still_queued": len(queued - at_hub),
        "at_hub_never_committed": len(fleet_rows - committed),
        "lost_ids": sorted(lost)[:20],
    }


def hub_rows(hub_db: Path, devices: set[str]) -> tuple[Counter[str], set[str]]:
    """-> (sample_id -> rows, for every row of the hub's samples table; the ids from `devices`).

    Read-only, straight from the file: the API cannot show a row stored twice, this can."""
    db = sqlite3.connect(f"file:{hub_db}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT sample_id, device_id FROM samples").fetchall()
    finally:
        db.close()
    return Counter(sid for sid, _ in rows), {sid for sid, dev in rows if dev in devices}


def relay_journals(paths: Iterable[Path]) -> dict[str, str | None]:
    """Every relay's journal, merged: an id one relay forwarded counts as forwarded."""
    from edgeloop.relay.store import read_journal

    out: dict[str, str | None] = {}
    for path in paths:
        for sid, fate in read_journal(path).items():
            if out.get(sid) != "kept":
                out[sid] = fate
    return out


def backlog_share(rows: Iterable[tuple], device: str, cut_at: float, offline_capture_s: float,
                  per_hour: float, window_s: float) -> dict:
    """What a relay kept of a device's backlog against what the same capture time live would have.

    rows: a relay's journal (relay.store.journal_rows). The backlog: the device's candidates captured
    in the whole windows of the `offline_capture_s` after its last one received before `cut_at`.
    Live, the device's candidates would have come in time and been judged with the others that did
    (what came late from other devices, after a kill or a cut link, is judged after them either
    way): `live_would_keep` runs the relay's selector (top by value, count budget) over the backlog
    and the candidates each window judged in time. `all_at_once_would_keep` is the stricter oracle
    that waits for every candidate, late ones too."""
    from edgeloop.relay.store import SELECTED
    from edgeloop.shared.config import Budget
    from edgeloop.shared.sampling import WindowedSelector

    before = [t for _, dev, t, _, _, at, _ in rows if dev == device and at is not None and at < cut_at]
    if not before:
        return {}
    first = (max(before) // window_s + 1) * window_s
    last = ((max(before) + offline_capture_s) // window_s) * window_s
    judged = [(sid, dev, t, v, fate, late) for sid, dev, t, v, fate, _, late in rows
              if t is not None and first <= t < last and fate not in (None, "bypassed")]
    backlog = {sid for sid, dev, *_ in judged if dev == device}

    def keeps(items) -> set[str]:
        sel = WindowedSelector(Budget(per_hour=per_hour, window_s=window_s))
        for sid, _, t, v, _, _ in items:
            sel.offer(_Row(sid, v, t))
        return {c.sample_id for c in sel.close_until(None)} & backlog

    live = keeps([r for r in judged if r[0] in backlog or not r[5]])
    oracle = keeps(judged)
    kept = {sid for sid, _, _, _, fate, _ in judged if sid in backlog and fate in SELECTED}
    return {"windows": round((last - first) / window_s), "backlog": len(backlog), "kept_at_relay": len(kept),
            "live_would_keep": len(live), "ratio": round(len(kept) / len(live), 3) if live else None,
            "all_at_once_would_keep": len(oracle),
            "late_from_others": sum(1 for r in judged if r[0] not in backlog and r[5])}


class _Row:
    __slots__ = ("sample_id", "value", "captured_at", "nbytes")

    def __init__(self, sample_id: str, value: float, captured_at: float):
        self.sample_id, self.value, self.captured_at, self.nbytes = sample_id, value, captured_at, 0
