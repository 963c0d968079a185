"""The agent's small HTTP API on loopback (standard library only: devices carry no web framework).

    POST /feedback   {"sample_id": "...", "verdict": "wrong"}  -> 202 {"sample_id", "reason"}
    GET  /recent     the frames still held for feedback (id, capture time, prediction)
    GET  /metrics    Prometheus text format
    GET  /state      the figures of the retained state message, as JSON

It answers only what a local application can ask: a Host header naming this machine (a DNS-rebound
name, `Host: evil.example`, gets 421), no cross-site browser writes (an `Origin` that is not this
machine, or `Sec-Fetch-Site: cross-site`, gets 403), a body no larger than MAX_FEEDBACK_BYTES with a
valid Content-Length (411 / 400 / 413), sockets idle past TIMEOUT_S closed, and at most MAX_THREADS
connections served at once (the next ones get 503 and are closed), so a flood of idle sockets cannot
grow the device's threads or memory.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from edgeloop.shared.errors import ProtocolError

from .feedback import MAX_FEEDBACK_BYTES, Feedback, FrameGone

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0  # a connection that sends nothing for this long is closed
MAX_THREADS = 16  # connections served at once
_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_threads` at once; past that a connection gets 503."""

    daemon_threads = True
    request_queue_size = 64  # the listen backlog: a burst is turned away with 503, not left waiting in SYNs

    def __init__(self, address, handler, max_threads: int):
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(max_threads)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def _host_name(value: str) -> str:
    """"127.0.0.1:8780" -> "127.0.0.1", "[::1]:8780" -> "[::1]", "Example.com." -> "example.com"."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[:value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0].rstrip(".") if value.count(":") <= 1 else value


def prometheus_text(device_id: str, model_version: str | None, stats: dict) -> str:
    """Numeric stats as gauges/counters named edgeloop_agent_<stat>, labelled by device."""
    labels = f'device="{device_id}"'
    lines = [f'edgeloop_agent_info{{{labels},model_version="{model_version or ""}"}} 1']
    for name, value in sorted(stats.items()):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        metric = f"edgeloop_agent_{name}"
        lines.append(f"# TYPE {metric} gauge")
        lines.append(f"{metric}{{{labels}}} {value}")
    return "\n".join(lines) + "\n"


class LocalApi:
    """Serves an Agent (anything with feedback(Feedback) -> dict, recent, stats(), device_id, model_version)."""

    def __init__(self, agent, host: str = "127.0.0.1", port: int = 0, max_threads: int = MAX_THREADS,
                 timeout_s: float = TIMEOUT_S):
        self.agent, self.timeout_s = agent, timeout_s
        # The names a local client may use: loopback, and the address it was bound to.
        self.names = _LOCAL_NAMES | {_host_name(host), f"[{host.lower()}]"}
        self.server = _BoundedServer((host, port), self._handler(), max_threads)
        self.thread = threading.Thread(target=self.server.serve_forever, name="local-api", daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> "LocalApi":
        self.thread.start()
        log.info("local API on http://%s:%d (feedback, recent, metrics)", *self.server.server_address[:2])
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        agent, names, timeout_s = self.agent, self.names, self.timeout_s

        class Handler(BaseHTTPRequestHandler):
            timeout = timeout_s  # applied to the socket: an idle or slow client is cut off

            def log_message(self, fmt, *args):  # route through logging, quietly
                log.debug("%s " + fmt, self.address_string(), *args)

            def _refused(self, write: bool) -> bool:
                """Answer and -> True when this request does not come from a local application."""
                host = self.headers.get("Host")
                if host is None or _host_name(host) not in names:
                    self._send(421, {"error": f"Host {host!r:.100}: this API answers only to this machine's "
                                              "names (e.g. 127.0.0.1)"})
                    return True
                origin = self.headers.get("Origin")
                cross = self.headers.get("Sec-Fetch-Site", "").lower() == "cross-site"
                if write and (cross or (origin is not None and
                                        _host_name(origin.split("://", 1)[-1]) not in names)):
                    self._send(403, {"error": f"a cross-site request (Origin {origin!r:.100}) may not write here"})
                    return True
                return False

            def _send(self, code: int, body: str | dict | list, ctype: str = "application/json") -> None:
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self._refused(write=False):
                    return
                if self.path == "/metrics":
                    self._send(200, prometheus_text(agent.device_id, agent.model_version, agent.stats()),
                               "text/plain; version=0.0.4")
                elif self.path == "/recent":
                    self._send(200, agent.recent.listing())
                elif self.path == "/state":
                    self._send(200, agent.stats())
                else:
                    self._send(404, {"error": f"no such path {self.path}; try /feedback, /recent, /metrics, /state"})

            def do_POST(self):
                if self._refused(write=True):
                    return
                if self.path != "/feedback":
                    self._send(404, {"error": f"no such path {self.path}; POST /feedback"})
                    return
                length = self.headers.get("Content-Length")
                if length is None:
                    self._send(411, {"error": "feedback: a Content-Length is required"})
                    return
                # Digits only: int() would take "-1" (read everything) or " +5_0".
                if not length.isascii() or not length.isdigit():
                    self._send(400, {"error": f"feedback: Content-Length {length!r:.40} is not a byte count"})
                    return
                n = int(length)
                if n > MAX_FEEDBACK_BYTES:
                    self._send(413, {"error": f"feedback: {n} bytes exceeds the limit of {MAX_FEEDBACK_BYTES}"})
                    return
                try:
                    result = agent.feedback(Feedback.parse(self.rfile.read(n)))
                except ProtocolError as exc:
                    self._send(400, {"error": str(exc)})
                except FrameGone as exc:
                    self._send(404, {"error": str(exc), "hint": exc.hint})
                else:
                    self._send(202, result)

        return Handler
