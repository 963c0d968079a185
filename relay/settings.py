"""What a relay process is told at start (`edgeloop relay run`'s options, checked by the CLI)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeloop.shared.config import SamplingConfig


@dataclass(frozen=True)
class RelaySettings:
    relay_id: str
    site: str
    broker: str
    hub_url: str
    token: str
    data_dir: Path
    sampling: SamplingConfig
    host: str = "127.0.0.1"
    port: int = 0
    public_url: str | None = None  # how agents reach this relay's HTTP (default http://host:port)
    password: str | None = None  # MQTT password (username = relay id)
    ca_file: Path | None = None  # CA of the broker's certificate, for an mqtts:// broker
    flush_idle_s: float = 2.0  # close every open window after this long without a new candidate
    poll_s: float = 2.0  # how often to ask the hub for the desired model
    forward_quota: int = 500 << 20
    seen_retention_s: float = 7 * 86400.0  # how long an id is remembered for dedup (the hub dedups too)
    model_cache_bytes: int = 2 << 30
    batch_items: int = 128
    # Event time: a window remembers what it kept this long, to judge a backlog's late candidates
    # with the share the same time live would have had; a capture time further ahead of this
    # relay's clock than max_clock_ahead_s is corrected (shared/sampling/watermarks.py).
    lateness_s: float = 86400.0
    max_clock_ahead_s: float = 600.0
    max_lag_s: float = 600.0  # windows wait for a device this far behind the median one, not further
    # Relays of one site with the same share group split its candidates between them (MQTT 5 shared
    # subscription, mosquitto only); each applies its own budget. Device states reach every relay.
    share_group: str | None = None
