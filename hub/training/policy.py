"""The loop that runs by itself: a policy in the hub's config selects for labeling, trains, promotes and
rolls out with no API call from anyone; every automatic step goes into the audit log (who: "policy").

    # hub-policy.toml, `edgeloop hub serve --policy hub-policy.toml`
    [policy]
    train_every_labels = 200            # a job once this many labels came in since the last one
    train_every_s = 86400               # and at least once a day (0: off)
    select_every_s = 3600               # queue the best select_budget unlabeled samples every hour
    select_budget = 100
    rollout_stages = "shadow:10%,canary:10%,full"   # a model that passed its gate rolls out ("" : desired at once)

An operator pauses it (`POST /api/v1/policy {"paused": true}`): nothing automatic happens until resumed.
The decisions (`due_training`, `due_selection`) are pure; `Policy.tick` does the I/O.
"""

from __future__ import annotations

import json
import logging
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

from edgeloop.shared import config as cfg
from edgeloop.shared.errors import ConfigError, EdgeloopError

from .. import selection
from ..rollouts import RolloutRequest, Rollouts
from ..store import HubStore
from .jobs import DONE, Jobs

log = logging.getLogger("edgeloop.hub.policy")
WHO = "policy"


@dataclass(frozen=True)
class PolicyConfig:
    train_every_labels: int = 0  # 0: never for new labels
    train_every_s: float = 0.0  # 0: never on a schedule
    epochs: int = 12
    timeout_s: float = 3600.0
    select_every_s: float = 0.0  # 0: no scheduled selection
    select_budget: int = 50
    select_strategy: str = "hybrid"
    promote: bool = True  # a model that passes its gate goes to the fleet
    rollout_stages: str = ""  # "": made the desired model at once; else a rollout with these stages
    rollout_group: str = "all"

    def __post_init__(self):
        if self.train_every_labels < 0 or self.train_every_s < 0 or self.select_every_s < 0:
            raise ConfigError("policy: train_every_labels, train_every_s and select_every_s must be >= 0")
        if not 1 <= self.epochs <= 500 or self.select_budget < 1 or self.timeout_s <= 0:
            raise ConfigError("policy: epochs 1..500, select_budget >= 1 and timeout_s > 0 expected")
        if self.select_strategy not in selection.STRATEGIES:
            raise ConfigError(f"policy.select_strategy: expected one of {', '.join(selection.STRATEGIES)}")
        if self.rollout_stages:
            RolloutRequest.from_json({"model": "v0", "stages": self.rollout_stages, "group": self.rollout_group})

    @property
    def on(self) -> bool:
        return bool(self.train_every_labels or self.train_every_s or self.select_every_s)


def load_policy(path: Path | None) -> PolicyConfig:
    """A TOML file with a [policy] table -> PolicyConfig; None: the policy is off."""
    if path is None:
        return PolicyConfig()
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--policy {path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--policy {path}: not valid TOML ({exc})") from exc
    unknown = sorted(set(raw) - {"policy"})
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(unknown)} (allowed: policy)")
    return cfg.parse(raw.get("policy", {}), PolicyConfig, "policy")


def due_training(c: PolicyConfig, labels_now: int, labels_then: int, now: float, then: float) -> str | None:
    """Why a training job is due (new labels, or the schedule), or None."""
    if c.train_every_labels and labels_now - labels_then >= c.train_every_labels:
        return f"{labels_now - labels_then} new labels (policy: every {c.train_every_labels})"
    if c.train_every_s and now - then >= c.train_every_s:
        return f"{now - then:.0f} s since the last training (policy: every {c.train_every_s:g} s)"
    return None


def due_selection(c: PolicyConfig, now: float, then: float) -> bool:
    return bool(c.select_every_s) and now - then >= c.select_every_s


