"""The chaos run's fault injectors (edgeloop/bench/chaos.py): one method per kind of
chaos_schedule.KINDS, each breaking something real for the fault's duration and returning what it
did. Mixed into ChaosRun, whose box, links, fleet and services they act on.

    agent_kill       SIGKILL a fleet process (all its agents), start it again after 1-6 s
    relay_kill       SIGKILL a relay, start it again on the same port after 1-8 s
    hub_kill         SIGKILL the hub, start it again on the same port after 1-6 s
    broker_kill      SIGKILL mosquitto (the power cut: what it held in memory is gone; it keeps the
                     shipped config's durability: persistence on, autosave at its default), start it
                     after 2-10 s
    hub_unreachable  the relays' link to the hub refuses or black-holes every connection for a while
    proxy_404        the relays' link to the hub answers every request with a proxy's 404 HTML page
    disk_full        a small-disk fleet process loses its link until its devices' outboxes reach
                     their quota and evict (the fault lasts until an eviction is seen, or 2x its time)
    link_drop        a big-disk fleet process's link turns lossy: connections reset and stalled at random
    slow_link        a big-disk fleet process's link carries 20 kB/s, all its devices together
    relay_disk       a relay's writes fail (its file-size limit drops to 1 KB: EFBIG, "disk I/O error")
"""

from __future__ import annotations

import contextlib
import json
import resource
import time
import urllib.request
from collections import Counter

from edgeloop.procs import Service, ServiceFailed, wait_port
from edgeloop.shared.outbox import read_journal

RESTART_TRIES = 3
SLOW_LINK_RATE = 20_000  # bytes a second
FAILED_DISK_FSIZE = 1024  # bytes: any write past them fails


class Injectors:
    """Needs: self.box (OneBox), self.fleet {name: FleetProc}, self.hub_link, self.fleet_dir, self._svc,
    self._lock and self._held (the services a fault holds down, which the watchdog leaves alone)."""

    @contextlib.contextmanager
    def _holding(self, name: str):
        with self._lock:
            self._held.add(name)
        try:
            yield
        finally:
            with self._lock:
                self._held.discard(name)

    def _restart(self, svc: Service) -> None:
        """Start a service again where its peers expect it (same port), retrying a start that fails."""
        if "--port" in svc.argv and svc.info.get("port"):
            svc.argv[svc.argv.index("--port") + 1] = str(svc.info["port"])
        for attempt in range(RESTART_TRIES):
            svc.start()
            try:
                if svc.name == "mosquitto":
                    wait_port(int(self.box.broker_url.rsplit(":", 1)[1]))
                else:
                    svc.wait_ready(timeout=120)
                return
            except ServiceFailed:
                svc.kill()
                if attempt == RESTART_TRIES - 1:
                    raise
                time.sleep(2.0)

    def _kill_and_restart(self, svc: Service, down_s: float) -> dict:
        with self._holding(svc.name):
            svc.kill()
            time.sleep(down_s)
            self._restart(svc)
        return {}

    def _agent_kill(self, f) -> dict:
        return {"devices": len(self.fleet[f.target].devices), **self._kill_and_restart(self.fleet[f.target].svc,
                                                                                        f.duration)}

    def _relay_kill(self, f) -> dict:
        return self._kill_and_restart(self._svc(f.target), f.duration)

    def _hub_kill(self, f) -> dict:
        return self._kill_and_restart(self._svc("hub"), f.duration)

    def _broker_kill(self, f) -> dict:
        return self._kill_and_restart(self._svc("mosquitto"), f.duration)

    def _hub_unreachable(self, f) -> dict:
        self.hub_link.set_cut(f.mode)
        time.sleep(f.duration)
        self.hub_link.set_cut(None)
        return {"mode": f.mode}

    def _proxy_404(self, f) -> dict:
        before = self.hub_link.counts["http_404"]
        self.hub_link.set_http_error(404)
        time.sleep(f.duration)
        self.hub_link.set_http_error(None)
        return {"answered_404": self.hub_link.counts["http_404"] - before}

    def _disk_full(self, f) -> dict:
        proc = self.fleet[f.target]
        before = self._evictions(proc)
        proc.link.set_cut("refuse")
        t_end = time.monotonic() + f.duration
        while time.monotonic() < t_end or (self._evictions(proc) == before and time.monotonic() < t_end + f.duration):
            time.sleep(1.0)
        proc.link.set_cut(None)
        return {"evictions": self._evictions(proc) - before}

    def _link_drop(self, f) -> dict:
        link = self.fleet[f.target].link
        before = Counter(link.counts)
        link.set_lossy(True, f.seed)
        time.sleep(f.duration)
        link.set_lossy(False)
        return {k: link.counts[k] - before[k] for k in ("lossy_reset", "lossy_stall", "lossy_refused")}

    def _slow_link(self, f) -> dict:
        link = self.fleet[f.target].link
        before = link.counts["throttled_bytes"]
        link.set_rate(SLOW_LINK_RATE)
        time.sleep(f.duration)
        link.set_rate(None)
        return {"throttled_bytes": link.counts["throttled_bytes"] - before}

    def _relay_disk(self, f) -> dict:
        """Every write of the relay past its file-size limit fails (Python ignores SIGXFSZ), as on a
        failing disk; the limit is put back after the fault (unless the relay was restarted meanwhile)."""
        svc = self._svc(f.target)
        url = self.box.relay_urls[int(f.target.rsplit("-", 1)[1])]
        before = _storage_errors(url)
        pid = svc.proc.pid
        try:
            soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (FAILED_DISK_FSIZE, hard))
        except (ProcessLookupError, PermissionError):
            return {"skipped": 1}  # killed meanwhile by relay_kill
        time.sleep(f.duration)
        with contextlib.suppress(ProcessLookupError):
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
        time.sleep(1.0)
        return {"storage_errors": max(0, _storage_errors(url) - before)}

    def _evictions(self, proc) -> int:
        n = 0
        for d in proc.devices:
            path = self.fleet_dir / d / "outbox.sqlite"
            with contextlib.suppress(Exception):  # a device that has not created its file yet
                n += len(read_journal(path).evicted)
        return n


def _storage_errors(relay_url: str) -> int:
    with contextlib.suppress(OSError, ValueError, KeyError):
        with urllib.request.urlopen(f"{relay_url}/status", timeout=5) as resp:
            return int(json.loads(resp.read())["counts"]["storage_errors"])
    return 0
