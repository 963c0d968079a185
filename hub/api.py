"""The hub's HTTP API (aiohttp). JSON everywhere except sample batches (msgpack, as on MQTT).

    POST /api/v1/samples              msgpack SampleBatch -> {"stored": [...], "duplicates": [...]}
    GET  /api/v1/desired?site=S       the model the fleet should run (204 when none)
    GET  /api/v1/models               the registry;  GET /api/v1/models/{v}/artifact  the signed file
    POST /api/v1/selection            {"budget": K, "strategy": "uncertainty"} -> queue K for labeling
    GET  /api/v1/label-queue          what waits for a label, best first
    GET  /api/v1/samples/{id}/image   the JPEG
    POST /api/v1/labels               {"labels": {"<sample_id>": 3, ...}, "source": "oracle"}
    POST /api/v1/train                {"epochs": 15} -> train, evaluate, register a new version
    POST /api/v1/desired              {"version": "v3"} -> roll the fleet to it
    GET  /api/v1/stats                counts for dashboards and the demo
    POST /api/v1/campaigns            {"sample_ids": [...], "threshold", "quota", "ttl_s"}: more like these
    GET  /api/v1/campaigns            the active campaigns (relays set them on their agents)
    GET  /health                      no auth

Bad input gets a 4xx whose body names the problem, and nothing of it is stored.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging

from aiohttp import web

from edgeloop.shared.errors import EdgeloopError, ProtocolError, TooLarge
from edgeloop.shared.protocol import MAX_MESSAGE_BYTES, SampleBatch, check_id, decode
from edgeloop.shared.sampling.policy import is_feedback

from . import selection
from .golden import LabeledSet
from .store import HubStore
from .training import LABELS
from .trainer import train_round

log = logging.getLogger("edgeloop.hub")

STORE = web.AppKey("store", HubStore)
GOLDEN = web.AppKey("golden", LabeledSet)
TOKENS = web.AppKey("tokens", list)
TRAIN_LOCK = web.AppKey("train_lock", asyncio.Lock)
SIGNING_KEY = web.AppKey("signing_key", object)


def _error(status: type[web.HTTPException], message: str) -> web.HTTPException:
    body = {"text": json.dumps({"error": message}), "content_type": "application/json"}
    if status is web.HTTPRequestEntityTooLarge:  # its constructor wants the sizes
        return status(MAX_MESSAGE_BYTES, 0, **body)
    return status(**body)


@web.middleware
async def json_errors(request: web.Request, handler):
    """Every error answer is JSON {"error": "..."}, aiohttp's own (404, 405, 413) included."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        exc.text = json.dumps({"error": exc.text or exc.reason})
        exc.content_type = "application/json"
        raise


@web.middleware
async def auth(request: web.Request, handler):
    tokens = request.app[TOKENS]
    if request.path.startswith("/api/") and tokens:
        header = request.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else ""
        if not any(hmac.compare_digest(given, t) for t in tokens):
            raise _error(web.HTTPUnauthorized, "missing or wrong bearer token")
    return await handler(request)


