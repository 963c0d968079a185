"""`edgeloop bench chaos`: does the delivery contract hold while everything breaks?

Real processes on loopback: mosquitto (with persistence, the shipped config's autosave), the hub, R
relays (one site each, with budgets on) and N agents in firmware-sim's fleet mode (PROCS_PER_SITE
processes per site; the first of each site has a small disk; on the first site one device's clock
is years ahead and one's an hour behind). Every agent keeps a journal in its outbox file: each sample
id it committed, each one it evicted; every relay a journal of each id's fate (relay/store.py). For M
minutes a schedule drawn from the seed injects faults of ten kinds (chaos_faults.py), each kind on its
own timeline (one fault of a kind at a time; kinds overlap freely).

Agents reach the broker, and relays the hub, through FaultyLink proxies in this process (no root,
no tc). Afterwards the faults stop, every fleet process gets SIGUSR1 (cameras end; each agent sends
what it queued, then the process exits), the relays forward what they hold, everything stops, and
each committed sample id is accounted for (chaos_reconcile.py): at the hub (where the primary key
allows one row), evicted by its own outbox and counted, or dropped on purpose by a relay's budget
and journaled. Anything else is lost.

Figures (OUT/chaos.json): faults by kind, committed, evicted, dropped by relay budgets, at_hub,
duplicates_at_hub, lost, the clocks corrected, the seed, and each fault as it happened.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click

from edgeloop.procs import Service, ServiceFailed, sigterm_unwinds
from edgeloop.shared.outbox import Journal, read_journal

from .chaos_faults import Injectors
from .chaos_reconcile import DELIBERATE, backlog_share, hub_rows, reconcile, relay_journals
from .chaos_report import print_figures
from .chaos_schedule import KINDS, Fault, draw_schedule
from .faulty_link import FaultyLink, LinkHost
from .scratch import fresh_box

PROCS_PER_SITE = 2  # fleet processes per site; the first of each site has SMALL_DISK
DISK = "4MB"  # outbox quota of a device (the fleet's default)
SMALL_DISK = "24KB"  # about ten candidates: a link down for ten seconds fills it
# Cameras take a frame every 10 s of capture time, so that at 2 fps an hour of capture passes in three
# minutes. Agents keep half their frames in 1-minute windows (the relays' too): a window closes every
# 3 s, so commits are steady (about one a second per agent) and a cut link soon fills a small disk.
CAPTURE_EVERY_S = 10.0
AGENT_PER_HOUR = 180
AGENT_WINDOW_S = 60
AGENT_SIGNALS = {"least_confidence": 1.0, "margin": 0.5, "random": 0.1}
SETTLE_STALL_S = 120.0  # settling gives up when the hub gains nothing for this long
RELAY_PER_HOUR_PER_AGENT = 90  # the relays' budget (top by value): half of what the agents keep
# Standing faults, on the first site: a device whose clock is five years ahead, one an hour behind,
# and one offline for an hour of capture time (BACKLOG_S, or half the fault window if that is
# shorter), from a tenth into the window: its backlog then competes in windows long closed.
CLOCKS = {"clock_ahead": 5 * 365 * 86400.0, "clock_behind": -3600.0}
BACKLOG_S = 3600.0
RELAY_WINDOW_S = 60.0  # the one-box relays' selection window (sampling_toml's default)


# --- the run ----------------------------------------------------------------------------------------
@dataclass
class ChaosSettings:
    out: Path
    agents: int = 40
    relays: int = 2
    minutes: float = 10.0
    seed: int = 0
    faults_per_kind: int = 12
    fps: float = 2.0
    state_interval: float = 2.0
    settle_timeout_s: float = 900.0
    broker_persistence: bool = True  # off: a broker restart drops queued messages (shows that a loss is seen)


@dataclass
class FleetProc:
    svc: Service
    devices: list[str]
    small_disk: bool
    link: FaultyLink
    clock: float = 0.0  # seconds its devices' clocks are off
    backlog: bool = False  # the device offline for an hour of capture time

    @property
    def name(self) -> str:
        return self.svc.name


@dataclass
class Record:
    """A fault as it happened: when it started (s after the window opened), how long it held, what it did."""

    kind: str
    target: str
    planned_at: float
    started_at: float
    held_s: float
    detail: dict = field(default_factory=dict)


class ChaosRun(Injectors):
    def __init__(self, s: ChaosSettings, status=lambda text: None):
        from edgeloop.onebox import OneBox, OneBoxSettings

        self.s, self.status = s, status
        self.box = OneBox(OneBoxSettings(
            out=fresh_box(s.out), agents=0, relays=s.relays, broker="mosquitto", broker_persistence=s.broker_persistence,
            # agents=0 (this run starts its own fleet): the relays' budget is per site, spelled out here
            frames_per_round=10**9, relay_per_hour_per_agent=RELAY_PER_HOUR_PER_AGENT * math.ceil(s.agents / s.relays),
            relay_strategy="top", seed=s.seed, seed_set=300,
            golden_per_condition=50, epochs=4))
        self.links = LinkHost()
        self.hub_link: FaultyLink | None = None
        self.fleet: dict[str, FleetProc] = {}
        self.records: list[Record] = []
        self.unexpected_exits: list[dict] = []
        self.errors: list[BaseException] = []
        self._held: set[str] = set()  # services a fault holds down right now
        self._lock = threading.Lock()
        self._kind_locks = {k: threading.Lock() for k in KINDS}
        self._t0 = 0.0
        self.backlog: dict = {}  # the backlog fault, once it is over

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> None:
        from edgeloop.onebox import sampling_toml

        box = self.box
        self.status("building the simulated world and training the seed model")
        golden, seed = box.make_datasets()
        box.seed_hub(golden, seed)
        self.status(f"starting mosquitto (persistent), the hub and {self.s.relays} relays")
        box.start_broker()
        box.start_hub(golden)
        self.hub_link = self.links.add("hub-link", self._svc("hub").info["port"])
        box.start_relays(hub_url=f"http://127.0.0.1:{self.hub_link.port}")
        box.watch_states()
        conf = box.s.out / "agent.toml"
        conf.write_text(sampling_toml(AGENT_PER_HOUR, AGENT_SIGNALS, self.s.seed, window_s=AGENT_WINDOW_S))
        per_site = math.ceil(self.s.agents / self.s.relays)
        self.status(f"starting {per_site * self.s.relays} agents in fleet mode")
        broker_port = int(box.broker_url.rsplit(":", 1)[1])
        # Cameras keep the wall clock's pace from here, as real ones do: an agent killed and restarted
        # resumes at the frame due now, not at its cursor, so it does not fall behind its site for good
        # (whose windows would then judge all it sends in late panes).
        wall = time.time()
        first = 0
        for k, site in enumerate(box.sites):
            for name, n, small, role in self._fleet_plan(k, site, per_site):
                link = self.links.add(name, broker_port)
                clock = CLOCKS.get(role, 0.0)
                source = (f"sim:cam-{{i:04d}}?every={CAPTURE_EVERY_S:g}&wall={wall:.3f}"
                          + (f"&clock={clock:.0f}" if clock else ""))
                svc = Service.edgeloop(name, [
                    "fleet", "--agents", str(n), "--first", str(first), "--site", site,
                    "--broker", f"mqtt://127.0.0.1:{link.port}", "--pubkey", str(box.public_key_path),
                    "--data", str(self.fleet_dir), "--config", str(conf), "--max-fps", str(self.s.fps),
                    "--state-interval", str(self.s.state_interval), "--sim-seed", str(self.s.seed),
                    "--source-pattern", source,
                    "--quota", SMALL_DISK if small else DISK, "--outbox-journal"], box.logs, ready=True)
                box.services.append(svc.start())
                self.fleet[name] = FleetProc(svc, [f"dev-{i:04d}" for i in range(first, first + n)], small, link,
                                             clock, role == "backlog")
                first += n
        for p in self.fleet.values():
            p.svc.wait_ready(timeout=300)
        box.agent_ids = [d for p in self.fleet.values() for d in p.devices]
        n = len(box.agent_ids)

        def on_v0():
            states = box.agent_states()
            ready = sum(1 for d in box.agent_ids if (st := states.get(d)) and st.model_version == "v0")
            return ready == n or f"{ready}/{n} agents on v0"

        box.wait("every agent on v0", on_v0, timeout=600, progress=lambda d: d is True or self.status(d))

    @staticmethod
    def _fleet_plan(k: int, site: str, per_site: int) -> list[tuple[str, int, bool, str]]:
        """A site's fleet processes: (name, devices, small disk?, role). The first site's last three
        devices run alone, with the standing faults (when it has devices enough)."""
        roles = [*CLOCKS, "backlog"] if k == 0 and per_site >= 2 * PROCS_PER_SITE + 1 else []
        rest = per_site - len(roles)
        chunk = -(-rest // PROCS_PER_SITE)
        plan = [(f"fleet-{site}-{j}", min(chunk, rest - j * chunk), j == 0, "") for j in range(PROCS_PER_SITE)]
        return [p for p in plan if p[1] > 0] + [(f"fleet-{site}-{role}", 1, False, role) for role in roles]

    @property
    def fleet_dir(self) -> Path:
        return self.box.s.out / "fleet"

    def _svc(self, name: str) -> Service:
        return next(s for s in self.box.services if s.name == name)

    # -- faults --------------------------------------------------------------------------------
    def schedule(self) -> list[Fault]:
        # The backlog device's outage is its own: no fault of the schedule cuts or restarts it.
        return draw_schedule(self.s.seed, self.s.minutes * 60, self.s.faults_per_kind,
                             sorted(n for n, p in self.fleet.items() if not p.backlog),
                             sorted(n for n, p in self.fleet.items() if p.small_disk),
                             [f"relay-{i}" for i in range(self.s.relays)])

    def run_faults(self, faults: list[Fault]) -> None:
        """Inject the schedule in real time, each fault in its own thread; return when all are over."""
        self._t0 = time.monotonic()
        stop_watch = threading.Event()
        watchdog = threading.Thread(target=self._watch, args=(stop_watch,), name="watchdog", daemon=True)
        watchdog.start()
        threads = [threading.Thread(target=self._backlog, name="backlog", daemon=True)]
        threads[0].start()
        try:
            for f in faults:
                while (wait := self._t0 + f.at - time.monotonic()) > 0:
                    self._raise_errors()
                    self.status(f"chaos: {len(self.records)}/{len(faults)} faults done, next {f.kind} "
                                f"in {wait:.0f}s")
                    time.sleep(min(wait, 1.0))
                t = threading.Thread(target=self._inject, args=(f,), name=f.kind, daemon=True)
                t.start()
                threads.append(t)
            while any(t.is_alive() for t in threads):
                self._raise_errors()
                self.status(f"chaos: {len(self.records)}/{len(faults)} faults done")
                time.sleep(1.0)
            self._raise_errors()
        finally:
            stop_watch.set()
            watchdog.join(10)

    def _backlog(self) -> None:
        """The standing backlog fault: the device's link is cut for an hour of its capture time."""
        proc = next((p for p in self.fleet.values() if p.backlog), None)
        if proc is None:
            return
        window = self.s.minutes * 60
        held = min(BACKLOG_S / (CAPTURE_EVERY_S * self.s.fps), 0.5 * window)
        time.sleep(0.1 * window)
        proc.link.set_cut("refuse")
        cut_at = time.time()
        time.sleep(held)
        proc.link.set_cut(None)
        self.backlog = {"device": proc.devices[0], "offline_wall_s": round(held, 1),
                        "offline_capture_s": round(held * CAPTURE_EVERY_S * self.s.fps), "cut_at": cut_at,
                        "restored_at": time.time()}

    def _raise_errors(self) -> None:
        if self.errors:
            raise self.errors[0]

    def _inject(self, f: Fault) -> None:
        try:
            with self._kind_locks[f.kind]:  # a kind's faults never overlap, even when one runs late
                started = time.monotonic()
                detail = getattr(self, f"_{f.kind}")(f)
                rec = Record(f.kind, f.target, f.at, round(started - self._t0, 2),
                             round(time.monotonic() - started, 2), detail or {})
            with self._lock:
                self.records.append(rec)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which stops the run
            self.errors.append(exc)

    def _watch(self, stop: threading.Event) -> None:
        """A service that exited without a fault holding it down is a finding: note it, start it again."""
        while not stop.wait(2.0):
            for svc in list(self.box.services):
                with self._lock:
                    held = svc.name in self._held
                if held or svc.name == "hub-seed" or svc.alive():
                    continue
                self.unexpected_exits.append({"service": svc.name, "code": svc.proc.returncode,
                                              "at_s": round(time.monotonic() - self._t0, 1), "log": svc.tail(5)})
                try:
                    self._restart(svc)
                except ServiceFailed as exc:
                    self.errors.append(exc)

    # -- settle and count ----------------------------------------------------------------------
    def settle(self) -> dict:
        """Every link healed: the fleet sends what it queued and exits; wait until the hub holds what it can."""
        for link in self.links.links.values():
            link.set_cut(None)
            link.set_lossy(False)
            link.set_rate(None)
            link.set_http_error(None)
        t0 = time.monotonic()
        self.status("settling: the agents send what they queued")
        for p in self.fleet.values():
            p.svc.proc.send_signal(signal.SIGUSR1)
        deadline = t0 + self.s.settle_timeout_s
        while any(p.svc.alive() for p in self.fleet.values()) and time.monotonic() < deadline:
            time.sleep(1.0)
        undrained = [p.name for p in self.fleet.values() if p.svc.alive()]
        fleet_codes = {p.name: p.svc.stop() for p in self.fleet.values()}
        delivered = set()
        for j in self.journals():
            delivered |= j.committed - j.evicted
        self.status(f"settling: the relays forward what they hold (of {len(delivered)} candidates)")
        devices = set(self.box.agent_ids)
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            fates = self.relay_fates()
            expected = {sid for sid in delivered if fates.get(sid) not in DELIBERATE}
            _, ours = hub_rows(self.hub_db, devices)
            have = len(expected & ours)
            if have == len(expected):
                break
            if have != last:
                last, last_change = have, time.monotonic()
            elif time.monotonic() - last_change > SETTLE_STALL_S:
                break
            self.status(f"settling: {have}/{len(expected)} at the hub")
            time.sleep(2.0)
        return {"settle_s": round(time.monotonic() - t0, 1), "fleet_exit_codes": fleet_codes,
                "undrained_fleet": undrained, "relay_counts": self._relay_counts()}

    def _relay_counts(self) -> dict:
        with contextlib.suppress(Exception):
            return {r["relay_id"]: {k: r["counts"][k] for k in (
                "received", "duplicates", "kept", "dropped", "forwarded", "rejected", "storage_errors",
                "clock_corrected", "late_kept")} | {"queued": r["queued"], "clock_corrected_by_device":
                                                    r["clock_corrected"]}
                for r in self.box.relay_status()}
        return {}

    def relay_fates(self) -> dict[str, str | None]:
        paths = [self.box.s.out / f"relay-{i}" / "relay.sqlite" for i in range(self.s.relays)]
        return relay_journals([p for p in paths if p.exists()])

    @property
    def hub_db(self) -> Path:
        return self.box.s.out / "hub" / "hub.sqlite"

    def journals(self) -> list[Journal]:
        return [read_journal(self.fleet_dir / d / "outbox.sqlite") for d in self.box.agent_ids]

    def figures(self, settle: dict) -> dict:
        hub, ours = hub_rows(self.hub_db, set(self.box.agent_ids))
        fates = self.relay_fates()
        counted = reconcile(self.journals(), hub, ours, fates)
        by_kind = Counter(r.kind for r in self.records)
        detail: dict = {}
        for r in self.records:
            for k, v in r.detail.items():
                if isinstance(v, int) and k != "exit_code":
                    detail.setdefault(r.kind, Counter())[k] += v
        return {
            "seed": self.s.seed, "agents": len(self.box.agent_ids), "relays": self.s.relays,
            "minutes": self.s.minutes, "faults": {k: by_kind[k] for k in KINDS},
            **{k: counted[k] for k in ("committed", "evicted", "dropped_by_relay_budget", "dropped_by_relay_quota",
                                       "dead_letters", "at_hub", "duplicates_at_hub", "lost")},
            "standing_faults": self._clock_figures(settle.get("relay_counts", {}), fates),
            "backlog": self._backlog_figures(),
            "evicted_after_delivery": counted["evicted_after_delivery"], "still_queued": counted["still_queued"],
            "at_hub_never_committed": counted["at_hub_never_committed"], "lost_ids": counted["lost_ids"],
            "fault_seconds": {k: round(sum(r.held_s for r in self.records if r.kind == k), 1) for k in KINDS},
            "fault_effects": {k: dict(v) for k, v in detail.items()},
            "unexpected_exits": self.unexpected_exits, **settle,
            "settings": {"fps": self.s.fps, "faults_per_kind": self.s.faults_per_kind,
                         "broker_persistence": self.s.broker_persistence,
                         "procs_per_site": PROCS_PER_SITE, "disk": DISK, "small_disk": SMALL_DISK,
                         "agent_per_hour": AGENT_PER_HOUR, "agent_window_s": AGENT_WINDOW_S,
                         "capture_every_s": CAPTURE_EVERY_S, "relay_per_hour_per_agent": RELAY_PER_HOUR_PER_AGENT,
                         "relay_strategy": "top"},
            "events": [asdict(r) for r in sorted(self.records, key=lambda r: r.started_at)],
        }

    def _backlog_figures(self) -> dict:
        from edgeloop.relay.store import journal_rows

        if not self.backlog:
            return {}
        per_hour = RELAY_PER_HOUR_PER_AGENT * math.ceil(self.s.agents / self.s.relays)
        rows = journal_rows(self.box.s.out / "relay-0" / "relay.sqlite")
        return {**self.backlog, **backlog_share(rows, self.backlog["device"], self.backlog["cut_at"],
                                                self.backlog["offline_capture_s"], per_hour, RELAY_WINDOW_S)}

    def _clock_figures(self, relay_counts: dict, fates: dict) -> dict:
        """The wrong clocks: how many of each device's capture times the relay corrected, and what
        became of its candidates there."""
        corrected: Counter = Counter()
        for r in relay_counts.values():
            corrected.update(r.get("clock_corrected_by_device", {}))
        out = {}
        for name, p in self.fleet.items():
            if not p.clock:
                continue
            mine = set()
            for d in p.devices:
                mine |= read_journal(self.fleet_dir / d / "outbox.sqlite").committed
            out[name.rsplit("-", 1)[1] if "clock" in name else name] = {
                "devices": p.devices, "offset_s": p.clock, "committed": len(mine),
                "corrected_at_relay": sum(corrected[d] for d in p.devices),
                "fates_at_relay": dict(Counter(fates.get(sid) or "pending" for sid in mine if sid in fates))}
        return out

    def close(self) -> None:
        self.box.stop()
        self.links.close()


