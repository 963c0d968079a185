"""Start and stop edgeloop's services as real child processes (used by the demo and the tests).

Each service is started with `sys.executable -m edgeloop ...`, logs to its own file, tells its
port through a ready file (so ports can be 0), and is stopped with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from edgeloop.shared.errors import EdgeloopError
from edgeloop.shared.mqtt import BROKER_MAX_INFLIGHT


class ServiceFailed(EdgeloopError):
    """A child service exited or did not become ready."""


class Service:
    def __init__(self, name: str, argv: list[str], log_dir: Path, ready_file: Path | None = None,
                 env: dict | None = None):
        self.name, self.argv, self.ready_file = name, argv, ready_file
        self.log_path = Path(log_dir) / f"{name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}

    @classmethod
    def edgeloop(cls, name: str, args: list[str], log_dir: Path, ready: bool = False, **kw) -> "Service":
        ready_file = Path(log_dir) / f"{name}.ready.json" if ready else None
        extra = ["--ready-file", str(ready_file)] if ready_file else []
        return cls(name, [sys.executable, "-m", "edgeloop", *args, *extra], log_dir, ready_file, **kw)

    def start(self) -> "Service":
        if self.ready_file and self.ready_file.exists():
            self.ready_file.unlink()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        log.close()
        return self

    def wait_ready(self, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceFailed(f"{self.name} exited with code {self.proc.returncode}; see {self.log_path}\n"
                                    + self.tail())
            if self.ready_file is None:
                return {}
            if self.ready_file.exists() and self.ready_file.stat().st_size:
                self.info = json.loads(self.ready_file.read_text())
                return self.info
            time.sleep(0.05)
        raise ServiceFailed(f"{self.name} did not become ready in {timeout:.0f}s; see {self.log_path}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM, wait, then SIGKILL; -> the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no chance to clean up (crash and power-cut tests)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def sigterm_unwinds() -> None:
    """Make SIGTERM unwind the main thread like Ctrl-C does, so that the `finally` which stops the
    child services runs: they live in their own sessions and would otherwise outlive their parent
    (a `timeout`, a CI job or systemd stopping a demo or benchmark)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def mosquitto_service(port: int, work: Path, log_dir: Path, persistence: bool = False) -> Service:
    """A real mosquitto on loopback with a generated config (anonymous, for one-box runs and tests)."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        raise ServiceFailed("mosquitto is not installed (Debian: apt-get install mosquitto)")
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "mosquitto.conf"
    # Started as root, mosquitto would switch to its own user, which cannot write the persistence
    # file into our work folder: stay whoever started it (ignored when that is not root).
    lines = [f"user {pwd.getpwuid(os.getuid()).pw_name}",
             f"listener {port} 127.0.0.1", "allow_anonymous true", "max_queued_messages 100000",
             f"max_inflight_messages {BROKER_MAX_INFLIGHT}",
             f"persistence {'true' if persistence else 'false'}", f"persistence_location {work}/"]
    conf.write_text("\n".join(lines) + "\n")
    return Service("mosquitto", [exe, "-c", str(conf)], log_dir)


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise ServiceFailed(f"nothing listens on {host}:{port} after {timeout:.0f}s")