async def _json(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise _error(web.HTTPBadRequest, f"body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _error(web.HTTPBadRequest, "body must be a JSON object")
    return body


async def post_samples(request: web.Request) -> web.Response:
    store = request.app[STORE]
    if request.content_length and request.content_length > MAX_MESSAGE_BYTES:
        raise _error(web.HTTPRequestEntityTooLarge, f"batch exceeds {MAX_MESSAGE_BYTES} bytes")
    data = await request.read()
    try:
        batch = decode(data, SampleBatch)  # the whole batch validates before anything is stored
    except TooLarge as exc:
        raise _error(web.HTTPRequestEntityTooLarge, str(exc)) from exc
    except ProtocolError as exc:
        raise _error(web.HTTPBadRequest, str(exc)) from exc
    stored, dup = await asyncio.to_thread(store.ingest, batch.samples, batch.site, batch.source)
    await asyncio.to_thread(store.bump, "bytes_in", len(data))
    return web.json_response({"stored": stored, "duplicates": dup})


async def get_desired(request: web.Request) -> web.Response:
    store = request.app[STORE]
    version = await asyncio.to_thread(store.desired)
    if not version:
        return web.Response(status=204)
    m = await asyncio.to_thread(store.model, version)
    return web.json_response({"version": version, "sha256": m["artifact_sha256"], "size": m["artifact_size"],
                              "artifact": f"/api/v1/models/{version}/artifact"})


async def post_desired(request: web.Request) -> web.Response:
    store = request.app[STORE]
    body = await _json(request)
    version = body.get("version")
    if not isinstance(version, str) or not await asyncio.to_thread(store.model, version):
        raise _error(web.HTTPNotFound, f"no model version {version!r} in the registry")
    await asyncio.to_thread(store.set_desired, version)
    log.info("desired model for the fleet is now %s", version)
    return web.json_response({"version": version})


async def get_models(request: web.Request) -> web.Response:
    store = request.app[STORE]
    return web.json_response({"models": await asyncio.to_thread(store.models),
                              "desired": await asyncio.to_thread(store.desired)})


async def get_artifact(request: web.Request) -> web.Response:
    store = request.app[STORE]
    m = await asyncio.to_thread(store.model, request.match_info["version"])
    if not m:
        raise _error(web.HTTPNotFound, f"no model version {request.match_info['version']!r}")
    data = await asyncio.to_thread(store.blobs.get, m["artifact_sha256"])
    await asyncio.to_thread(store.bump, "model_bytes_out", len(data))
    return web.Response(body=data, content_type="application/octet-stream")


async def post_selection(request: web.Request) -> web.Response:
    store = request.app[STORE]
    body = await _json(request)
    budget, strategy = body.get("budget"), body.get("strategy", "uncertainty")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 0:
        raise _error(web.HTTPBadRequest, "budget: expected a non-negative integer")
    if strategy not in selection.STRATEGIES:
        raise _error(web.HTTPBadRequest, f"strategy: expected one of {', '.join(selection.STRATEGIES)}")
    pool = await asyncio.to_thread(store.samples_with_status, "new")
    labeled = await asyncio.to_thread(store.labeled_embeddings)
    chosen = await asyncio.to_thread(selection.select_for_labeling, pool, budget, strategy, 0, labeled)
    await asyncio.to_thread(store.mark_queued, chosen)
    return web.json_response({"selected": list(chosen), "pool": len(pool)})


def _public(row: dict) -> dict:
    return {k: row[k] for k in ("sample_id", "device_id", "camera_id", "site", "captured_at", "model_version",
                                "predicted", "confidence", "reasons", "tags", "status", "priority")} | {
        "slice": "audit" if row.get("audit") else "feedback" if is_feedback(row["reasons"]) else "selected"}


async def get_label_queue(request: web.Request) -> web.Response:
    try:
        limit = min(1000, max(1, int(request.query.get("limit", "100"))))
    except ValueError as exc:
        raise _error(web.HTTPBadRequest, "limit: expected an integer") from exc
    rows = await asyncio.to_thread(request.app[STORE].label_queue, limit)
    return web.json_response({"items": [_public(r) for r in rows]})


async def get_image(request: web.Request) -> web.Response:
    store = request.app[STORE]
    row = await asyncio.to_thread(store.sample, request.match_info["sample_id"])
    if not row:
        raise _error(web.HTTPNotFound, "no such sample")
    return web.Response(body=await asyncio.to_thread(store.blobs.get, row["image_sha256"]), content_type="image/jpeg")


async def post_labels(request: web.Request) -> web.Response:
    store = request.app[STORE]
    body = await _json(request)
    labels, source = body.get("labels"), body.get("source", "human")
    if not isinstance(labels, dict):
        raise _error(web.HTTPBadRequest, "labels: expected an object of sample_id -> class index")
    for sid, label in labels.items():
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(LABELS):
            raise _error(web.HTTPBadRequest, f"labels.{sid}: expected a class index from 0 to {len(LABELS) - 1}")
    try:
        check_id(source, "source")
    except ProtocolError as exc:
        raise _error(web.HTTPBadRequest, str(exc)) from exc
    done = await asyncio.to_thread(store.add_labels, labels, source)
    unknown = sorted(set(labels) - set(done))
    return web.json_response({"labeled": len(done), "unknown": unknown})


async def post_train(request: web.Request) -> web.Response:
    body = await _json(request) if request.can_read_body else {}
    epochs = body.get("epochs", 15)
    if not isinstance(epochs, int) or not 1 <= epochs <= 500:
        raise _error(web.HTTPBadRequest, "epochs: expected an integer from 1 to 500")
    async with request.app[TRAIN_LOCK]:  # one training at a time
        try:
            result = await asyncio.to_thread(train_round, request.app[STORE], request.app[GOLDEN],
                                             request.app[SIGNING_KEY], epochs=epochs)
        except EdgeloopError as exc:
            raise _error(web.HTTPConflict, str(exc)) from exc
    return web.json_response(result)


async def post_campaign(request: web.Request) -> web.Response:
    """{"sample_ids": [...], "threshold": 0.15, "quota": 100, "ttl_s": 86400} -> the new campaign."""
    body = await _json(request)
    ids, threshold = body.get("sample_ids"), body.get("threshold", 0.15)
    quota, ttl = body.get("quota", 100), body.get("ttl_s", 86400)
    if not isinstance(ids, list) or not 1 <= len(ids) <= 64 or not all(isinstance(i, str) for i in ids):
        raise _error(web.HTTPBadRequest, "sample_ids: expected a list of 1 to 64 sample ids")
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 < threshold <= 2:
        raise _error(web.HTTPBadRequest, "threshold: expected a cosine distance in (0, 2]")
    if not isinstance(quota, int) or isinstance(quota, bool) or not 1 <= quota <= 1_000_000:
        raise _error(web.HTTPBadRequest, "quota: expected a positive count")
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not 0 < ttl <= 365 * 86400:
        raise _error(web.HTTPBadRequest, "ttl_s: expected seconds up to a year")
    try:
        camp = await asyncio.to_thread(request.app[STORE].add_campaign, ids, float(threshold), quota, float(ttl))
    except ValueError as exc:
        raise _error(web.HTTPBadRequest, f"sample_ids: {exc}") from exc
    log.info("campaign %s: %d exemplars, threshold %.3f, quota %d", camp["campaign_id"], len(ids), threshold, quota)
    return web.json_response(camp)


async def get_campaigns(request: web.Request) -> web.Response:
    return web.json_response({"campaigns": await asyncio.to_thread(request.app[STORE].active_campaigns)})


async def get_stats(request: web.Request) -> web.Response:
    store = request.app[STORE]
    return web.json_response({**await asyncio.to_thread(store.counts), "desired": await asyncio.to_thread(store.desired)})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def make_app(store: HubStore, golden: LabeledSet, tokens: list[str], signing_key) -> web.Application:
    app = web.Application(middlewares=[json_errors, auth], client_max_size=MAX_MESSAGE_BYTES + (1 << 16))
    app[STORE], app[GOLDEN], app[TOKENS], app[TRAIN_LOCK] = store, golden, list(tokens), asyncio.Lock()
    app[SIGNING_KEY] = signing_key
    r = app.router
    r.add_post("/api/v1/samples", post_samples)
    r.add_get("/api/v1/desired", get_desired)
    r.add_post("/api/v1/desired", post_desired)
    r.add_get("/api/v1/models", get_models)
    r.add_get("/api/v1/models/{version}/artifact", get_artifact)
    r.add_post("/api/v1/selection", post_selection)
    r.add_get("/api/v1/label-queue", get_label_queue)
    r.add_get("/api/v1/samples/{sample_id}/image", get_image)
    r.add_post("/api/v1/labels", post_labels)
    r.add_post("/api/v1/train", post_train)
    r.add_get("/api/v1/stats", get_stats)
    r.add_post("/api/v1/campaigns", post_campaign)
    r.add_get("/api/v1/campaigns", get_campaigns)
    r.add_get("/health", health)
    return app
