"""Only the hub's own typed refusal may drop a sample at the relay, and then into its dead letters.

A reverse proxy of our own stands between a real relay and a real hub and answers 404, 405 and 413
as HTML pages, then the hub's own JSON 404 of a wrong path prefix, before it lets requests through:
the relay keeps its queue through all of it and delivers every candidate once the path is right. A
candidate whose image does not decode is refused by the hub alone (the rest of its batch is stored)
and waits in the relay's dead letters, where `edgeloop relay dead-letters` shows it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import aiohttp
import pytest
from aiohttp import web

from edgeloop.broker import free_port
from edgeloop.onebox import sampling_toml
from edgeloop.procs import Service, mosquitto_service, wait_port
from edgeloop.shared import topics
from edgeloop.shared.mqtt import Connection
from edgeloop.shared.protocol import DeviceState, SampleBatch, encode

from factories import make_candidate, start_hub
from test_hub_api import TOKEN, call
from test_relay_share import get, wait

pytestmark = pytest.mark.e2e
SITE, DEVICE = "site-0", "dev-0"
HTML = {"404": (404, "<html><body><h1>404 Not Found</h1>nginx</body></html>"),
        "405": (405, "<html><body><h1>405 Not Allowed</h1>nginx</body></html>"),
        "413": (413, "<html><body><h1>413 Request Entity Too Large</h1>nginx</body></html>")}


class Proxy:
    """A reverse proxy on loopback, in a thread of the test: `mode` says what it answers; `seen`
    counts the sample batches it was sent in each mode."""

    def __init__(self, upstream: str):
        self.upstream, self.mode, self.seen = upstream, "404", {}
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)

    async def _start(self):
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._session = aiohttp.ClientSession()
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _handle(self, request: web.Request) -> web.Response:
        mode = self.mode
        if request.path == "/api/v1/samples":  # the relay's model poller comes through here too
            self.seen[mode] = self.seen.get(mode, 0) + 1
        if mode in HTML:
            status, page = HTML[mode]
            await request.read()
            return web.Response(status=status, text=page, content_type="text/html")
        prefix = "/wrong-prefix" if mode == "hub-404" else ""  # the hub's own 404, as JSON
        async with self._session.request(request.method, f"{self.upstream}{prefix}{request.path_qs}",
                                         data=await request.read(), headers={
                                             k: v for k, v in request.headers.items() if k.lower() != "host"}) as up:
            return web.Response(status=up.status, body=await up.read(),
                                headers={"Content-Type": up.headers.get("Content-Type", "application/octet-stream")})

    def stop(self):
        async def down():
            await self._runner.cleanup()
            await self._session.close()
        asyncio.run_coroutine_threadsafe(down(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture
def site(tmp_path):
    """mosquitto, a hub, and a fake device that publishes batches -> (publish, hub_url, services)."""
    logs = tmp_path / "logs"
    port = free_port()
    services = [mosquitto_service(port, tmp_path / "mosquitto", logs).start()]
    wait_port(port)
    hub, hub_url = start_hub(tmp_path, data=tmp_path / "hub")
    services.append(hub)
    dev = Connection(f"mqtt://127.0.0.1:{port}", client_id="fake-device").start()
    assert dev.wait_connected(20)

    def publish(cands):
        dev.publish(topics.samples(SITE, DEVICE), encode(SampleBatch(source=DEVICE, site=SITE, samples=tuple(cands))),
                    qos=1).wait_for_publish(10)

    def relay(hub: str, name: str = "relay-0") -> tuple[Service, str]:
        conf = tmp_path / "relay.toml"
        conf.write_text(sampling_toml(None, {"least_confidence": 1.0}, 0))  # no budget: forward everything
        svc = Service.edgeloop(name, ["relay", "run", "--id", "relay-0", "--site", SITE, "--broker",
                                      f"mqtt://127.0.0.1:{port}", "--hub", hub, "--token", TOKEN, "--data",
                                      str(tmp_path / "relay"), "--config", str(conf), "--flush-idle", "0.5",
                                      "--poll", "1"], logs, ready=True).start()
        services.append(svc)
        url = svc.wait_ready(timeout=60)["url"]
        # A retained state the relay reports back: its subscriptions are live, so no batch is published to no one.
        dev.publish(topics.state(SITE, DEVICE), encode(DeviceState(DEVICE, "online", None, ts=time.time())), retain=True)
        wait("the relay to see the device", lambda: DEVICE in get(url + "/status")["devices"], 30)
        return svc, url

    yield {"publish": publish, "hub": hub_url, "relay": relay, "data": tmp_path / "relay",
           "hub_data": tmp_path / "hub"}
    dev.stop()
    for svc in reversed(services):
        svc.stop()


def dead_letters(data, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeloop", "relay", "dead-letters", "--data", str(data), *args],
                          capture_output=True, text=True, timeout=60)


def stored(hub_url) -> int:
    return call(hub_url, "GET", "/api/v1/stats")[1]["samples"]


def test_a_proxys_error_pages_and_a_wrong_path_lose_nothing(site):
    proxy = Proxy(site["hub"])
    try:
        _, relay_url = site["relay"](f"http://127.0.0.1:{proxy.port}")
        cands = [make_candidate(device_id=DEVICE, camera_id=DEVICE) for _ in range(12)]
        site["publish"](cands[:6])
        site["publish"](cands[6:])
        # The proxy answers 404 from the start: the relay queues both batches and keeps them.
        wait("both batches in the forward queue", lambda: get(relay_url + "/status")["queued"] == len(cands), 30)
        for mode in ("404", "405", "413", "hub-404"):
            proxy.mode = mode
            before = proxy.seen.get(mode, 0)
            hits = 2 if mode == "413" else 1  # a 413 is met at least twice: the batch, then half of it
            wait(f"the relay to meet the proxy's {mode}", lambda: proxy.seen.get(mode, 0) >= before + hits, 60)
            counts = get(relay_url + "/status")["counts"]
            assert counts["forwarded"] == 0 and counts["refused_by_hub"] == 0, (mode, counts)
            assert get(relay_url + "/status")["queued"] == len(cands), mode  # nothing left the queue
        assert stored(site["hub"]) == 0
        proxy.mode = "pass"
        wait("every candidate at the hub", lambda: stored(site["hub"]) >= len(cands), 90)
        counts = get(relay_url + "/status")["counts"]
        assert counts["forwarded"] == len(cands) and counts["refused_by_hub"] == 0 and counts["hub_retries"] >= 3
        assert proxy.seen["413"] >= 2  # an untyped 413 made the batches smaller
        listed = dead_letters(site["data"])
        assert listed.returncode == 0 and listed.stdout.strip().endswith("0 dead letter(s)"), listed
    finally:
        proxy.stop()


def test_the_hubs_own_refusal_of_one_sample_puts_it_in_the_dead_letters_and_the_rest_is_stored(site):
    _, relay_url = site["relay"](site["hub"])
    good = [make_candidate(device_id=DEVICE, camera_id=DEVICE) for _ in range(5)]
    bad = make_candidate(device_id=DEVICE, camera_id=DEVICE, image=b"\xff\xd8 not really a jpeg \xff\xd9")
    site["publish"]([*good[:3], bad, *good[3:]])
    wait("the good ones at the hub", lambda: stored(site["hub"]) >= len(good), 60)
    wait("the bad one among the dead letters", lambda: get(relay_url + "/status")["counts"]["refused_by_hub"] == 1, 30)
    status = get(relay_url + "/status")
    assert status["counts"]["forwarded"] == len(good) and status["queued"] == 0
    time.sleep(1)
    assert stored(site["hub"]) == len(good)  # the hub never stored what it refused
    listed = dead_letters(site["data"])
    assert listed.returncode == 0, listed.stderr
    assert bad.sample_id in listed.stdout and "image:" in listed.stdout and "not a JPEG or PNG image" in listed.stdout
    assert listed.stdout.strip().endswith("1 dead letter(s)")
    # Replayed, it goes to the hub again, which refuses it again: back in the dead letters, never lost.
    replay = dead_letters(site["data"], "--replay")
    assert replay.returncode == 0 and "replayed 1" in replay.stdout, replay
    wait("the replayed sample refused again", lambda: get(relay_url + "/status")["counts"]["refused_by_hub"] == 2, 30)
    assert dead_letters(site["data"]).stdout.strip().endswith("1 dead letter(s)")
