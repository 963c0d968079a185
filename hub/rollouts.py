"""Staged rollouts at the hub: device reports in, per-device desired states out, a controller between.

The pure logic (stages, members, assignment, gates) is `edgeloop.shared.rollout`; this module keeps
its state in the store and drives it:

    report = RelayReport.from_json(body)          # POST /api/v1/reports, validated once
    ro = Rollouts(store, stale_s=30)
    ro.record(report)                             # the latest state of each device
    ro.start(RolloutRequest.from_json(body))      # -> the new rollout (running, first stage)
    ro.tick()                                     # the controller: judge each running stage, advance or roll back
    ro.desired_for_site("site-0")                 # the body of GET /api/v1/desired?site=site-0

Every bit of state is in the store, so a hub restarted mid-rollout carries on where it stopped.
A group is "all" or a site id; two active rollouts never cover the same device. A finished rollout
leaves its result in the group's desired version (done: the candidate; rolled back after done: the
baseline again), so only active rollouts assign devices anything but their site's default.

Errors (besides ConfigError for a bad rollout request and ProtocolError for a bad report):

    EdgeloopError
    ├── RolloutNotFound     no such rollout, or no such model version (HTTP 404)
    └── RolloutConflict     the request does not fit the current state (HTTP 409)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from edgeloop.shared.errors import ConfigError, EdgeloopError, ProtocolError, TooLarge
from edgeloop.shared.protocol import check_id
from edgeloop.shared.rollout import (DeviceReport, Gates, RolloutView, Stage, assign, evaluate, parse_stages,
                                     stage_members)

from .store import HubStore

log = logging.getLogger("edgeloop.hub.rollouts")

DEFAULT_STAGES = "shadow:10%,canary:10%,full"
ACTIVE = ("running", "paused")  # the states that hold a stage; done, rolled_back and aborted are final
MAX_REPORT_DEVICES = 4096  # devices in one relay's report
MAX_STATS = 128  # numbers per device
MAX_FACTS = 64  # strings per device
MAX_STR = 256  # a key, a fact
MAX_LAST_ERROR = 1024


class RolloutNotFound(EdgeloopError):
    """No such rollout or model version."""


class RolloutConflict(EdgeloopError):
    """The request does not fit the rollout's (or the group's) current state."""


# -- wire types ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceRecord:
    """One device in a relay's report (the shape `DeviceReport.from_state` reads)."""

    device_id: str
    status: str  # online | offline
    model_version: str | None = None
    stats: Mapping[str, float] = field(default_factory=dict)
    facts: Mapping[str, str] = field(default_factory=dict)
    last_error: str = ""

    @classmethod
    def from_json(cls, raw: Any, where: str) -> "DeviceRecord":
        if not isinstance(raw, dict):
            raise ProtocolError(f"{where}: expected an object")
        status = raw.get("status", "online")
        if status not in ("online", "offline"):
            raise ProtocolError(f"{where}.status: expected online or offline, got {status!r}")
        mv = raw.get("model_version")
        stats, facts = raw.get("stats", {}), raw.get("facts", {})
        if not isinstance(stats, dict):
            raise ProtocolError(f"{where}.stats: expected an object of numbers")
        if len(stats) > MAX_STATS:
            raise TooLarge(f"{where}.stats: {len(stats)} entries exceeds the limit of {MAX_STATS}")
        for k, v in stats.items():
            if len(k) > MAX_STR:
                raise TooLarge(f"{where}.stats: a key exceeds {MAX_STR} characters")
            # abs(v) < 1e300 first: math.isfinite overflows on an int of 400 decimal places.
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not abs(v) < 1e300 or not math.isfinite(v):
                raise ProtocolError(f"{where}.stats.{k}: expected a finite number, got {v!r}")
        if not isinstance(facts, dict):
            raise ProtocolError(f"{where}.facts: expected an object of strings")
        if len(facts) > MAX_FACTS:
            raise TooLarge(f"{where}.facts: {len(facts)} entries exceeds the limit of {MAX_FACTS}")
        for k, v in facts.items():
            if not isinstance(v, str):
                raise ProtocolError(f"{where}.facts.{k}: expected a string, got {type(v).__name__}")
            if len(k) > MAX_STR or len(v) > MAX_STR:
                raise TooLarge(f"{where}.facts.{k}: exceeds {MAX_STR} characters")
        last_error = raw.get("last_error") or ""
        if not isinstance(last_error, str):
            raise ProtocolError(f"{where}.last_error: expected a string, got {type(last_error).__name__}")
        if len(last_error) > MAX_LAST_ERROR:
            raise TooLarge(f"{where}.last_error: {len(last_error)} characters exceeds the limit of {MAX_LAST_ERROR}")
        return cls(check_id(raw.get("device_id"), f"{where}.device_id"), status,
                   None if mv is None else check_id(mv, f"{where}.model_version"),
                   dict(stats), dict(facts), last_error)

    def to_row(self) -> dict:
        return {"device_id": self.device_id, "status": self.status, "model_version": self.model_version,
                "stats": dict(self.stats), "facts": dict(self.facts), "last_error": self.last_error}


