"""The agent's small HTTP API on loopback (standard library only: devices carry no web framework).

    POST /feedback   {"sample_id": "...", "verdict": "wrong"}  -> 202 {"sample_id", "reason"}
    GET  /recent     the frames still held for feedback (id, capture time, prediction)
    GET  /metrics    Prometheus text format
    GET  /state      the figures of the retained state message, as JSON
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from edgeloop.shared.errors import ProtocolError

from .feedback import MAX_FEEDBACK_BYTES, Feedback, FrameGone

log = logging.getLogger(__name__)


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

    def __init__(self, agent, host: str = "127.0.0.1", port: int = 0):
        self.agent = agent
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
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
        agent = self.agent

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):  # route through logging, quietly
                log.debug("%s " + fmt, self.address_string(), *args)

            def _send(self, code: int, body: str | dict | list, ctype: str = "application/json") -> None:
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
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
                if self.path != "/feedback":
                    self._send(404, {"error": f"no such path {self.path}; POST /feedback"})
                    return
                n = int(self.headers.get("Content-Length") or 0)
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
