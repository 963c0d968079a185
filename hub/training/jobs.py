"""Training is a job, not a request: `POST /api/v1/train` queues one and answers its id; the hub's job
runner takes queued jobs one at a time (across every hub process on the database: the "training"
lock) and runs each round (rounds.train_round) in a worker thread while the trainer itself runs in a
process of its own. State, progress, the log's tail and the result live in the `jobs` table.

    jobs = Jobs(store, golden, key)
    job = jobs.submit({"epochs": 12}, created_by="alice")      # {"job_id", "state": "queued", ...}
    jobs.run_next()                                              # the runner's step: claim one, run it
    jobs.cancel(job["job_id"])

States: queued -> running -> succeeded | failed | cancelled. A job is never silently lost: a hub that
dies mid-job leaves it "running" with its owner (host:pid) and a heartbeat; `reap()` (at start and
every runner step) marks such a job failed once its owner is gone or its heartbeat is stale.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

from edgeloop.shared.errors import EdgeloopError
from edgeloop.shared.ids import new_sample_id

from ..store import HubStore
from . import rounds

log = logging.getLogger("edgeloop.hub.jobs")
STATES = ("queued", "running", "succeeded", "failed", "cancelled")
DONE = ("succeeded", "failed", "cancelled")
HEARTBEAT_S = 2.0
STALE_S = 60.0  # a running job whose heartbeat is older is its dead hub's (another host's included)
OWNER = f"{socket.gethostname()}:{os.getpid()}"
SETTINGS = {"epochs": (int, 1, 500), "seed": (int, 0, 2**31 - 1), "timeout_s": (float, 1.0, 7 * 86400.0),
            "tolerance": (float, 0.0, 1.0), "min_gain": (float, 0.0, 1.0)}
FLAGS = ("from_scratch", "pseudo_labels")


class JobNotFound(EdgeloopError):
    """No job with this id."""


def check_settings(body: dict) -> dict:
    """A train request's body -> the job's settings; ValueError names the first bad field."""
    known = {*SETTINGS, *FLAGS, "trainer"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown setting (expected {', '.join(sorted(known))})")
    out: dict[str, Any] = {}
    for key, (kind, lo, hi) in SETTINGS.items():
        if key not in body:
            continue
        v = body[key]
        ok = isinstance(v, int) if kind is int else isinstance(v, (int, float))
        if not ok or isinstance(v, bool) or not lo <= v <= hi:
            raise ValueError(f"{key}: expected {'an integer' if kind is int else 'a number'} from {lo:g} to {hi:g}")
        out[key] = kind(v)
    for key in FLAGS:
        if key in body:
            if not isinstance(body[key], bool):
                raise ValueError(f"{key}: expected true or false")
            out[key] = body[key]
    if "trainer" in body:
        if not isinstance(body["trainer"], str):
            raise ValueError("trainer: expected builtin:classify, builtin:detect or command:...")
        from .contract import trainer_argv

        try:
            trainer_argv(body["trainer"])
        except EdgeloopError as exc:
            raise ValueError(str(exc)) from exc
        out["trainer"] = body["trainer"]
    return out


def _decode(row: dict) -> dict:
    row = dict(row)
    for key in ("settings", "progress", "result"):
        row[key] = json.loads(row[key]) if row.get(key) else None
    row["log"] = row["log"].splitlines() if row.get("log") else []
    row["cancel_requested"] = bool(row.get("cancel_requested"))
    return row


class Jobs:
    def __init__(self, store: HubStore, golden, signing_key, *, default_timeout_s: float = 3600.0,
                 stale_s: float = STALE_S, defaults: dict | None = None, runner: str = "local"):
        from .ray_runner import ray_address

        ray_address(runner)  # a bad runner fails the hub's start, not its first job
        self.store, self.golden, self.key, self.runner = store, golden, signing_key, runner
        self.default_timeout_s, self.stale_s = default_timeout_s, stale_s
        self.defaults = dict(defaults or {})  # settings a job gets unless it says otherwise (the hub's config)
        self._db = store.db

    # -- the API's verbs -------------------------------------------------------------------------
    def submit(self, settings: dict, created_by: str = "api", kind: str = "train") -> dict:
        job_id = new_sample_id()
        settings = {**self.defaults, **settings}
        self._db.execute("INSERT INTO jobs (job_id, kind, state, trainer, settings, created_by, created_at) "
                         "VALUES (?, ?, 'queued', ?, ?, ?, ?)",
                         [job_id, kind, settings.get("trainer"), json.dumps(settings), created_by, time.time()])
        log.info("job %s queued by %s: %s", job_id, created_by, json.dumps(settings))
        return self.get(job_id)

    def get(self, job_id: str) -> dict:
        rows = self._db.query("SELECT * FROM jobs WHERE job_id = ?", [job_id])
        if not rows:
            raise JobNotFound(f"no job {job_id[:40]!r}")
        return _decode(rows[0])

    def list(self, limit: int = 50, states: tuple[str, ...] = STATES) -> list[dict]:
        marks = ", ".join("?" * len(states))
        return [_decode(r) for r in self._db.query(
            f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created_at DESC LIMIT ?", [*states, limit])]

    def cancel(self, job_id: str) -> dict:
        """A queued job is cancelled at once; a running one when its trainer has been stopped."""
        job = self.get(job_id)
        if job["state"] == "queued":
            self._db.execute("UPDATE jobs SET state = 'cancelled', finished_at = ?, error = ? "
                             "WHERE job_id = ? AND state = 'queued'", [time.time(), "cancelled before it ran", job_id])
        elif job["state"] == "running":
            self._db.execute("UPDATE jobs SET cancel_requested = 1 WHERE job_id = ?", [job_id])
        return self.get(job_id)

    # -- the runner ------------------------------------------------------------------------------
    def reap(self) -> list[str]:
        """Mark failed every running job whose hub is gone -> their ids. Gone: the owner is a process
        of this host that no longer exists, or the heartbeat is older than stale_s."""
        now, reaped = time.time(), []
        for job in self._db.query("SELECT job_id, owner, heartbeat_at FROM jobs WHERE state = 'running'"):
            host, _, pid = (job["owner"] or "").rpartition(":")
            dead = host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)) and job["owner"] != OWNER
            stale = now - (job["heartbeat_at"] or 0) > self.stale_s
            if dead or stale:
                why = (f"the hub running it ({job['owner']}) stopped mid-job" if dead else
                       f"no heartbeat from its hub ({job['owner']}) for {now - (job['heartbeat_at'] or 0):.0f} s")
                if self._db.execute("UPDATE jobs SET state = 'failed', finished_at = ?, error = ? "
                                    "WHERE job_id = ? AND state = 'running'", [now, why, job["job_id"]]):
                    log.warning("job %s failed: %s", job["job_id"], why)
                    reaped.append(job["job_id"])
        return reaped

    def _claim(self) -> dict | None:
        for row in self._db.query("SELECT job_id FROM jobs WHERE state = 'queued' ORDER BY created_at LIMIT 5"):
            now = time.time()
            # One UPDATE decides: of two hub processes claiming the same job, one changes a row.
            if self._db.execute("UPDATE jobs SET state = 'running', owner = ?, started_at = ?, heartbeat_at = ? "
                                "WHERE job_id = ? AND state = 'queued'", [OWNER, now, now, row["job_id"]]):
                return self.get(row["job_id"])
        return None

    def run_next(self) -> dict | None:
        """Reap, then claim the oldest queued job and run it to its end -> the finished job, or None."""
        self.reap()
        if self._db.query("SELECT 1 AS one FROM jobs WHERE state = 'running' LIMIT 1"):
            return None  # one job at a time per project (this hub's or another process's)
        job = self._claim()
        if job is None:
            return None
        return self._run(job)

    def _run(self, job: dict) -> dict:
        job_id, s = job["job_id"], job["settings"] or {}
        log.info("job %s running", job_id)
        beat = {"at": 0.0}
        lock = threading.Lock()

        def heartbeat(progress: dict | None = None) -> None:
            with lock:
                now = time.time()
                if progress is None and now - beat["at"] < HEARTBEAT_S:
                    return
                beat["at"] = now
                if progress is None:
                    self._db.execute("UPDATE jobs SET heartbeat_at = ? WHERE job_id = ?", [now, job_id])
                else:
                    self._db.execute("UPDATE jobs SET heartbeat_at = ?, progress = ? WHERE job_id = ?",
                                     [now, json.dumps(progress), job_id])

        def poll() -> bool:
            heartbeat()
            rows = self._db.query("SELECT cancel_requested FROM jobs WHERE job_id = ?", [job_id])
            return bool(rows and rows[0]["cancel_requested"])

        def named(version: str) -> None:
            self._db.execute("UPDATE jobs SET result = ? WHERE job_id = ?", [json.dumps({"version": version}), job_id])

        state, result, error, log_tail = "succeeded", None, None, []
        try:
            result = rounds.train_round(
                self.store, self.golden, self.key, epochs=s.get("epochs", 15), seed=s.get("seed", 0),
                from_scratch=s.get("from_scratch", False), pseudo_labels=s.get("pseudo_labels", False),
                tolerance=s.get("tolerance"),
                min_gain=s.get("min_gain", 0.0), trainer=s.get("trainer"),
                timeout_s=s.get("timeout_s", self.default_timeout_s), on_progress=heartbeat, poll=poll,
                on_version=named, runner=self.runner)
            log_tail = result.pop("log", [])
        except rounds.TrainingFailed as exc:
            state = "cancelled" if str(exc).endswith(": cancelled") else "failed"
            error = str(exc)
            log_tail = getattr(exc, "log", [])
        except EdgeloopError as exc:  # nothing to train, an unusable parent, a refused candidate
            state, error = "failed", str(exc)
            log_tail = getattr(exc, "log", [])
        except Exception as exc:  # a bug must fail the job, not leave it running for ever
            log.exception("job %s crashed", job_id)
            state, error = "failed", f"{type(exc).__name__}: {exc}"
        summary = _summary(result) if result else None
        if summary is None and state != "succeeded":
            prior = self.get(job_id)["result"]  # the version it was numbered, if it got that far
            summary = prior
        self._db.execute("UPDATE jobs SET state = ?, finished_at = ?, result = ?, error = ?, log = ? WHERE job_id = ?",
                         [state, time.time(), json.dumps(summary) if summary else None, error,
                          "\n".join(log_tail)[-20000:], job_id])
        if error:
            log.warning("job %s %s: %s", job_id, state, error)
        else:
            log.info("job %s succeeded: %s (gate %s)", job_id, result["version"],
                     "passed" if result["promoted"] else "refused")
        return self.get(job_id)


def _summary(result: dict) -> dict:
    """What a job keeps of a round's result: the figures and the gate (the model card holds the rest)."""
    metrics = {k: v for k, v in result["metrics"].items() if k not in ("lineage", "trainer_metrics", "drift_reference")}
    return {"version": result["version"], "parent": result["parent"], "promoted": result["promoted"],
            "gate": result["gate"], "labels_total": result["labels_total"], "seconds": result.get("seconds"),
            "metrics": metrics}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
