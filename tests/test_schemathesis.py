"""Schemathesis against a real hub process: every operation of /openapi.json, fuzzed with the bearer token.

Checks (schemathesis's defaults but two): no 5xx (not_a_server_error), only the status codes the document
states (200, 4XX and the few others it lists; status_code_conformance), the bearer scheme enforced (ignored_auth), 405 for methods
a path does not serve. The document gives no response content or schemas, so content and body
conformance have nothing to check; its request bodies have no schemas either (see `hub_schema`).

Schemathesis 4's pytest integration: the schema comes from a fixture (`schemathesis.pytest.from_fixture`)
because the hub, and so its URL, exists only once the fixture has started it.

Below it, `HOSTILE`: requests the document cannot express (query parameters, Range headers, JSON beyond
what schemathesis generates), each a crash found by hand against the running hub (fixed since) or a guard.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import msgpack
import numpy as np
import pytest

from edgeloop.shared import artifact
from edgeloop.shared.manifest import ModelManifest
from edgeloop.shared.protocol import SampleBatch, encode
from edgeloop.shared.signing import load_private_key

from factories import HUB_TOKEN, make_candidate, start_hub

schemathesis = pytest.importorskip("schemathesis", reason="pip install 'edgeloop[test]' (schemathesis)")

TOKEN = HUB_TOKEN
# Per operation and phase: ~30 operations take about 15 s on two idle cores. Deeper, on demand:
# EDGELOOP_API_FUZZ_EXAMPLES=200 python -m pytest tests/test_schemathesis.py
MAX_EXAMPLES = int(os.environ.get("EDGELOOP_API_FUZZ_EXAMPLES", "50"))


@schemathesis.serializer("application/msgpack")
def _msgpack(ctx, value):
    """The hub reads sample batches as msgpack: send whatever schemathesis generated, packed."""
    return msgpack.packb(_msgpack_safe(value), use_bin_type=True)


def _msgpack_safe(value):
    """JSON -> what msgpack can pack: an integer beyond 64 bits (msgpack has none) becomes a float."""
    if isinstance(value, dict):
        return {k: _msgpack_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_msgpack_safe(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return float(value) if abs(value) < 1e308 else str(value)
    return value


@pytest.fixture(scope="module")
def hub_url(tmp_path_factory):
    """A real hub holding three samples and one registered model (its ONNX bytes are not a model: nothing
    here runs it)."""
    root = tmp_path_factory.mktemp("hub-schemathesis")
    svc, url = start_hub(root)
    # A few samples, so that the queue, the labels and selection have rows to show.
    batch = encode(SampleBatch("relay-s", "site-s", tuple(
        make_candidate(embedding=np.arange(4, dtype=np.float16) + i) for i in range(3))))
    assert call(url, "POST", "/api/v1/samples", batch, "application/msgpack")[0] == 200
    key = load_private_key((root / "data" / "keys" / "hub.key").read_bytes())
    model = artifact.sign_artifact(artifact.pack(_manifest(MODEL), b"not onnx" * 16), key)
    assert call(url, "POST", "/api/v1/models", model, "application/octet-stream")[0] == 201
    yield url
    assert svc.stop() == 0, f"the hub did not stop cleanly; see {svc.log_path}"


@pytest.fixture(scope="module")
def hub_schema(hub_url):
    config = schemathesis.Config.from_dict({
        "headers": {"Authorization": f"Bearer {TOKEN}"},
        "request-timeout": 30,
        "generation": {"max-examples": MAX_EXAMPLES, "mode": "all"},
        # Stateful runs chain calls through links; the document has none.
        "phases": {"stateful": {"enabled": False}},
        # The request bodies are documented by media type only (schema {}), so any body is "schema-valid"
        # and none "invalid": these two checks would only measure the document's silence.
        "checks": {"positive_data_acceptance": {"enabled": False}, "negative_data_rejection": {"enabled": False}},
    })
    return schemathesis.openapi.from_url(hub_url + "/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("hub_schema")
# Answers 204 when no model is set, and the document states only 200 and 4XX (hub/openapi.py).
DESIRED = {"method": "GET", "path": "/api/v1/desired"}


@schema.exclude(**DESIRED).parametrize()
def test_hub_api_conforms_to_its_openapi_document(case):
    case.call_and_validate()


# A plain test, not schemathesis's parametrize: that reports each operation as a subtest, which a strict
# xfail on the test would not see fail.
def test_get_desired_status_codes_are_documented(hub_schema):
    case = hub_schema[DESIRED["path"]][DESIRED["method"]].Case()
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})  # a bare Case skips the config's headers


# --- hostile requests the document cannot express -------------------------------------------------
# Query parameters, headers and JSON edge cases the document does not describe, so schemathesis never
# sends them. Each was a crash found by hand-fuzzing the running hub, or is a guard that it stays fixed.

BIG = "9" * 400  # a JSON integer beyond the float range
DEEP = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
MODEL = "v-fuzz"
ART = f"/api/v1/models/{MODEL}/artifact"


def _manifest(version: str, **input_overrides) -> ModelManifest:
    return ModelManifest.from_dict({"version": version, "task": "classification", "outputs": {"logits": "logits"},
                                    "labels": ["a", "b"], "input": {"name": "x", "height": 8, "width": 8,
                                                                    **input_overrides}})


def _artifact_with_huge_scale() -> bytes:
    good = json.loads(_manifest("v-huge").to_json())
    good["input"]["scale"] = 10**400
    return msgpack.packb({"v": 1, "type": "model", "manifest": json.dumps(good).encode(), "onnx": b"x"},
                         use_bin_type=True)


def call(url, method, path, body: bytes | None = None, ctype: str = "application/json",
         headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url + path, data=body, method=method, headers={
        "Content-Type": ctype, "Authorization": f"Bearer {TOKEN}", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def hostile(name, method, path, body: str | bytes | None = None, ctype="application/json", headers=None):
    body = body.encode() if isinstance(body, str) else body
    return pytest.param(method, path, body, ctype, headers, id=name)


HOSTILE = [
    # Were 500s (found by hand-fuzzing the running hub), fixed in hub/ and shared/rollout.py.
    hostile("rollouts-limit-huge", "GET", "/api/v1/rollouts?limit=99999999999999999999999"),
    hostile("reports-stat-huge-int", "POST", "/api/v1/reports",
            f'{{"relay_id": "r", "site": "s", "devices": [{{"device_id": "d", "stats": {{"a": {BIG}}}}}]}}'),
    hostile("reports-last-error-surrogate", "POST", "/api/v1/reports",
            '{"relay_id": "r", "site": "s", "devices": [{"device_id": "d", "last_error": "\\ud800"}]}'),
    hostile("rollouts-latency-huge-int", "POST", "/api/v1/rollouts", f'{{"model": "m", "max_latency_ms": {BIG}}}'),
    hostile("rollouts-gate-huge-int", "POST", "/api/v1/rollouts",
            f'{{"model": "m", "gates": {{"min_frames": {BIG}}}}}'),
    hostile("labels-surrogate-id", "POST", "/api/v1/labels", '{"labels": {"\\ud800": 1}}'),
    hostile("ambiguous-surrogate-id", "POST", "/api/v1/labels", '{"ambiguous": ["\\ud800"]}'),
    *[hostile(f"deep-json-{path.rsplit('/', 1)[1]}", "POST", path, DEEP)
      for path in ("/api/v1/labels", "/api/v1/reports", "/api/v1/rollouts", "/api/v1/selection",
                   "/api/v1/campaigns", "/api/v1/desired", "/api/v1/train")],
    *[hostile(f"artifact-range-{name}", "GET", ART, headers={"Range": value})
      for name, value, error in (("garbage", "bytes=abc", "ValueError: range not in acceptable format"),
                                 ("reversed", "bytes=5-2", "ValueError: start cannot be after end"),
                                 ("multiple", "bytes=0-0,5-9", "ValueError: range not in acceptable format"),
                                 ("other-unit", "items=0-5", "ValueError: range not in acceptable format"))],
    # Guards: answered with a 4xx (or 200) today; keep it so.
    hostile("models-manifest-huge-int", "POST", "/api/v1/models", _artifact_with_huge_scale(),
            "application/octet-stream"),  # was a 500 (OverflowError in shared/manifest.py), fixed there
    hostile("models-junk", "POST", "/api/v1/models", b"\xc1" * 64, "application/octet-stream"),
    hostile("samples-deep-msgpack", "POST", "/api/v1/samples", b"\x91" * 100_000, "application/msgpack"),
    hostile("audit-limit-huge", "GET", "/api/v1/audit?limit=99999999999999999999999"),
    hostile("queue-limit-negative-huge", "GET", "/api/v1/label-queue?limit=-99999999999999999999999"),
    hostile("similar-k-huge", "GET", "/api/v1/samples/x/similar?k=99999999999999999999999"),
    hostile("devices-site-nul", "GET", "/api/v1/devices?site=%00"),
    hostile("selection-budget-huge", "POST", "/api/v1/selection", f'{{"budget": {BIG}}}'),
    hostile("campaigns-ttl-huge", "POST", "/api/v1/campaigns", f'{{"sample_ids": ["x"], "ttl_s": {BIG}}}'),
    hostile("campaigns-surrogate-id", "POST", "/api/v1/campaigns", '{"sample_ids": ["\\ud800"]}'),
    hostile("train-epochs-huge", "POST", "/api/v1/train", f'{{"epochs": {BIG}}}'),
    hostile("artifact-range-suffix-zero", "GET", ART, headers={"Range": "bytes=-0"}),
    hostile("artifact-range-past-end", "GET", ART, headers={"Range": "bytes=99999999999999999999999-"}),
]


@pytest.mark.parametrize("method, path, body, ctype, headers", HOSTILE)
def test_hostile_request_gets_no_server_error(hub_url, method, path, body, ctype, headers):
    status, reply = call(hub_url, method, path, body, ctype, headers)
    assert status < 500, f"{method} {path} -> {status} {reply[:200]!r}"