class Policy:
    def __init__(self, store: HubStore, jobs: Jobs, rollouts: Rollouts, config: PolicyConfig):
        self.store, self.jobs, self.rollouts, self.config = store, jobs, rollouts, config

    # -- its state, in the database (several hub processes share one policy) ----------------------
    def _get(self, name: str, default=None):
        rows = self.store.db.query("SELECT value FROM settings WHERE name = ?", [name])
        return json.loads(rows[0]["value"]) if rows else default

    def _set(self, name: str, value) -> None:
        self.store.db.execute("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) "
                              "DO UPDATE SET value = excluded.value", [name, json.dumps(value)])

    def pause(self, paused: bool, who: str) -> dict:
        self._set("policy.paused", bool(paused))
        log.warning("policy %s by %s", "paused" if paused else "resumed", who)
        return self.view()

    def view(self) -> dict:
        return {"config": asdict(self.config), "on": self.config.on, "paused": bool(self._get("policy.paused", False)),
                "labels_at_last_train": self._get("policy.labels_at_last_train"),
                "last_train_at": self._get("policy.last_train_at"), "last_select_at": self._get("policy.last_select_at"),
                "last_action": self._get("policy.last_action")}

    def _did(self, what: str, path: str, detail: str, status: int = 200) -> None:
        self.store.audit(WHO, "admin", "POST", path, status, detail)
        self._set("policy.last_action", {"at": time.time(), "what": what, "detail": detail})
        log.info("policy: %s (%s)", what, detail)

    # -- one pass ------------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """Act on finished policy jobs, then select and train when due. Under a lock: one hub process
        of several makes each decision."""
        if not self.config.on or self._get("policy.paused", False):
            return
        now = time.time() if now is None else now
        with self.store.locked("policy"):
            self._act_on_finished_jobs()
            if due_selection(self.config, now, self._get("policy.last_select_at", 0.0)):
                self._select(now)
            self._maybe_train(now)

    def _select(self, now: float) -> None:
        chosen, pool = selection.select_in(self.store, self.config.select_budget, self.config.select_strategy)
        self.store.mark_queued(chosen)
        self._set("policy.last_select_at", now)
        if chosen:
            self._did("selection", "/api/v1/selection", f"queued {len(chosen)} of {pool} for labeling")

    def _maybe_train(self, now: float) -> None:
        labels = self.store.counts()["labels"]
        then = self._get("policy.labels_at_last_train")
        if then is None:  # the policy's first pass: count from here
            self._set("policy.labels_at_last_train", labels)
            self._set("policy.last_train_at", now)
            return
        if self.jobs.list(1, ("queued", "running")):
            return
        why = due_training(self.config, labels, then, now, self._get("policy.last_train_at", now))
        if why is None:
            return
        job = self.jobs.submit({"epochs": self.config.epochs, "timeout_s": self.config.timeout_s}, created_by=WHO)
        self._set("policy.labels_at_last_train", labels)
        self._set("policy.last_train_at", now)
        self._did("training", "/api/v1/train", f"job {job['job_id']}: {why}", status=202)

    def _act_on_finished_jobs(self) -> None:
        for job in self.jobs.list(20, DONE):
            if job["created_by"] != WHO or self._get(f"policy.acted.{job['job_id']}"):
                continue
            self._set(f"policy.acted.{job['job_id']}", True)
            result = job.get("result") or {}
            if job["state"] != "succeeded" or not result.get("promoted") or not self.config.promote:
                why = job.get("error") or "; ".join((result.get("gate") or {}).get("reasons", [])) or job["state"]
                self._did("no promotion", "/api/v1/desired", f"job {job['job_id']} {job['state']}: {why}"[:500])
                continue
            self._promote(result["version"], job["job_id"])

    def _promote(self, version: str, job_id: str) -> None:
        if not self.config.rollout_stages:
            self.store.set_desired(version)
            self._did("promotion", "/api/v1/desired", f"{version} (job {job_id}) is the desired model")
            return
        req = RolloutRequest.from_json({"model": version, "stages": self.config.rollout_stages,
                                        "group": self.config.rollout_group})
        try:
            ro = self.rollouts.start(req)
        except EdgeloopError as exc:  # another rollout holds the group: say so, try nothing else
            self._did("no rollout", "/api/v1/rollouts", f"{version}: {exc}"[:500], status=409)
            return
        self._did("rollout", "/api/v1/rollouts", f"{version} (job {job_id}): rollout {ro['rollout_id']} "
                  f"{self.config.rollout_stages}", status=201)
