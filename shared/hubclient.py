"""A small JSON client for the hub's API, for command-line tools, the oracle and the demo."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from .errors import PeerUnavailable, ProtocolError


class HubClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 600):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict | None = None) -> Any:
        """-> the decoded JSON reply (None for an empty one). 4xx: ProtocolError; unreachable or 5xx: PeerUnavailable."""
        req = urllib.request.Request(
            f"{self.url}{path}", method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json",
                     **({"Authorization": f"Bearer {self.token}"} if self.token else {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = resp.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")[:500]
            cls = ProtocolError if 400 <= exc.code < 500 else PeerUnavailable
            raise cls(f"hub answered {exc.code} to {method} {path}: {text}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise PeerUnavailable(f"hub {self.url} unreachable: {exc}") from exc
        return json.loads(data) if data else None

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: dict | None = None) -> Any:
        return self.call("POST", path, body or {})