def run_chaos(s: ChaosSettings, status=lambda text: None) -> dict:
    """The whole run: start, inject the schedule, settle, stop, count -> the figures of chaos.json."""
    run = ChaosRun(s, status)
    try:
        run.start()
        run.run_faults(run.schedule())
        settle = run.settle()
    finally:
        run.close()
    return run.figures(settle)


@click.command("chaos")
@click.option("--agents", default=40, show_default=True, help="Simulated agents (fleet mode, real agent code).")
@click.option("--relays", default=2, show_default=True, help="Relays, one site each.")
@click.option("--minutes", default=10.0, show_default=True, help="Length of the fault window.")
@click.option("--faults-per-kind", default=12, show_default=True, help="Faults of each of the ten kinds.")
@click.option("--seed", default=0, show_default=True, help="Draws the fault schedule (and seeds the world).")
@click.option("--fps", default=2.0, show_default=True, help="Frames a second per agent.")
@click.option("--broker-persistence/--no-broker-persistence", default=True, show_default=True,
              help="mosquitto keeps sessions and queued messages across a restart (off: expect losses).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/bench"), show_default=True)
def chaos(agents, relays, minutes, faults_per_kind, seed, fps, broker_persistence, out) -> None:
    """Break everything on a seeded schedule, then account for every committed candidate.

    Real mosquitto (persistent), hub, relays (budgets on) and agents (fleet mode; one device's clock
    years ahead, one's an hour behind). Faults: agents, relays, the hub and mosquitto SIGKILLed and
    restarted; the hub unreachable, or behind a proxy answering 404; a device's link cut until its
    disk (outbox quota) fills; lossy links; 20 kB/s links; a relay's disk failing. Afterwards every
    committed sample id must be at the hub exactly once, evicted by its outbox and counted, or dropped
    by a relay's budget and journaled. Writes OUT/chaos.json (faults by kind, committed, evicted,
    dropped, at_hub, duplicates_at_hub, lost, seed, every fault) and exits 1 when anything was lost
    or stored twice.

    \b
    Example:
      edgeloop bench chaos --agents 40 --relays 2 --minutes 10 --out runs/bench
      edgeloop bench chaos --agents 6 --relays 1 --minutes 1.5 --faults-per-kind 1 --seed 7 --out /tmp/c
    """
    from rich.console import Console

    sigterm_unwinds()
    out.mkdir(parents=True, exist_ok=True)
    s = ChaosSettings(out=out / "chaos", agents=agents, relays=relays, minutes=minutes, seed=seed,
                      faults_per_kind=faults_per_kind, fps=fps, broker_persistence=broker_persistence)
    with Console(stderr=True).status("starting") as spinner:
        fig = run_chaos(s, lambda text: spinner.update(text))
    (out / "chaos.json").write_text(json.dumps(fig, indent=1))
    print_figures(fig)
    click.echo(f"wrote {out / 'chaos.json'}")
    if fig["lost"] or fig["duplicates_at_hub"]:
        raise click.ClickException(f"the delivery contract broke: {fig['lost']} lost, "
                                   f"{fig['duplicates_at_hub']} stored twice (first lost: {fig['lost_ids'][:3]})")
