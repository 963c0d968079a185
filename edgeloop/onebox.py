"""Everything on one box as separate processes: broker, hub, R relays, N agents on loopback.

Used by `edgeloop demo` and by the end-to-end tests. Watches the agents through their retained
`state` topics (as an MQTT client) and the relays through their /status pages.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from edgeloop.broker import free_port
from edgeloop.procs import Service, ServiceFailed, mosquitto_service, wait_port
from edgeloop.shared import topics
from edgeloop.shared.hubclient import HubClient
from edgeloop.shared.mqtt import Connection
from edgeloop.shared.protocol import DeviceState, decode

def _toml_value(v) -> str:
    """A TOML value: a dict becomes an inline table, anything else its JSON (valid TOML for numbers,
    strings and booleans)."""
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)


def sampling_toml(per_hour: float | None, signals: dict[str, float | dict], seed: int, window_s: float = 60,
                  **extra) -> str:
    """A [sampling] section: budget per hour of capture time (None: unlimited) over windows of
    window_s seconds, signal kind -> weight (or -> {"weight": w, other keys of the signal}), and any
    other [sampling] keys (strategy, audit_fraction, ...)."""
    budget = "" if per_hour is None else f"per_hour = {per_hour}, "
    lines = ["[sampling]", f"budget = {{ {budget}window_s = {window_s} }}", f"seed = {seed}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in extra.items()]
    for kind, weight in signals.items():
        keys = weight if isinstance(weight, dict) else {"weight": weight}
        lines += ["[[sampling.signals]]", f'kind = "{kind}"', *(f"{k} = {json.dumps(v)}" for k, v in keys.items())]
    return "\n".join(lines) + "\n"


AGENT_SIGNALS = {"least_confidence": 1.0, "margin": 0.5, "random": 0.1}
# A detector's agent: its least sure box, boxes just over the serving threshold (0.25; Roboflow's
# close_to_threshold), novelty, and a random share. Box uncertainty cannot see what the model misses
# altogether (at night, before it has seen a night, that is nearly everything): a frame unlike what
# the agent kept lately, or a random one, stands for those.
AGENT_DETECT_SIGNALS = {"least_confidence": 1.0,
                        "close_to_threshold": {"weight": 0.5, "low": 0.25, "high": 0.45},
                        "novelty": {"weight": 1.0, "min_distance": 0.05}, "random": 0.3}
# A detector's agent drops frames that show what its camera kept in the last 5 minutes (a parked car,
# an empty lot at night): shared/sampling/temporal.py. bench loop's edgeloop arm runs with it; the demo
# does not yet (its figures in the README were measured without it).
AGENT_DETECT_TEMPORAL_DEDUP = {"horizon_s": 300.0, "max_change": 6.0, "min_iou": 0.5}
RELAY_SIGNALS = {"least_confidence": 1.0, "entropy": 0.5}
RELAY_DETECT_SIGNALS = {**RELAY_SIGNALS, "random": 0.3}  # a floor, so diversity can pick silent frames
# The relay spends its budget on diversity: no near duplicates across cameras, classes balanced.
RELAY_POLICY = {"strategy": "diverse", "dedup_threshold": 0.02, "balance_classes": True}


@dataclass
class OneBoxSettings:
    out: Path
    task: str = "classify"  # classify: the digits world; detect: the scenes world (video-like streams)
    fps: float = 2.0  # detect: the cameras' frame rate (frames per second of world time)
    agents: int = 4
    relays: int = 2
    broker: str = "embedded"  # or "mosquitto"
    broker_persistence: bool = False  # mosquitto only: sessions and queued messages survive a restart
    frames_per_round: int = 600
    agent_per_hour: float = 600  # a simulated camera runs at 1 frame per second of capture time
    relay_per_hour_per_agent: float | None = 300  # None: relays forward everything
    relay_strategy: str = "diverse"  # or "top"
    seed: int = 0
    seed_set: int = 300
    golden_per_condition: int = 300
    epochs: int = 15  # per round
    seed_epochs: int | None = None  # the seed model's (None: epochs)
    # Relays' and the hub's near-duplicate distance (cosine, embeddings; 0: none). A detector's embedding
    # is mostly its camera's background: a fixed camera's frames a minute apart are within 0.02.
    dedup_threshold: float = 0.02
    agent_max_fps: float = 0.0  # 0: as fast as the CPU goes
    audit_fraction: float = 0.0  # share of frames every tier keeps outside its budget, reason "audit"
    agent_api: bool = False  # agents serve their local API (feedback, metrics) on a free loopback port
    hub_args: tuple[str, ...] = ()  # more `hub serve` options, e.g. ("--policy", "policy.toml")


class OneBox:
    def __init__(self, s: OneBoxSettings):
        self.s = s
        self.logs = s.out / "logs"
        self.token = secrets.token_hex(16)
        self.services: list[Service] = []
        self.states: dict[str, DeviceState] = {}
        self._lock = threading.Lock()
        self.hub: HubClient | None = None
        self.relay_urls: list[str] = []
        self.agent_ids = [f"dev-{i:03d}" for i in range(s.agents)]
        self.sites = [f"site-{i}" for i in range(s.relays)]
        self.watcher: Connection | None = None
        self.broker_url = ""

    @property
    def public_key_path(self) -> Path:
        """The hub's public key, created by `hub seed`; agents are provisioned with it."""
        return self.s.out / "hub" / "keys" / "hub.pub"

    def site_of(self, agent_index: int) -> str:
        return self.sites[agent_index % len(self.sites)]

    # -- start -------------------------------------------------------------------------------
    def world(self):
        """The simulated world of the task, as the agents' source plug-in builds it."""
        if self.s.task == "detect":
            from edgeloop.sim import ScenesWorld

            return ScenesWorld(seed=self.s.seed, fps=self.s.fps)
        from edgeloop.sim import World

        return World(seed=self.s.seed)

    def camera_source(self, i: int) -> str:
        if self.s.task == "detect":
            return f"scenes:cam-{i:03d}?fps={self.s.fps:g}"
        return f"sim:cam-{i:03d}"

    def make_datasets(self) -> tuple[Path, Path]:
        data = self.s.out / "data"
        data.mkdir(parents=True, exist_ok=True)
        world = self.world()
        golden, seed = data / "golden.npz", data / "seed.npz"
        world.golden_set(per_condition=self.s.golden_per_condition).save(golden)
        world.seed_set(n=self.s.seed_set).save(seed)
        return golden, seed

    def start_services(self, status=lambda text: None) -> None:
        """Everything but the agents: world data sets, the seed model, broker, hub, relays, the state watcher."""
        status("building the simulated world (golden and seed sets)")
        golden, seed = self.make_datasets()
        status("round 0: training the seed model at the hub")
        self.seed_hub(golden, seed)
        status(f"starting the {self.s.broker} broker, hub and {self.s.relays} relays")
        self.start_broker()
        self.start_hub(golden)
        self.start_relays()
        self.watch_states()

    def start_broker(self) -> str:
        if self.s.broker == "mosquitto":
            port = free_port()
            svc = mosquitto_service(port, self.s.out / "mosquitto", self.logs, persistence=self.s.broker_persistence)
            self._add(svc.start())
            wait_port(port)
            self.broker_url = f"mqtt://127.0.0.1:{port}"
        else:
            svc = Service.edgeloop("broker", ["broker", "--port", "0"], self.logs, ready=True)
            self._add(svc.start())
            self.broker_url = svc.wait_ready()["url"]
            wait_port(int(self.broker_url.rsplit(":", 1)[1]))
        return self.broker_url

    def seed_hub(self, golden: Path, seed: Path) -> str:
        svc = Service.edgeloop("hub-seed", ["hub", "seed", "--data", str(self.s.out / "hub"), "--dataset", str(seed),
                                            "--golden", str(golden), "--epochs", str(self.s.seed_epochs or self.s.epochs)], self.logs)
        code = svc.start().proc.wait()
        if code != 0:
            raise ServiceFailed(f"hub seed failed ({code}); see {svc.log_path}\n{svc.tail()}")
        return svc.tail(1)

    def start_hub(self, golden: Path) -> HubClient:
        svc = Service.edgeloop("hub", ["hub", "serve", "--data", str(self.s.out / "hub"), "--golden", str(golden),
                                       "--port", "0", "--token", self.token, *self.s.hub_args], self.logs, ready=True)
        self._add(svc.start())
        self.hub = HubClient(svc.wait_ready(timeout=120)["url"], self.token)
        return self.hub

    def start_relays(self, hub_url: str | None = None) -> None:
        """One relay per site; hub_url: where relays reach the hub (default the hub itself, e.g. a proxy)."""
        per_hour = None
        if self.s.relay_per_hour_per_agent is not None:
            per_hour = self.s.relay_per_hour_per_agent * max(1, self.s.agents // max(1, self.s.relays))
        conf = self.s.out / "relay.toml"
        # unlimited: forward every candidate
        policy = {**RELAY_POLICY, "dedup_threshold": self.s.dedup_threshold} if per_hour is not None else {}
        if self.s.relay_strategy == "top":  # by value alone (the chaos run replays its budget from journals)
            policy = {}
        signals = RELAY_DETECT_SIGNALS if self.s.task == "detect" else RELAY_SIGNALS
        # The relay checks its agents' audit claims against the same draw (seed and fraction).
        conf.write_text(sampling_toml(per_hour, signals, self.s.seed, audit_fraction=self.s.audit_fraction, **policy))
        svcs = []
        for i, site in enumerate(self.sites):
            svc = Service.edgeloop(f"relay-{i}", [
                "relay", "run", "--id", f"relay-{i}", "--site", site, "--broker", self.broker_url,
                "--hub", hub_url or self.hub.url, "--token", self.token, "--data", str(self.s.out / f"relay-{i}"),
                "--config", str(conf), "--port", "0", "--flush-idle", "1.5", "--poll", "1"], self.logs, ready=True)
            svcs.append(self._add(svc.start()))
        self.relay_urls = [svc.wait_ready(timeout=60)["url"] for svc in svcs]

    def agent_service(self, i: int, env: dict | None = None) -> Service:
        conf = self.s.out / "agent.toml"
        if not conf.exists():
            signals = AGENT_DETECT_SIGNALS if self.s.task == "detect" else AGENT_SIGNALS
            conf.write_text(sampling_toml(self.s.agent_per_hour, signals, self.s.seed,
                                          audit_fraction=self.s.audit_fraction))
        return Service.edgeloop(self.agent_ids[i], [
            "agent", "run", "--device", self.agent_ids[i], "--site", self.site_of(i), "--broker", self.broker_url,
            "--source", self.camera_source(i), "--sim-seed", str(self.s.seed), "--data", str(self.s.out / self.agent_ids[i]),
            "--pubkey", str(self.public_key_path),
            "--config", str(conf), "--frames-per-model", str(self.s.frames_per_round), "--state-interval", "0.5",
            "--max-fps", str(self.s.agent_max_fps), *(["--api", "127.0.0.1:0"] if self.s.agent_api else [])],
            self.logs, ready=self.s.agent_api, env=env)

    def start_fleet(self, per_site: int, max_fps: float = 2.0, state_interval: float = 1.0,
                    procs_per_site: int = 1) -> list[Service]:
        """firmware-sim's fleet mode: `per_site` real agents per site (dev-0000 ...), in `procs_per_site`
        processes each."""
        conf = self.s.out / "agent.toml"
        if not conf.exists():
            conf.write_text(sampling_toml(self.s.agent_per_hour, AGENT_SIGNALS, self.s.seed,
                                          audit_fraction=self.s.audit_fraction))
        procs, first = [], 0
        for site in self.sites:
            chunk = -(-per_site // procs_per_site)
            for j in range(procs_per_site):
                n = min(chunk, per_site - j * chunk)
                if n <= 0:
                    break
                svc = Service.edgeloop(f"fleet-{site}-{j}", [
                    "fleet", "--agents", str(n), "--first", str(first), "--site", site, "--broker", self.broker_url,
                    "--pubkey", str(self.public_key_path), "--data", str(self.s.out / "fleet"), "--config", str(conf),
                    "--max-fps", str(max_fps), "--state-interval", str(state_interval),
                    "--sim-seed", str(self.s.seed)], self.logs, ready=True)
                procs.append(self._add(svc.start()))
                first += n
        for svc in procs:
            svc.wait_ready(timeout=300)
        self.agent_ids = [f"dev-{i:04d}" for i in range(first)]
        return procs

    def start_agents(self, env: dict | None = None) -> list[Service]:
        return [self._add(self.agent_service(i, env).start()) for i in range(self.s.agents)]

    def watch_states(self) -> None:
        def on_message(client, userdata, msg):
            try:
                st = decode(msg.payload, DeviceState)
            except Exception:  # noqa: BLE001 - a watcher ignores what it cannot read
                return
            with self._lock:
                self.states[st.device_id] = st

        self.watcher = Connection(self.broker_url, client_id=f"onebox-watch-{secrets.token_hex(3)}",
                                  on_message=on_message, subscriptions=[(f"{topics.ROOT}/+/+/state", 1)]).start()
        if not self.watcher.wait_connected(20):
            raise ServiceFailed(f"cannot connect to the broker at {self.broker_url}")

    # -- observe -----------------------------------------------------------------------------
    def relay_status(self) -> list[dict]:
        out = []
        for url in self.relay_urls:
            with urllib.request.urlopen(f"{url}/status", timeout=10) as resp:
                out.append(json.loads(resp.read()))
        return out

    def agent_states(self) -> dict[str, DeviceState]:
        with self._lock:
            return dict(self.states)

    def check_alive(self) -> None:
        for svc in self.services:
            if not svc.alive() and svc.name != "hub-seed":
                raise ServiceFailed(f"{svc.name} exited with code {svc.proc.returncode}; see {svc.log_path}\n{svc.tail()}")

    def wait(self, what: str, cond, timeout: float, progress=None) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            done = cond()
            if progress:
                progress(done)
            if done is True:
                return
            if time.monotonic() > deadline:
                raise ServiceFailed(f"timed out after {timeout:.0f}s waiting for {what} (logs in {self.logs})")
            time.sleep(0.2)

    def round_done(self, version: str, target_frames: int):
        """True when every agent ran `target_frames` with `version`, its outbox is empty and the relays drained."""
        states = self.agent_states()
        ready = [st for d, st in states.items() if d in self.agent_ids and st.status == "online"
                 and st.model_version == version and st.stats.get("frames_this_model", 0) >= target_frames
                 and st.stats.get("outbox_items", 1) == 0]
        if len(ready) < len(self.agent_ids):
            return f"agents done {len(ready)}/{len(self.agent_ids)}"
        relays = self.relay_status()
        if any(r["pending"] or r["queued"] for r in relays):
            return "relays forwarding"
        return True

    def totals(self) -> dict:
        """Cumulative counters across the fleet (agents, relays, hub)."""
        states = self.agent_states()
        relays = self.relay_status()
        hub = self.hub.get("/api/v1/stats")
        a = lambda key: int(sum(states[d].stats.get(key, 0) for d in self.agent_ids if d in states))  # noqa: E731
        r = lambda key: int(sum(x["counts"][key] for x in relays))  # noqa: E731
        return {"seen": a("frames_seen"), "agent_kept": a("kept"), "relay_kept": r("kept"),
                "raw": a("raw_bytes"), "agent_to_relay": a("bytes_sent"), "relay_to_hub": r("bytes_to_hub"),
                "models_down": hub.get("model_bytes_out", 0) + r("model_bytes_out"), "hub_samples": hub["samples"]}

    # -- stop --------------------------------------------------------------------------------
    def _add(self, svc: Service) -> Service:
        self.services.append(svc)
        return svc

    def stop(self) -> dict[str, int | None]:
        if self.watcher:
            self.watcher.stop()
        codes = {}
        # Agents first, then relays, hub, broker last: the order data flows.
        for svc in reversed(self.services):
            codes[svc.name] = svc.stop()
        return codes
