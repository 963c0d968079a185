"""The trainer contract: any program that trains a model for the hub, run as

    TRAINER --data DIR --parent DIR --out DIR [--epochs N] [--seed S]

`--data` holds the labeled set (see workspace.py), `--parent` the parent's model.onnx, manifest.json and
checkpoint/ (empty for a first model). The trainer writes OUT/model.onnx (optionally OUT/manifest.json,
OUT/checkpoint/, OUT/metrics.json), prints progress as JSON lines on stdout, `{"epoch": 3, "of": 10,
"loss": 0.41}` (any other line is kept as log), and exits 0 when OUT/model.onnx is a model.

A trainer is named in the hub's config as `builtin:classify`, `builtin:detect` (this package's own,
`python -m edgeloop.hub.training.builtin`), or `command:PROGRAM ARGS...` (split as a shell would,
never run through one).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgeloop.shared.errors import EdgeloopError

BUILTIN = ("builtin:classify", "builtin:detect")
LOG_LINES = 400  # the tail of a trainer's output kept on its job
MAX_LINE = 4096  # a longer line is cut: a trainer printing a tensor must not fill the database


class TrainerError(EdgeloopError):
    """A trainer name that is neither builtin:... nor command:..., or a trainer that did not give a model."""


def builtin_for(task: str) -> str:
    return "builtin:detect" if task == "detect" else "builtin:classify"


def trainer_argv(trainer: str) -> list[str]:
    """"builtin:detect" | "command:python train.py --lr 0.01" -> the program and its own arguments."""
    if trainer in BUILTIN:
        return [sys.executable, "-m", "edgeloop.hub.training.builtin", trainer.split(":", 1)[1]]
    if trainer.startswith("command:"):
        try:
            argv = shlex.split(trainer[len("command:"):])
        except ValueError as exc:
            raise TrainerError(f"trainer {trainer!r}: {exc}") from exc
        if argv:
            return argv
    raise TrainerError(f"trainer {trainer[:80]!r}: expected {' or '.join(BUILTIN)}, or command:PROGRAM [ARGS...]")


def parse_progress(line: str) -> dict | None:
    """A trainer's stdout line -> its progress ({"epoch", "of", "loss", ...}) or None for a log line."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("epoch"), int) or isinstance(value["epoch"], bool):
        return None
    return {k: v for k, v in value.items() if isinstance(v, (int, float, str, bool)) or v is None}


@dataclass
class Outcome:
    returncode: int | None  # None when it was killed (timeout, cancel)
    timed_out: bool = False
    cancelled: bool = False
    seconds: float = 0.0
    progress: dict | None = None  # the last progress line
    log: list[str] = field(default_factory=list)  # the output's tail
    error: str | None = None  # why it could not run at all (a runner's own failure)

    def take(self, line: str, tail: deque, on_progress: Callable[[dict], None] | None) -> None:
        """One line of the trainer's output: a progress line updates the progress, any other is log."""
        line = line.rstrip("\n")[:MAX_LINE]
        progress = parse_progress(line)
        if progress is None:
            tail.append(line)
            return
        self.progress = progress
        if on_progress is not None:
            on_progress(progress)

    def due_to_stop(self, t0: float, timeout_s: float, poll: Callable[[], bool] | None) -> bool:
        """Past its timeout, or cancelled (poll() True): marks which and says so."""
        if time.monotonic() - t0 > timeout_s:
            self.timed_out = True
        elif poll is not None and poll():
            self.cancelled = True
        return self.timed_out or self.cancelled

    @property
    def reason(self) -> str | None:
        """Why there is no model to judge, or None when the trainer exited 0."""
        if self.cancelled:
            return "cancelled"
        if self.error:
            return self.error
        if self.timed_out:
            return f"the trainer ran past its timeout ({self.seconds:.0f} s) and was stopped"
        if self.returncode != 0:
            tail = " | ".join(self.log[-3:])[-500:]
            return f"the trainer exited with status {self.returncode}" + (f": {tail}" if tail else "")
        return None


def run_trainer(trainer: str, data: Path, parent: Path, out: Path, *, epochs: int | None = None,
                seed: int | None = None, timeout_s: float = 3600.0,
                on_progress: Callable[[dict], None] | None = None,
                poll: Callable[[], bool] | None = None, env: dict | None = None, runner: str = "local",
                job_name: str = "edgeloop-train") -> Outcome:
    """Run one trainer to its end, its timeout, or until poll() returns True (cancel) -> the Outcome.

    poll is called about once a second (the caller's heartbeat and cancel check). runner "local": the
    trainer runs here in a session of its own, so a timeout or a cancel stops it and anything it
    started; "ray:http://HEAD:8265": it runs as a Ray job (ray_runner.py) named job_name."""
    argv = [*trainer_argv(trainer), "--data", str(data), "--parent", str(parent), "--out", str(out)]
    if epochs is not None:
        argv += ["--epochs", str(epochs)]
    if seed is not None:
        argv += ["--seed", str(seed)]
    out.mkdir(parents=True, exist_ok=True)
    from .ray_runner import ray_address, run_on_ray

    address = ray_address(runner)
    if address is not None:
        return run_on_ray(address, argv, submission_id=job_name, timeout_s=timeout_s, on_progress=on_progress,
                          poll=poll, env=env)
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, errors="replace", start_new_session=True,
                                env={**os.environ, **(env or {})}, preexec_fn=_die_with_parent)
    except OSError as exc:
        return Outcome(returncode=127, log=[f"cannot start {argv[0]}: {exc.strerror or exc}"])
    outcome = Outcome(returncode=None)
    tail: deque[str] = deque(maxlen=LOG_LINES)

    def read() -> None:
        for line in proc.stdout:
            outcome.take(line, tail, on_progress)

    reader = threading.Thread(target=read, name="trainer-output", daemon=True)
    reader.start()
    while True:
        try:
            proc.wait(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            pass
        if outcome.due_to_stop(t0, timeout_s, poll):
            _stop(proc)
            break
    reader.join(timeout=5)
    outcome.seconds = time.monotonic() - t0
    outcome.returncode = None if (outcome.timed_out or outcome.cancelled) else proc.returncode
    outcome.log = list(tail)
    return outcome


def _die_with_parent() -> None:
    """In the trainer, before exec: SIGKILL it when the thread that started it dies (Linux), so a hub
    killed mid-job leaves no trainer behind (the job is then failed by the next hub's reap)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass  # not Linux: the trainer outlives a killed hub until its own end


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the trainer's session, SIGKILL it if it is still there after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
