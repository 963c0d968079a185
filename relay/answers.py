"""What a relay makes of the hub's answer to a batch of samples: pure logic, no I/O.

Only the hub's own typed refusal may drop a sample, and then into the relay's dead-letter table, not
into nothing. Anything else that is not a 200 — a reverse proxy's 404, 405 or 413 as an HTML page, a
hub URL with a wrong path prefix, a 5xx — keeps the batch queued: it is retried with backoff, and an
untyped 413 (a proxy limiting the body size) makes the relay send smaller batches.

    classify(404, "text/html", "<html>Not Found</html>")                    -> RETRY
    classify(400, "application/json", '{"error": "...", "refused": "batch"}') -> REFUSED
    classify(413, "text/html", "<html>Request Entity Too Large</html>")       -> SPLIT
"""

from __future__ import annotations

import json

OK, REFUSED, SPLIT, RETRY = "ok", "refused", "split", "retry"


def classify(status: int, content_type: str, text: str) -> str:
    """-> OK (200), REFUSED (the hub's typed refusal of the batch's bytes: find the bad ones alone),
    SPLIT (413 from something else than the hub: send less at once) or RETRY (anything else)."""
    if status == 200:
        return OK
    if typed_refusal(content_type, text):
        return REFUSED
    if status == 413:
        return SPLIT
    return RETRY


def typed_refusal(content_type: str, text: str) -> bool:
    """Whether a body is the hub's `{"error": ..., "refused": "batch"}` (JSON, from the hub itself)."""
    if not content_type.startswith("application/json"):
        return False
    try:
        body = json.loads(text)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("refused") == "batch" and isinstance(body.get("error"), str)


def refused_samples(reply: dict) -> dict[str, str]:
    """A 200's per-sample refusals -> {sample_id: reason} (the hub stored the rest of the batch)."""
    out = {}
    for r in reply.get("refused") or []:
        if isinstance(r, dict) and isinstance(r.get("sample_id"), str):
            out[r["sample_id"]] = str(r.get("reason", "refused by the hub"))[:500]
    return out


def describe(status: int, content_type: str, text: str) -> str:
    """A log line's account of an answer that is kept for retry: what answered, and a hint."""
    if status == 0:
        return f"hub unreachable ({text[:200]})"
    what = f"answered {status} {content_type or 'without a content type'}"
    if not content_type.startswith("application/json"):
        return f"{what}: not the hub's API (a proxy, or a wrong --hub path?); nothing is dropped"
    return f"{what}: {text[:200]}"
