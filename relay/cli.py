"""`edgeloop relay ...`: thin commands over the relay service."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

import click

from edgeloop.shared import config as cfg


@click.group()
def relay() -> None:
    """The site gateway service."""


@relay.command("run")
@click.option("--id", "relay_id", required=True, help="Relay id (also its hub identity).")
@click.option("--site", required=True, help="The site whose agents this relay serves.")
@click.option("--broker", default="mqtt://127.0.0.1:1883", show_default=True,
              help="The site broker: mqtt://HOST:PORT, or mqtts://HOST:PORT for TLS (see --ca).")
@click.option("--hub", "hub_url", required=True, help="Hub base URL, e.g. http://hub.example:8080")
@click.option("--token", envvar="EDGELOOP_RELAY_TOKEN", required=True, help="Bearer token for the hub (env EDGELOOP_RELAY_TOKEN).")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True, help="Folder for the relay's database and model cache.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None, help="TOML config file.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve models and /status on.")
@click.option("--port", default=0, show_default=True, help="HTTP port (0: any free port, see --ready-file).")
@click.option("--public-url", default=None,
              help="How agents reach this relay's HTTP (default http://HOST:PORT; set it when HOST is 0.0.0.0).")
@click.option("--password", envvar="EDGELOOP_MQTT_PASSWORD", default=None,
              help="MQTT password; the username is the relay id (env EDGELOOP_MQTT_PASSWORD).")
@click.option("--ca", "ca_file", envvar="EDGELOOP_MQTT_CA", default=None,
              type=click.Path(dir_okay=False, path_type=Path),
              help="CA certificate (PEM) that signed an mqtts:// broker's (env EDGELOOP_MQTT_CA; "
                   "default: the system's CAs).")
@click.option("--ready-file", type=click.Path(path_type=Path), default=None, help="Write {port, url} here once serving.")
@click.option("--flush-idle", default=2.0, show_default=True, help="Close open selection windows after this many idle seconds.")
@click.option("--poll", default=2.0, show_default=True, help="Seconds between desired-model polls.")
@click.option("--forward-quota", default="500MB", show_default=True,
              help="Bytes the queue to the hub may hold while the hub is away; then the least valuable go "
                   "(audit and feedback last).")
@click.option("--seen-days", default=7.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Days a sample id is remembered to drop duplicates (the hub drops them too).")
@click.option("--lateness", "lateness_s", default=86400.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds a closed selection window remembers what it kept: a backlog that arrives within "
                   "them is budgeted with the share its capture time would have had live.")
@click.option("--max-clock-ahead", "max_clock_ahead_s", default=600.0, show_default=True,
              type=click.FloatRange(min=0),
              help="Capture times further ahead of this relay's clock are corrected to the site's "
                   "(reason clock:corrected); a device's wrong clock cannot close windows for the others.")
@click.option("--max-lag", "max_lag_s", default=600.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds of capture time a device may fall behind the site's median one and still hold "
                   "windows open for its candidates; further behind, they are judged late.")
@click.option("--share-group", default=None,
              help="Share the site with the other relays of this group: each candidate goes to one of them "
                   "(MQTT 5 shared subscription; needs mosquitto, not the embedded broker).")
def run(relay_id, site, broker, hub_url, token, data_dir, config_path, host, port, public_url, password, ca_file,
        ready_file, flush_idle, poll, forward_quota, seen_days, lateness_s, max_clock_ahead_s, max_lag_s,
        share_group):
    """Aggregate a site's agents, keep the best under the budget, forward them to the hub.

    \b
    Example:
      edgeloop relay run --id relay-0 --site site-0 --hub http://127.0.0.1:8080 --token $TOKEN --data /var/lib/edgeloop/relay
      edgeloop relay run --id relay-0b --site site-0 --share-group site-0 ...   # a second relay for the same site
    """
    from .process import serve
    from .settings import RelaySettings

    if share_group is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", share_group):
        raise click.BadParameter("letters, digits, '_', '.', '-' only (it is part of an MQTT topic filter)",
                                 param_hint="--share-group")
    conf = cfg.load(config_path)
    s = RelaySettings(relay_id=relay_id, site=site, broker=broker, hub_url=hub_url.rstrip("/"), token=token,
                      data_dir=data_dir, sampling=conf.sampling, host=host, port=port, flush_idle_s=flush_idle,
                      poll_s=poll, public_url=public_url, password=password, ca_file=ca_file,
                      share_group=share_group, forward_quota=cfg.parse_size(forward_quota, "--forward-quota"),
                      seen_retention_s=seen_days * 86400, lateness_s=lateness_s,
                      max_clock_ahead_s=max_clock_ahead_s, max_lag_s=max_lag_s)

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(s, ready_file, stop)

    asyncio.run(main())


@relay.command("dead-letters")
@click.option("--data", "data_dir", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="The relay's folder (as given to `relay run --data`).")
@click.option("--replay", is_flag=True, help="Put them all back on the forward queue (once the hub takes them).")
def dead_letters(data_dir, replay):
    """List the samples the hub itself refused (kept here, not dropped), or replay them.

    Only the hub's own typed refusal puts a sample here (e.g. an image that does not decode); a
    proxy's error page or a wrong --hub path never does: those batches stay queued and are retried.

    \b
    Example:
      edgeloop relay dead-letters --data /var/lib/edgeloop/relay
      edgeloop relay dead-letters --data /var/lib/edgeloop/relay --replay
    """
    from .settings import RelaySettings
    from .store import RelayStore

    path = data_dir / "relay.sqlite"
    if not path.exists():
        raise click.UsageError(f"no relay database at {path}")
    store = RelayStore(path, RelaySettings.forward_quota)
    try:
        if replay:
            click.echo(f"replayed {store.replay()} dead letter(s) onto the forward queue")
            return
        rows = store.dead_letters()
        for r in rows:
            click.echo(f"{r['sample_id']}  {r['device_id']}  {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(r['at']))}Z"
                       f"  {r['reason']}")
        click.echo(f"{len(rows)} dead letter(s)")
    finally:
        store.close()
