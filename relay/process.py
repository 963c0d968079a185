"""The relay as a process: its HTTP app (models for its agents, /status), its MQTT connection and
its background loops, started together and stopped in order (`edgeloop relay run`)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import aiohttp
from aiohttp import web

from edgeloop.shared.hubclient import hub_ssl_context

from .service import Relay
from .settings import RelaySettings

log = logging.getLogger("edgeloop.relay")


async def serve(s: RelaySettings, ready_file: Path | None, stop: asyncio.Event) -> None:
    relay = Relay(s)
    app = web.Application()
    app.router.add_get("/models/{version}/{sha256}", relay.serve_model)
    app.router.add_get("/status", relay.status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, s.host, s.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    relay.url = s.public_url or f"http://{s.host}:{port}"
    relay.inbox.start()
    relay.conn.start()
    # An https:// hub with a private CA: EDGELOOP_HUB_CA names it (hub_ssl_context); None: the system's CAs.
    connector = aiohttp.TCPConnector(ssl=hub_ssl_context() or True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), connector=connector) as http:
        tasks = [asyncio.create_task(_forever(name, loop)) for name, loop in (
            ("windows", relay.windows), ("forwarder", lambda: relay.to_hub.run(http)),
            ("storage retry", relay.storage_retry), ("housekeeping", relay.housekeeping),
            ("model poller", lambda: relay.model_poller(http)))]
        if ready_file:
            ready_file.write_text(json.dumps({"port": port, "url": relay.url}))
        log.info("relay %s for site %s serving on %s", s.relay_id, s.site, relay.url)
        await stop.wait()
        log.info("relay %s stopping", s.relay_id)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    relay.conn.stop()
    relay.inbox.stop()
    await runner.cleanup()
    with relay._lock:
        relay.store.close()


async def _forever(name: str, loop) -> None:
    """Run a background loop; a bug in one pass is logged and the loop restarts after a pause."""
    while True:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - keep the relay serving; the log says what broke
            log.exception("%s failed; restarting it in 2s", name)
            await asyncio.sleep(2)
