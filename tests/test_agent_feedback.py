"""Application feedback: the request format, the bounded ring of recent frames, the local HTTP API."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.agent.feedback import Feedback, FrameGone, RecentFrames
from edgeloop.agent.localapi import LocalApi, prometheus_text
from edgeloop.agent.sources import SourceFrame
from edgeloop.shared.errors import ProtocolError


def frame(i: int, t: float, side: int = 8) -> SourceFrame:
    return SourceFrame(np.full((side, side, 3), i % 256, np.uint8), t, "cam0", i)


PRED = SimpleNamespace(label=3, confidence=0.6)


@pytest.mark.parametrize("body, message", [
    (b"not json", "not valid JSON"),
    (b"[]", "expected a JSON object"),
    (b'{"verdict": "maybe", "sample_id": "x"}', "verdict"),
    (b'{"verdict": "wrong"}', "exactly one of sample_id or at"),
    (b'{"verdict": "wrong", "sample_id": "x", "at": 1}', "exactly one of sample_id or at"),
    (b'{"verdict": "wrong", "at": "noon"}', "feedback.at"),
    (b'{"verdict": "wrong", "at": 1, "tolerance_s": -1}', "tolerance_s"),
    (b'{"verdict": "wrong", "sample_id": "x", "colour": "red"}', "unknown key"),
    (b'{"verdict": "wrong", "sample_id": "x", "label": 7}', "feedback.label"),
    (b"{" + b" " * 5000 + b"}", "exceeds the limit"),
])
def test_malformed_feedback_is_a_protocol_error_naming_the_field(body, message):
    with pytest.raises(ProtocolError, match=message):
        Feedback.parse(body)


def test_feedback_by_id_or_by_time():
    ring = RecentFrames(max_frames=10)
    for i in range(5):
        ring.add(f"id{i}", frame(i, 100.0 + i), PRED, "v1")
    assert ring.find(Feedback.parse(b'{"verdict": "wrong", "sample_id": "id2"}')).frame.index == 2
    assert ring.find(Feedback("confirmed", at=103.3)).sample_id == "id3"  # the nearest frame in time
    with pytest.raises(FrameGone):
        ring.find(Feedback("wrong", at=110.0))  # nothing within a second
    with pytest.raises(FrameGone):
        ring.find(Feedback("wrong", sample_id="nope"))


@given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 30)), max_size=60),
       st.integers(1, 12), st.integers(1, 40_000))
@settings(max_examples=150, deadline=None)
def test_the_ring_is_bounded_in_count_and_bytes_and_keeps_the_newest(adds, max_frames, max_bytes):
    ring = RecentFrames(max_frames=max_frames, max_bytes=max_bytes)
    for n, (side, key) in enumerate(adds):
        ring.add(f"id{key}", frame(n, float(n), side), PRED, "v1")
        assert len(ring) <= max_frames and ring.nbytes <= max_bytes
        assert ring.nbytes == sum(it.nbytes for it in ring._items.values())
        if side * side * 3 <= max_bytes:  # the newest frame is always held when it fits at all
            assert ring.listing()[-1]["sample_id"] == f"id{key}"


class FakeAgent:
    """What LocalApi serves; the real Agent is exercised end to end in test_e2e."""

    device_id, model_version = "dev-1", "v7"

    def __init__(self):
        self.recent = RecentFrames()
        self.recent.add("01ABC", frame(0, 50.0), PRED, "v7")
        self.got = []

    def stats(self):
        return {"frames_seen": 12, "latency_p50_ms": 3.5, "fps": 9.5}

    def feedback(self, fb):
        item = self.recent.find(fb)
        self.got.append(fb)
        return {"sample_id": item.sample_id, "reason": f"feedback:{fb.verdict}"}


def call(url, body=None):
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_the_local_api_over_real_http():
    agent = FakeAgent()
    api = LocalApi(agent, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{api.port}"
    try:
        code, body = call(base + "/feedback", b'{"verdict": "wrong", "sample_id": "01ABC", "label": "8"}')
        assert code == 202 and json.loads(body) == {"sample_id": "01ABC", "reason": "feedback:wrong"}
        assert agent.got[0].label == "8"
        code, body = call(base + "/feedback", b'{"verdict": "wrong", "sample_id": "gone"}')
        assert code == 404 and "not among" in json.loads(body)["error"]
        code, body = call(base + "/feedback", b'{"verdict": 1}')
        assert code == 400 and "verdict" in json.loads(body)["error"]
        code, body = call(base + "/recent")
        assert code == 200 and json.loads(body)[0]["sample_id"] == "01ABC"
        code, body = call(base + "/metrics")
        assert code == 200 and 'edgeloop_agent_frames_seen{device="dev-1"} 12' in body
        assert call(base + "/nowhere")[0] == 404
    finally:
        api.stop()


def test_prometheus_text_keeps_numbers_only():
    text = prometheus_text("d", "v1", {"fps": 2.5, "name": "x", "ok": True, "sent": 3})
    assert 'edgeloop_agent_info{device="d",model_version="v1"} 1' in text
    assert "edgeloop_agent_fps" in text and "edgeloop_agent_sent" in text
    assert "edgeloop_agent_name" not in text and "edgeloop_agent_ok" not in text


# -- the local API against what a hostile page or process on the device can send ---------------------

def raw(port: int, request: bytes, close_write: bool = True) -> bytes:
    """Send bytes on a real socket; -> the whole answer (close_write=False: without ending the
    request, so that a server waiting for more never answers and this times out)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        if close_write:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:  # the server answered (503) and closed already
                pass
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def post(port: int, headers: str, body: bytes = b'{"verdict": "wrong", "sample_id": "01ABC"}') -> bytes:
    return raw(port, f"POST /feedback HTTP/1.1\r\n{headers}\r\n".encode() + body)