@dataclass(frozen=True)
class RelayReport:
    """`POST /api/v1/reports`: the latest state of a relay's devices."""

    relay_id: str
    site: str
    devices: tuple[DeviceRecord, ...]

    @classmethod
    def from_json(cls, body: Any) -> "RelayReport":
        """Validate a whole report; ProtocolError (TooLarge for sizes) names the bad field."""
        if not isinstance(body, dict):
            raise ProtocolError("body must be a JSON object")
        relay_id, site = check_id(body.get("relay_id"), "relay_id"), check_id(body.get("site"), "site")
        items = body.get("devices")
        if not isinstance(items, list):
            raise ProtocolError("devices: expected a list")
        if len(items) > MAX_REPORT_DEVICES:
            raise TooLarge(f"devices: {len(items)} devices exceeds the limit of {MAX_REPORT_DEVICES}")
        devices = tuple(DeviceRecord.from_json(d, f"devices[{i}]") for i, d in enumerate(items))
        seen: set[str] = set()
        for i, d in enumerate(devices):
            if d.device_id in seen:
                raise ProtocolError(f"devices[{i}].device_id: {d.device_id!r} appears twice")
            seen.add(d.device_id)
        return cls(relay_id, site, devices)


@dataclass(frozen=True)
class RolloutRequest:
    """`POST /api/v1/rollouts`: what to roll out, to whom, in which stages, judged by which gates."""

    model: str
    group: str = "all"
    stages: tuple[Stage, ...] = field(default_factory=lambda: parse_stages(DEFAULT_STAGES))
    gates: Gates = field(default_factory=Gates)
    shadow_fraction: float = 0.25
    max_latency_ms: float | None = None
    force: bool = False  # roll out a model its training gate refused (an operator's explicit choice)

    FIELDS = ("model", "group", "stages", "gates", "shadow_fraction", "max_latency_ms", "force")

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "RolloutRequest":
        """ConfigError names the bad field (stage and gate messages come from shared.rollout)."""
        unknown = sorted(set(body) - set(cls.FIELDS))
        if unknown:
            raise ConfigError(f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(cls.FIELDS)})")
        model, group = body.get("model"), body.get("group", "all")
        for name, value in (("model", model), ("group", group)):
            try:
                check_id(value, name)
            except ProtocolError as exc:
                raise ConfigError(str(exc)) from None
        if group == "fleet":  # "fleet" names the fleet-wide desired row; the group for everyone is "all"
            raise ConfigError("group: use \"all\" for the whole fleet, or a site id")
        stages = body.get("stages", DEFAULT_STAGES)
        if isinstance(stages, list) and all(isinstance(s, str) for s in stages):
            stages = ",".join(stages)
        if not isinstance(stages, str):
            raise ConfigError(f"stages: expected text like {DEFAULT_STAGES!r}")
        gates = body.get("gates") or {}
        if not isinstance(gates, dict):
            raise ConfigError("gates: expected an object, e.g. {\"min_frames\": 100}")
        fraction = body.get("shadow_fraction", 0.25)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ConfigError(f"shadow_fraction: expected a share of frames above 0 and at most 1, got {fraction!r}")
        budget = body.get("max_latency_ms")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                                   or not 0 < budget < 1e9):  # (float() overflows on an int of 400 places)
            raise ConfigError(f"max_latency_ms: expected a positive number of milliseconds or null, got {budget!r}")
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise ConfigError(f"force: expected true or false, got {force!r}")
        return cls(model, group, parse_stages(stages), Gates.from_dict(gates), float(fraction),
                   None if budget is None else float(budget), force)


