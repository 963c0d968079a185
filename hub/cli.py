"""`edgeloop hub ...` and `edgeloop rollout ...`: thin commands over the hub library and its API."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from edgeloop.shared.hubclient import HubClient

log = logging.getLogger("edgeloop.hub")


@click.group()
def hub() -> None:
    """The cloud hub: ingest, selection for labeling, training, registry, desired model."""


@hub.command("serve")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True, help="Hub data folder (database, blobs).")
@click.option("--golden", type=click.Path(exists=True, path_type=Path), required=True,
              help="Held-out golden set (.npz: images, labels, slices) every model is evaluated on.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, help="0: any free port (see --ready-file).")
@click.option("--token", "tokens", multiple=True, envvar="EDGELOOP_HUB_TOKENS",
              help="Accepted bearer token; repeat for several (env EDGELOOP_HUB_TOKENS, space-separated).")
@click.option("--ready-file", type=click.Path(path_type=Path), default=None, help="Write {port, url} here once serving.")
@click.option("--key", "key_path", type=click.Path(path_type=Path), default=None,
              help="Private key models are signed with (default DATA/keys/hub.key, created if missing).")
def serve(data_dir, golden, host, port, tokens, ready_file, key_path) -> None:
    """Serve the hub's API.

    \b
    Example:
      edgeloop hub serve --data /var/lib/edgeloop/hub --golden golden.npz --port 8080 --token $TOKEN
    """
    import asyncio
    import signal

    from aiohttp import web

    from .api import make_app
    from .golden import load_set
    from .store import HubStore

    tokens = [t for tok in tokens for t in tok.split()]
    if not tokens:
        log.warning("no --token given: the API is open to anyone who can reach it")
    from .keys import default_key_path, load_or_create

    key = load_or_create(key_path or default_key_path(data_dir))
    app = make_app(HubStore(data_dir), load_set(golden), tokens, key)

    async def main():
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]
        if ready_file:
            ready_file.write_text(json.dumps({"port": bound, "url": f"http://{host}:{bound}"}))
        log.info("hub serving on http://%s:%d", host, bound)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("hub stopping")
        await runner.cleanup()

    asyncio.run(main())


@hub.command("seed")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True, help="Hub data folder.")
@click.option("--dataset", type=click.Path(exists=True, path_type=Path), required=True,
              help="Labeled seed set (.npz: images, labels, slices).")
@click.option("--golden", type=click.Path(exists=True, path_type=Path), required=True, help="Golden set (.npz).")
@click.option("--epochs", default=15, show_default=True)
@click.option("--key", "key_path", type=click.Path(path_type=Path), default=None,
              help="Private key models are signed with (default DATA/keys/hub.key, created if missing).")
def seed(data_dir, dataset, golden, epochs, key_path) -> None:
    """Import a labeled seed set, train the round-0 model from scratch and make it the fleet's desired model.

    \b
    Example:
      edgeloop hub seed --data /var/lib/edgeloop/hub --dataset seed.npz --golden golden.npz
    """
    from .golden import load_set
    from .keys import default_key_path, load_or_create
    from .store import HubStore
    from .trainer import import_labeled_set, train_round

    key = load_or_create(key_path or default_key_path(data_dir))
    store = HubStore(data_dir)
    n = import_labeled_set(store, load_set(dataset))
    result = train_round(store, load_set(golden), key, epochs=epochs, from_scratch=True)
    store.set_desired(result["version"])
    click.echo(f"seeded {n} labels; model {result['version']} accuracy {result['metrics']['accuracy']:.3f} "
               f"per slice {json.dumps(result['metrics']['per_slice'])}")


@click.group()
def rollout() -> None:
    """Roll a model version out to the fleet."""


@rollout.command("start")
@click.option("--hub", "hub_url", default="http://127.0.0.1:8080", show_default=True)
@click.option("--token", envvar="EDGELOOP_TOKEN", default=None, help="Bearer token (env EDGELOOP_TOKEN).")
@click.option("--model", "version", required=True, help="Registered model version, e.g. v3.")
def start(hub_url, token, version) -> None:
    """Make VERSION the fleet's desired model; relays fetch it once and set it on their agents.

    \b
    Example:
      edgeloop rollout start --hub http://hub:8080 --model v3
    """
    HubClient(hub_url, token).post("/api/v1/desired", {"version": version})
    click.echo(f"desired model is now {version}")


@rollout.command("status")
@click.option("--hub", "hub_url", default="http://127.0.0.1:8080", show_default=True)
@click.option("--token", envvar="EDGELOOP_TOKEN", default=None)
def status(hub_url, token) -> None:
    """Show the registry and the desired model.

    \b
    Example:
      edgeloop rollout status --hub http://hub:8080
    """
    reply = HubClient(hub_url, token).get("/api/v1/models")
    for m in reply["models"]:
        mark = "*" if m["version"] == reply["desired"] else " "
        click.echo(f"{mark} {m['version']:6} parent={m['parent'] or '-':6} accuracy={m['metrics'].get('accuracy', 0):.3f}")
    sys.stdout.flush()
