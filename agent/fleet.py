"""Fleet mode: many devices in one process, each a real agent (for simulated fleets and load tests).

Every device is the real `Agent` — its own MQTT connection, last will, outbox file, model store,
OTA worker and state reports — on its own camera (`--source-pattern`, by default a simulated one
through the `sim` source plug-in) at a low frame rate. Only the process is shared, so a few hundred
devices fit in a handful of processes:

    edgeloop fleet --agents 50 --first 0 --site site-0 --broker mqtt://127.0.0.1:1883 \\
        --pubkey hub.pub --data runs/fleet

SIGTERM stops every device at once (what is queued stays in its outbox for the next start);
SIGUSR1 ends the cameras instead: each device sends what it has queued, and the process exits once
every outbox is empty (how `edgeloop bench chaos` settles a fleet before it counts).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path

import click

log = logging.getLogger("edgeloop.agent.fleet")


def device_id(i: int) -> str:
    return f"dev-{i:04d}"


class Fleet:
    def __init__(self, agents: list):
        self.agents = agents
        self.threads = [threading.Thread(target=a.run, name=a.s.device_id, daemon=True) for a in agents]

    def start(self) -> "Fleet":
        for t in self.threads:
            t.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        for a in self.agents:
            a.stop()
        for t in self.threads:
            t.join(timeout)

    def drain(self) -> None:
        """End every camera: each agent then sends what it queued and returns, as after a finite source."""
        for a in self.agents:
            a.pipeline.stop()

    def wait(self, stop: threading.Event) -> None:
        while not stop.wait(1.0):
            if not any(t.is_alive() for t in self.threads):
                return


def build(n: int, first: int, site: str, broker: str, pubkey, data: Path, sampling, max_fps: float,
          sim_seed: int, state_interval: float, password: str | None = None, quota: int = 4 << 20,
          journal: bool = False, source_pattern: str = "sim:cam-{i:04d}") -> Fleet:
    from .daemon import Agent, AgentSettings

    agents = []
    for i in range(first, first + n):
        dev = device_id(i)
        agents.append(Agent(AgentSettings(
            device_id=dev, site=site, broker=broker, source=source_pattern.format(i=i), data_dir=data / dev,
            sampling=sampling, sim_seed=sim_seed, outbox_quota=quota, outbox_journal=journal, max_fps=max_fps,
            state_interval=state_interval, public_key=pubkey, password=password,
            recent_frames=0)))  # no application feedback in a simulated fleet: no frame ring
    return Fleet(agents)


@click.command()
@click.option("--agents", "n", default=50, show_default=True, help="Devices in this process.")
@click.option("--first", default=0, show_default=True, help="Index of the first device (ids dev-0000 ...).")
@click.option("--site", required=True, help="Site of every device in this process.")
@click.option("--broker", default="mqtt://127.0.0.1:1883", show_default=True)
@click.option("--pubkey", "pubkey_path", type=click.Path(exists=True, path_type=Path), required=True,
              help="The hub's public key: every device verifies models with it.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True, help="One folder per device here.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None, help="TOML config of the agents.")
@click.option("--max-fps", default=2.0, show_default=True, help="Frames a second per device.")
@click.option("--sim-seed", default=0, show_default=True, help="Seed of the simulated world (sim and scenes sources).")
@click.option("--source-pattern", default="sim:cam-{i:04d}", show_default=True,
              help="Each device's --source, with {i} its index (e.g. 'scenes:cam-{i:03d}?fps=5').")
@click.option("--state-interval", default=2.0, show_default=True, help="Seconds between each device's state reports.")
@click.option("--quota", default="4MB", show_default=True, help="Outbox byte quota of each device (its disk).")
@click.option("--outbox-journal", is_flag=True,
              help="Every device keeps each committed and evicted sample id in its outbox file (audits).")
@click.option("--ready-file", type=click.Path(path_type=Path), default=None, help="Written once every device runs.")
def fleet(n, first, site, broker, pubkey_path, data_dir, config_path, max_fps, sim_seed, source_pattern, state_interval,
          quota, outbox_journal, ready_file) -> None:
    """Run many devices in one process (fleet mode), each a real agent with its own camera.

    SIGTERM stops the devices; SIGUSR1 ends their cameras, lets each send what it queued, then exits.

    \b
    Example (200 devices in 4 processes, one per site):
      for s in 0 1 2 3; do
        edgeloop fleet --agents 50 --first $((s*50)) --site site-$s --pubkey hub.pub --data runs/fleet &
      done
    """
    from edgeloop.shared import config as cfg
    from edgeloop.shared.signing import load_public_key

    from .memory import hold_mmap_threshold

    hold_mmap_threshold()  # as `agent run` does: freed frames go back to the system
    pubkey = load_public_key(pubkey_path.read_bytes())
    fl = build(n, first, site, broker, pubkey, data_dir, cfg.load(config_path).sampling, max_fps, sim_seed,
               state_interval, quota=cfg.parse_size(quota, "--quota"), journal=outbox_journal,
               source_pattern=source_pattern)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: fl.drain())
    fl.start()
    log.info("fleet: %d devices on site %s (%s .. %s)", n, site, device_id(first), device_id(first + n - 1))
    if ready_file:
        ready_file.write_text(json.dumps({"devices": [a.s.device_id for a in fl.agents]}))
    fl.wait(stop)
    log.info("fleet: stopping %d devices", n)
    fl.stop()
