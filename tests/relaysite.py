"""A site for the relay's end-to-end tests: a real mosquitto on a free port and a real `edgeloop relay
run` on it, its hub a free port nobody answers on unless the test names one.

    with relay_site(tmp_path, sampling_toml(...), "--flush-idle", "0.3") as (url, broker_port):
        ...
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from edgeloop.broker import free_port
from edgeloop.procs import Service, mosquitto_service, wait_port

SITE = "site-0"


@contextlib.contextmanager
def relay_site(tmp_path: Path, sampling: str, *args: str, token: str = "t", site: str = SITE):
    """-> (the relay's URL, the broker's port); both stopped on the way out. `args` go to `relay run`."""
    logs, port = tmp_path / "logs", free_port()
    broker = mosquitto_service(port, tmp_path / "mosquitto", logs).start()
    relay = None
    try:
        wait_port(port)
        conf = tmp_path / "relay.toml"
        conf.write_text(sampling)
        relay = Service.edgeloop("relay", [
            "relay", "run", "--id", "relay-0", "--site", site, "--broker", f"mqtt://127.0.0.1:{port}",
            "--hub", f"http://127.0.0.1:{free_port()}", "--token", token, "--data", str(tmp_path / "relay"),
            "--config", str(conf), *args], logs, ready=True).start()
        yield relay.wait_ready(timeout=60)["url"], port
    finally:
        if relay is not None:
            relay.stop()
        broker.stop()
