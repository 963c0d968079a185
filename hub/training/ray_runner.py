"""Run a trainer of the contract as a Ray job (Ray Jobs: what `ray job submit` does), for a hub whose
training goes to a cluster: `edgeloop hub serve --runner ray:http://HEAD:8265`.

    outcome = run_on_ray("http://127.0.0.1:8265", argv, timeout_s=600, on_progress=print, poll=cancelled)

The job's entrypoint is the trainer's command line, unchanged; its --data, --parent and --out are the
hub's job directory (DATA/jobs), which the cluster's workers must see at the same path (a shared mount,
as a Kubernetes Job mounts the hub's volume). The hub polls the job's status, reads progress lines from
its log, stops it on a timeout or a cancel, and reads OUT/ once it has succeeded. Ray is an optional
extra (`pip install 'edgeloop[ray]'`), imported only here.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections import deque
from typing import Callable

from .contract import LOG_LINES, Outcome, TrainerError

log = logging.getLogger("edgeloop.hub.training.ray")
POLL_S = 1.0
STOP_WAIT_S = 30.0  # after stop_job, how long to wait for the job to be STOPPED before giving up on it


def ray_address(runner: str) -> str | None:
    """"local" -> None; "ray:http://head:8265" -> the Ray dashboard's address; else TrainerError."""
    if runner == "local":
        return None
    if runner.startswith("ray:") and runner[4:].startswith(("http://", "https://")):
        return runner[4:]
    raise TrainerError(f"runner {runner[:80]!r}: expected local or ray:http://HEAD:8265 (a Ray cluster's dashboard)")


def _ray_jobs():
    """Ray's job client module, or TrainerError naming the extra to install."""
    try:
        from ray import job_submission
    except ImportError as exc:
        raise TrainerError("runner ray: needs Ray's job client (pip install 'edgeloop[ray]')") from exc
    return job_submission


def run_on_ray(address: str, argv: list[str], *, submission_id: str, timeout_s: float,
               on_progress: Callable[[dict], None] | None = None, poll: Callable[[], bool] | None = None,
               env: dict | None = None) -> Outcome:
    """Submit argv as a Ray job and follow it to its end -> the Outcome, as contract.run_trainer gives."""
    rj = _ray_jobs()
    JobStatus = rj.JobStatus
    t0 = time.monotonic()
    try:
        client = rj.JobSubmissionClient(address)
        job = client.submit_job(entrypoint=shlex.join(argv), submission_id=submission_id,
                                runtime_env={"env_vars": dict(env or {})}, metadata={"submitted_by": "edgeloop-hub"})
    except Exception as exc:  # the client raises ConnectionError, RuntimeError, ... for a cluster it cannot reach
        return Outcome(returncode=None, error=f"the Ray cluster at {address} did not take the job: {exc}",
                       seconds=time.monotonic() - t0)
    log.info("trainer submitted to Ray at %s as %s", address, job)
    outcome = Outcome(returncode=None)
    tail: deque[str] = deque(maxlen=LOG_LINES)
    seen = 0  # lines of the job's log already read
    done = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}

    def read_log() -> None:
        nonlocal seen
        try:
            lines = client.get_job_logs(job).splitlines()
        except Exception as exc:  # a log we cannot read now is read at the next poll
            log.debug("ray job %s: log not readable yet: %s", job, exc)
            return
        for line in lines[seen:]:
            outcome.take(line, tail, on_progress)
        seen = len(lines)

    status = None
    while True:
        try:
            status = client.get_job_status(job)
        except Exception as exc:
            log.warning("ray job %s: status not readable: %s", job, exc)
        read_log()
        if status in done:
            break
        if outcome.due_to_stop(t0, timeout_s, poll):
            _stop(client, job, done)
            break
        time.sleep(POLL_S)
    read_log()
    outcome.seconds = time.monotonic() - t0
    outcome.log = [f"ray job {job} at {address}: {status}", *tail]
    if not (outcome.timed_out or outcome.cancelled):
        if status == JobStatus.SUCCEEDED:
            outcome.returncode = 0
        else:
            info = client.get_job_info(job)
            outcome.returncode = info.driver_exit_code if info.driver_exit_code is not None else 1
            if status == JobStatus.STOPPED:
                outcome.error = f"the Ray job {job} was stopped on the cluster ({info.message})"
    return outcome


def _stop(client, job: str, done: set) -> None:
    """Ask Ray to stop the job and wait (bounded) until it says so."""
    try:
        client.stop_job(job)
    except Exception as exc:
        log.warning("ray job %s: stop failed: %s", job, exc)
        return
    deadline = time.monotonic() + STOP_WAIT_S
    while time.monotonic() < deadline:
        try:
            if client.get_job_status(job) in done:
                return
        except Exception:
            pass
        time.sleep(POLL_S)
    log.warning("ray job %s: still not stopped %.0f s after stop_job", job, STOP_WAIT_S)
