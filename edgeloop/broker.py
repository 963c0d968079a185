"""The embedded MQTT broker (amqtt, in-process): the zero-set-up default for one box.

It speaks MQTT 3.1.1 only and has no ACLs; production sites run mosquitto with deploy/'s config.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
from pathlib import Path

import click

log = logging.getLogger("edgeloop.broker")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


async def run_broker(host: str, port: int, ready_file: Path | None, stop: asyncio.Event) -> None:
    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    if ready_file:
        ready_file.write_text(json.dumps({"port": port, "url": f"mqtt://{host}:{port}"}))
    log.info("embedded broker listening on mqtt://%s:%d", host, port)
    await stop.wait()
    await broker.shutdown()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=1883, show_default=True, help="0: pick a free port (see --ready-file).")
@click.option("--ready-file", type=click.Path(path_type=Path), default=None, help="Write {port, url} here once listening.")
def broker(host, port, ready_file) -> None:
    """Run the embedded MQTT broker (amqtt). For tests and production use mosquitto.

    \b
    Example:
      edgeloop broker --port 1883
    """
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)
    port = port or free_port(host)

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_broker(host, port, ready_file, stop)

    asyncio.run(main())
