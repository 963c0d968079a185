"""What a relay shows to the site's network: it listens beyond loopback (its agents fetch models from
it), so /status answers another machine only with the relay's token, and a model only to whoever
names its sha256 (which only the site's devices read, in their desired messages). A real relay
process bound to every interface, called through this machine's non-loopback address."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from edgeloop.broker import free_port
from edgeloop.onebox import sampling_toml

from relaysite import relay_site

pytestmark = pytest.mark.e2e
TOKEN = "relay-secret"


def outward_address() -> str:
    """This machine's address on its default route (no packet is sent: a UDP socket only picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere real
        return s.getsockname()[0]


def status(url: str, token: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_status_needs_the_token_from_another_machine_and_models_need_their_sha256(tmp_path):
    address = outward_address()
    assert not address.startswith("127."), "this test needs an address that is not loopback"
    http_port = free_port()
    with relay_site(tmp_path, sampling_toml(None, {"least_confidence": 1.0}, 0), "--host", "0.0.0.0", "--port",
                    str(http_port), token=TOKEN):
        outside = f"http://{address}:{http_port}"
        assert status(f"{outside}/status") == 401
        assert status(f"{outside}/status", "wrong") == 401
        assert status(f"{outside}/status", TOKEN) == 200
        assert status(f"http://127.0.0.1:{http_port}/status") == 200  # on the gateway itself, as before
        # A model by version alone is not served (its URL carries its sha256 now).
        assert status(f"{outside}/models/v0") == 404
