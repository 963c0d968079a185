"""What a relay makes of an answer (relay/answers.py): only the hub's typed refusal is a refusal;
every other non-200, whatever its status and body, keeps the batch (retry), and an untyped 413 splits it."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from edgeloop.relay import answers

statuses = st.integers(100, 599).filter(lambda s: s not in (200, 413))
bodies = st.one_of(st.text(max_size=200), st.just("<html><h1>404 Not Found</h1></html>"),
                   st.builds(json.dumps, st.dictionaries(st.sampled_from(["error", "detail", "refused"]),
                                                         st.sampled_from(["x", "batch", "sample", 1, None]), max_size=3)))
types = st.sampled_from(["text/html", "text/plain", "application/json", "", "application/problem+json"])


@given(statuses, types, bodies)
def test_anything_but_the_hubs_typed_refusal_keeps_the_batch(status, ctype, text):
    verdict = answers.classify(status, ctype, text)
    typed = answers.typed_refusal(ctype, text)
    assert verdict == (answers.REFUSED if typed else answers.RETRY)
    if typed:  # only JSON that says so, in so many words
        assert ctype.startswith("application/json") and json.loads(text)["refused"] == "batch"


@given(types, st.text(max_size=100))
def test_an_untyped_413_splits_and_a_200_is_ok(ctype, text):
    assert answers.classify(413, "text/html", text) == answers.SPLIT
    assert answers.classify(200, ctype, text) == answers.OK


def test_the_hubs_refusals_are_read_and_junk_in_them_ignored():
    body = json.dumps({"error": "samples[1].probs: bad", "refused": "batch"})
    assert answers.classify(400, "application/json; charset=utf-8", body) == answers.REFUSED
    assert answers.classify(413, "application/json", body) == answers.REFUSED
    reply = {"refused": [{"sample_id": "a", "reason": "image: not a JPEG"}, {"sample_id": 3}, "junk", {"reason": "x"}]}
    assert answers.refused_samples(reply) == {"a": "image: not a JPEG"}
    assert "not the hub's API" in answers.describe(404, "text/html", "<html>")
    assert answers.describe(0, "", "connection refused").startswith("hub unreachable")
