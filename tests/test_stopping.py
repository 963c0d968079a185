"""A demo stopped with SIGTERM (a `timeout`, a CI job, systemd) takes its services with it: they run
in their own sessions, so only the demo's own cleanup can stop them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line mentions `text` (this test's own folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next((line for line in (entry / "status").read_text().splitlines() if line.startswith("State:")), "")
        except OSError:
            continue  # gone meanwhile
        if text in cmdline and "Z" not in state.split()[1:2]:  # zombies are dead already
            pids.append(int(entry.name))
    return pids


def test_sigterm_stops_the_demo_and_every_service_it_started(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "edgeloop", "demo", "--task", "classify", "--rounds", "1", "--agents", "1",
                             "--relays", "1", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        ready = out / "logs" / "relay-0.ready.json"
        while not (ready.exists() and ready.stat().st_size) and time.monotonic() < deadline:
            assert proc.poll() is None, "the demo ended before its services were up"
            time.sleep(0.2)
        assert ready.exists(), "the relay never became ready"
        services = processes_mentioning(str(out))
        assert len(services) >= 3, services  # broker, hub, relay (the agents may still be starting)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) != 0
        deadline = time.monotonic() + 30
        while processes_mentioning(str(out)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_mentioning(str(out)) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in processes_mentioning(str(out)):
            os.kill(pid, signal.SIGKILL)
