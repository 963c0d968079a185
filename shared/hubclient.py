"""A small JSON client for the hub's API, for command-line tools, the oracle and the demo."""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.error
import urllib.request
from typing import Any

from .errors import ConfigError, PeerUnavailable, ProtocolError


def hub_ssl_context(ca_file: str | os.PathLike | None = None) -> ssl.SSLContext | None:
    """For an https:// hub with a private CA: trust ca_file (or $EDGELOOP_HUB_CA); None: the system's CAs."""
    ca_file = ca_file or os.environ.get("EDGELOOP_HUB_CA")
    if not ca_file:
        return None
    if not os.path.isfile(ca_file):
        raise ConfigError(f"hub CA file {ca_file} does not exist")
    return ssl.create_default_context(cafile=str(ca_file))


class HubClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 600,
                 ca_file: str | os.PathLike | None = None):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.ssl = hub_ssl_context(ca_file)

    def call(self, method: str, path: str, body: dict | None = None) -> Any:
        """-> the decoded JSON reply (None for an empty one). 4xx: ProtocolError; unreachable or 5xx: PeerUnavailable."""
        req = urllib.request.Request(
            f"{self.url}{path}", method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json",
                     **({"Authorization": f"Bearer {self.token}"} if self.token else {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ssl) as resp:
                data = resp.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")[:500]
            cls = ProtocolError if 400 <= exc.code < 500 else PeerUnavailable
            raise cls(f"hub answered {exc.code} to {method} {path}: {text}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise PeerUnavailable(f"hub {self.url} unreachable: {exc}") from exc
        return json.loads(data) if data else None

    def get_bytes(self, path: str) -> bytes:
        """GET raw bytes (a model artifact, an image)."""
        req = urllib.request.Request(f"{self.url}{path}", headers=self._headers())
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ssl) as resp:
                return resp.read()
        except (urllib.error.URLError, OSError) as exc:
            raise PeerUnavailable(f"hub {self.url}: GET {path} failed: {exc}") from exc

    def post_bytes(self, path: str, body: bytes, content_type: str = "application/msgpack") -> Any:
        """POST raw bytes (a msgpack sample batch) -> the JSON reply."""
        req = urllib.request.Request(f"{self.url}{path}", data=body, method="POST",
                                     headers={**self._headers(), "Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ssl) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise ProtocolError(f"hub answered {exc.code} to POST {path}: {exc.read()[:300]!r}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise PeerUnavailable(f"hub {self.url}: POST {path} failed: {exc}") from exc

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: dict | None = None) -> Any:
        return self.call("POST", path, body or {})

    def train(self, settings: dict | None = None, timeout: float = 3600.0, poll_s: float = 0.5) -> dict:
        """Queue a training job and wait for its end -> its result ({"version", "promoted", "gate",
        "metrics", ...}); ProtocolError when it failed or was cancelled, naming why."""
        job = self.post("/api/v1/train", settings)
        deadline = time.monotonic() + timeout
        while job["state"] not in ("succeeded", "failed", "cancelled"):
            if time.monotonic() > deadline:
                raise PeerUnavailable(f"training job {job['job_id']} still {job['state']} after {timeout:.0f} s")
            time.sleep(poll_s)
            job = self.get(f"/api/v1/jobs/{job['job_id']}")
        if job["state"] != "succeeded":
            raise ProtocolError(f"training job {job['job_id']} {job['state']}: {job.get('error')}")
        return job["result"]