def test_the_local_api_refuses_a_negative_or_missing_length_and_never_reads_an_unbounded_body():
    api = LocalApi(FakeAgent(), "127.0.0.1", 0).start()
    try:
        # -1 would make the server read until the client stops sending (any amount, into memory): it
        # must answer at once instead, without waiting for a body.
        answer = raw(api.port, b"POST /feedback HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n"
                     + b"x" * 65536, close_write=False)
        assert answer.startswith(b"HTTP/1.0 400") and b"Content-Length" in answer, answer[:300]
        assert post(api.port, "Host: 127.0.0.1\r\n").startswith(b"HTTP/1.0 411")
        big = post(api.port, f"Host: 127.0.0.1\r\nContent-Length: {10**9}\r\n")
        assert big.startswith(b"HTTP/1.0 413")
    finally:
        api.stop()


def test_the_local_api_answers_only_to_this_machines_names_and_not_to_cross_site_writes():
    agent = FakeAgent()
    api = LocalApi(agent, "127.0.0.1", 0).start()
    body = b'{"verdict": "wrong", "sample_id": "01ABC"}'
    length = f"Content-Length: {len(body)}\r\n"
    try:
        # DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1.
        for host in (f"evil.example:{api.port}", "evil.example", "127.0.0.1.evil.example"):
            assert post(api.port, f"Host: {host}\r\n{length}", body).startswith(b"HTTP/1.0 421"), host
            assert raw(api.port, f"GET /recent HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()).startswith(b"HTTP/1.0 421")
        for headers in ("Origin: http://evil.example\r\n", "Sec-Fetch-Site: cross-site\r\n"):
            assert post(api.port, f"Host: 127.0.0.1:{api.port}\r\n{headers}{length}", body).startswith(
                b"HTTP/1.0 403"), headers
        assert agent.got == []  # none of it reached the agent
        for host in (f"127.0.0.1:{api.port}", f"localhost:{api.port}", "localhost"):
            assert post(api.port, f"Host: {host}\r\nOrigin: http://localhost:3000\r\n{length}", body).startswith(
                b"HTTP/1.0 202"), host
    finally:
        api.stop()


def test_idle_sockets_cannot_grow_the_agents_threads_and_are_closed():
    api = LocalApi(FakeAgent(), "127.0.0.1", 0, max_threads=4, timeout_s=3.0).start()
    before = threading.active_count()
    idle = []
    try:
        for _ in range(40):
            idle.append(socket.create_connection(("127.0.0.1", api.port), timeout=10))
        time.sleep(0.3)  # let the server take them all
        assert threading.active_count() - before <= 4
        # Full: the next connection is told so at once.
        assert raw(api.port, b"GET /recent HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").startswith(b"HTTP/1.1 503")
        # The idle ones are cut off after the timeout, and the API answers again.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if raw(api.port, b"GET /recent HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").startswith(b"HTTP/1.0 200"):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the API never answered again")
    finally:
        for s in idle:
            s.close()
        api.stop()