# -- the service --------------------------------------------------------------------------------
class Rollouts:
    """Rollouts and device reports over a HubStore. Safe with several hub processes on one database,
    each running the controller: every read-modify-write of a rollout holds the store's "rollouts"
    lock, which one thread of one process holds at a time, and re-reads the row under it. So two
    controllers never advance one stage twice, and an operator's pause is never overwritten."""

    def __init__(self, store: HubStore, stale_s: float = 30.0, clock: Callable[[], float] = time.time):
        self.store, self.stale_s, self.clock = store, stale_s, clock
        self.ticks = 0  # controller passes completed (tests wait on it instead of sleeping)

    # -- reports --------------------------------------------------------------------------------
    def record(self, report: RelayReport) -> int:
        return self.store.record_devices(report.site, report.relay_id, [d.to_row() for d in report.devices],
                                         self.clock())

    def devices(self, site: str | None = None) -> list[dict]:
        """The latest report of each device (of one site, or all), stale ones shown offline."""
        now = self.clock()
        return [{"device_id": rec.device_id, "site": r["site"], "relay_id": r["relay_id"], "status": rec.status,
                 "model_version": rec.model_version, "stats": r["stats"], "facts": r["facts"],
                 "last_error": rec.last_error, "updated_at": r["updated_at"]} for r, rec in self._records(site, now)]

    def _records(self, group: str | None, now: float) -> list[tuple[dict, DeviceRecord]]:
        """The reported devices of a group ("all" or a site; None: every device), stale ones offline."""
        rows = self.store.devices(None if group in (None, "all") else group)
        return [(r, DeviceRecord(r["device_id"], "online" if r["status"] == "online" and
                                 now - r["updated_at"] <= self.stale_s else "offline",
                                 r["model_version"], r["stats"], r["facts"], r["last_error"] or "")) for r in rows]

    # -- operator verbs -------------------------------------------------------------------------
    def start(self, req: RolloutRequest) -> dict:
        model = self.store.model(req.model)
        if not model:
            raise RolloutNotFound(f"no model version {req.model!r} in the registry")
        gate = model["metrics"].get("gate") or {}
        if gate.get("passed") is False and not req.force:
            raise RolloutConflict(f"{req.model} was refused by its training gate ({'; '.join(gate.get('reasons', []))}); "
                                  "roll it out anyway with force")
        with self.store.locked("rollouts"):
            for other in self.store.rollouts(ACTIVE):
                if "all" in (other["group"], req.group) or other["group"] == req.group:
                    raise RolloutConflict(
                        f"group {req.group}: rollout {other['rollout_id']} ({other['candidate']} to group "
                        f"{other['group']}) is {other['state']}; let it finish or abort it first")
            baseline = self.store.group_desired(req.group)
            if baseline is None:
                # Staged rollouts need something to fall back to; the first model is set directly.
                raise RolloutConflict(f"group {req.group} has no desired model yet to roll back to; set the first "
                                      "one directly (POST /api/v1/desired)")
            if baseline == req.model:
                raise RolloutConflict(f"{req.model} is already the desired model of group {req.group}")
            now = self.clock()
            row = self.store.add_rollout({
                "candidate": req.model, "baseline": baseline, "group": req.group,
                "stages": [str(s) for s in req.stages], "gates": req.gates.to_dict(),
                "shadow_fraction": req.shadow_fraction, "max_latency_ms": req.max_latency_ms, "state": "running",
                "stage_index": 0, "stage_started_at": now, "paused_at": None, "reason": "", "gate": None,
                "history": [_event(now, "started", 0, req.stages[0], f"{req.model} over {baseline or 'nothing'}")],
                "created_at": now, "updated_at": now})
        log.info("rollout %s started: %s over %s to group %s, stages %s", row["rollout_id"], req.model,
                 baseline or "nothing", req.group, ",".join(row["stages"]))
        return public(row)

    def pause(self, rollout_id: str) -> dict:
        return self._operate(rollout_id, "pause")

    def resume(self, rollout_id: str) -> dict:
        return self._operate(rollout_id, "resume")

    def abort(self, rollout_id: str) -> dict:
        return self._operate(rollout_id, "abort")

    def rollback(self, rollout_id: str) -> dict:
        return self._operate(rollout_id, "rollback")

    ACTIONS = ("pause", "resume", "abort", "rollback")

    def _operate(self, rollout_id: str, action: str) -> dict:
        with self.store.locked("rollouts"):
            row = self._get(rollout_id)
            state, now = row["state"], self.clock()
            allowed = {"pause": ("running",), "resume": ("paused",), "abort": ACTIVE,
                       "rollback": ("running", "paused", "done")}[action]
            if state not in allowed:
                raise RolloutConflict(f"rollout {rollout_id} is {state}; {action} needs it {' or '.join(allowed)}")
            if action == "pause":
                changes, event, reason = {"state": "paused", "paused_at": now}, "paused", "paused by the operator"
            elif action == "resume":
                # The pause does not count towards the stage's timeout.
                started = row["stage_started_at"] + (now - (row["paused_at"] or now))
                changes, event, reason = ({"state": "running", "paused_at": None, "stage_started_at": started},
                                          "resumed", "resumed by the operator")
            elif action == "abort":
                reason = "aborted by the operator"
                changes, event = {"state": "aborted", "paused_at": None, "reason": reason}, "aborted"
            else:
                if state == "done":
                    self._undo_done(row)
                reason = "rolled back by the operator"
                changes, event = {"state": "rolled_back", "paused_at": None, "reason": reason}, "rolled_back"
            row = self._change(row, changes, _event(now, event, row["stage_index"], _stage(row), reason))
        return public(row)

    def _undo_done(self, row: dict) -> None:
        """A finished rollout made its candidate the group's desired version: put the baseline back."""
        group, candidate, baseline = row["group"], row["candidate"], row["baseline"]
        if baseline is None:
            raise RolloutConflict(f"rollout {row['rollout_id']}: group {group} had no desired model before "
                                  f"{candidate}; nothing to roll back to")
        if self.store.group_desired(group) != candidate:
            raise RolloutConflict(f"group {group} no longer runs {candidate} (now "
                                  f"{self.store.group_desired(group)}); roll back the newer change instead")
        busy = [r["rollout_id"] for r in self.store.rollouts(ACTIVE)
                if "all" in (r["group"], group) or r["group"] == group]
        if busy:
            raise RolloutConflict(f"rollout {busy[0]} is active on group {group}; abort it first")
        self.store.set_group_desired(baseline, group)

    # -- the controller -------------------------------------------------------------------------
    def tick(self) -> None:
        """One controller pass: judge the current stage of every running rollout."""
        for row in self.store.rollouts(("running",)):
            try:
                with self.store.locked("rollouts"):
                    row = self._get(row["rollout_id"])  # an operator may have paused it meanwhile
                    if row["state"] == "running":
                        self._judge(row, self.clock())
            except (EdgeloopError, ValueError, KeyError, TypeError):
                # One broken row must not hold up the others; it is retried next pass.
                log.exception("rollout %s: controller pass failed", row["rollout_id"])
        self.ticks += 1

    def _judge(self, row: dict, now: float) -> None:
        view = _view(row)
        reports = {rec.device_id: DeviceReport.from_state(rec) for _, rec in self._records(row["group"], now)}
        members = stage_members(reports, row["rollout_id"], view.stage.percent)
        result = evaluate(view, Gates.from_dict(row["gates"]), reports, members, now)
        gate = {"stage_index": view.stage_index, "stage": str(view.stage), "verdict": result.verdict,
                "reason": result.reason, "figures": result.figures}
        last = {k: v for k, v in (row["gate"] or {}).items() if k != "at"}
        if result.verdict == "wait":
            if gate != last:
                self.store.update_rollout(row["rollout_id"], {"gate": {**gate, "at": now}, "updated_at": now})
            return
        gate["at"] = now
        if result.verdict == "fail":
            self._change(row, {"state": "rolled_back", "reason": result.reason, "gate": gate},
                         _event(now, "rolled_back", view.stage_index, view.stage, result.reason, result.figures),
                         level=logging.WARNING)
        elif view.stage_index + 1 < len(view.stages):
            nxt = view.stage_index + 1
            self._change(row, {"stage_index": nxt, "stage_started_at": now, "gate": gate},
                         _event(now, "advanced", view.stage_index, view.stage,
                                f"{result.reason}; next {view.stages[nxt]}", result.figures))
        else:
            # Done: the candidate becomes the group's desired version, so the plain desired path and
            # the next rollout (as its baseline) see it.
            self.store.set_group_desired(row["candidate"], row["group"])
            self._change(row, {"state": "done", "gate": gate},
                         _event(now, "done", view.stage_index, view.stage,
                                f"{row['candidate']} is the desired model of group {row['group']}", result.figures))

    def _change(self, row: dict, changes: dict, event: dict, level: int = logging.INFO) -> dict:
        """Apply a transition, append it to the history and log it."""
        new = self.store.update_rollout(row["rollout_id"], {**changes, "history": [*row["history"], event],
                                                            "updated_at": event["at"]})
        log.log(level, "rollout %s (%s to group %s): %s at %s -> %s%s", row["rollout_id"], row["candidate"],
                row["group"], event["event"], event["stage"], new["state"],
                f": {event['reason']}" if event["reason"] else "")
        return new

    # -- reading --------------------------------------------------------------------------------
    def _get(self, rollout_id: str) -> dict:
        row = self.store.rollout(rollout_id)
        if row is None:
            raise RolloutNotFound(f"no rollout {rollout_id!r}")
        return row

    def recent(self, limit: int | None = None) -> list[dict]:
        """Rollouts, newest first."""
        return [public(r) for r in self.store.rollouts(limit=limit)]

    def detail(self, rollout_id: str) -> dict:
        """The rollout with live progress: per stage, per relay, and the last gate result."""
        row = self._get(rollout_id)
        now = self.clock()
        records = self._records(row["group"], now)
        ids = [rec.device_id for _, rec in records]
        view = _view(row)
        members = stage_members(ids, row["rollout_id"], view.stage.percent)
        seen: dict[int, dict] = {}  # figures of each judged stage, from the history and the last gate
        for h in row["history"]:
            if h.get("figures"):
                seen[h["stage_index"]] = h["figures"]
        if row["gate"]:
            seen[row["gate"]["stage_index"]] = row["gate"]["figures"]
        stages = []
        for i, st in enumerate(view.stages):
            if row["state"] == "done" or i < row["stage_index"]:
                status = "passed"
            elif i == row["stage_index"]:
                status = "current" if row["state"] in ACTIVE else row["state"]
            else:
                status = "pending"
            fig = seen.get(i, {})
            stages.append({"stage": str(st), "status": status,
                           "members": len(stage_members(ids, row["rollout_id"], st.percent)),
                           "ready": fig.get("ready"), "need": fig.get("need")})
        relays: dict[tuple[str, str], dict] = {}
        cand, base = row["candidate"], row["baseline"]
        for r, rec in records:
            a = assign(rec.device_id, view, members)
            rel = relays.setdefault((r["relay_id"], r["site"]), {
                "relay_id": r["relay_id"], "site": r["site"], "devices": 0, "online": 0, "candidate": 0,
                "baseline": 0, "shadow": 0, "other": 0, "failed": 0, "assigned_candidate": 0, "assigned_shadow": 0})
            rel["devices"] += 1
            rel["online"] += rec.status == "online"
            kind = "candidate" if rec.model_version == cand else "baseline" if rec.model_version == base else "other"
            rel[kind] += 1
            rel["shadow"] += rec.facts.get("shadow_version") == cand
            rel["failed"] += cand in (rec.facts.get("load_failed_version"), rec.facts.get("rolled_back_version"))
            rel["assigned_candidate"] += a.active == cand
            rel["assigned_shadow"] += a.shadow == cand
        end = row["paused_at"] if row["state"] == "paused" else now
        progress = {"devices": len(records), "online": sum(rec.status == "online" for _, rec in records),
                    "stage_elapsed_s": round(end - row["stage_started_at"], 3) if row["state"] in ACTIVE else None,
                    "stages": stages, "relays": [relays[k] for k in sorted(relays)]}
        return {**public(row), "progress": progress}

    def desired_for_site(self, site: str | None) -> dict | None:
        """The body of GET /api/v1/desired?site=S: the site's default model (as before), the devices an
        active rollout assigns something else, and every model the site needs. None: nothing to run
        (a rollout always has a baseline, so there is none without a default either)."""
        default = self.store.site_desired(site) if site is not None else self.store.desired()
        models: dict[str, dict] = {}

        def ref(version: str) -> dict | None:
            if version not in models:
                m = self.store.model(version)
                if m is None:
                    return None
                models[version] = {"sha256": m["artifact_sha256"], "size": m["artifact_size"],
                                   "artifact": f"/api/v1/models/{version}/artifact"}
            return models[version]

        base = ref(default) if default else None
        if base is None:
            return None
        devices: dict[str, dict] = {}
        if site is not None:
            site_ids = self.store.device_ids(site)
            # Oldest first, so that the newest wins should two ever overlap.
            for row in reversed(self.store.rollouts(ACTIVE)):
                if row["group"] not in ("all", site):
                    continue
                group_ids = site_ids if row["group"] == site else self.store.device_ids()
                # Devices outside the stage run the site's own default, which may be newer than the
                # baseline the rollout started from.
                view = replace(_view(row), baseline=default)
                members = stage_members(group_ids, row["rollout_id"], view.stage.percent)
                for device in site_ids:
                    a = assign(device, view, members)
                    if a.active == default and a.shadow is None:
                        continue
                    active, shadow = ref(a.active), ref(a.shadow) if a.shadow else None
                    if active is None:
                        continue
                    devices[device] = {
                        "version": a.active, **active,
                        "shadow": None if shadow is None else {"version": a.shadow, **shadow,
                                                               "fraction": row["shadow_fraction"]},
                        "max_latency_ms": row["max_latency_ms"], "rollout_id": row["rollout_id"]}
        return {"version": default, **base, "devices": devices, "models": models}


def public(row: dict) -> dict:
    """A rollout as the API shows it."""
    keys = ("rollout_id", "candidate", "baseline", "group", "stages", "gates", "shadow_fraction", "max_latency_ms",
            "state", "stage_index", "stage_started_at", "paused_at", "reason", "gate", "history", "created_at",
            "updated_at")
    return {**{k: row[k] for k in keys}, "stage": _stage(row)}


def _view(row: dict) -> RolloutView:
    return RolloutView(row["rollout_id"], row["candidate"], row["baseline"], parse_stages(",".join(row["stages"])),
                       row["stage_index"], row["state"], row["stage_started_at"])


def _stage(row: dict) -> str:
    return row["stages"][min(row["stage_index"], len(row["stages"]) - 1)]


def _event(at: float, event: str, stage_index: int, stage: Stage | str, reason: str = "",
           figures: dict | None = None) -> dict:
    return {"at": at, "event": event, "stage_index": stage_index, "stage": str(stage), "reason": reason,
            "figures": figures or {}}
