"""Application feedback: the request format, the bounded ring of recent frames, the local HTTP API."""

from __future__ import annotations

import json
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
