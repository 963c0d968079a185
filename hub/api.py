"""The hub's HTTP API (aiohttp). JSON everywhere except sample batches (msgpack, as on MQTT).

    POST /api/v1/samples              msgpack SampleBatch -> {"stored": [...], "duplicates": [...]}
    GET  /api/v1/desired?site=S       the site's default model, per-device assignments of active rollouts,
                                      and every model the site needs (204 when none)
    GET  /api/v1/models               the registry;  GET /api/v1/models/{v}/artifact  the signed file
    GET  /api/v1/models/{v}/card      its model card: data, settings, per-slice metrics, calibration, gate
    POST /api/v1/selection            {"budget": K, "strategy": "uncertainty"} -> queue K for labeling
                                      (hybrid: "dedup_threshold", cosine distance, default 0.02)
    GET  /api/v1/label-queue          what waits for a label, best first
    GET  /api/v1/samples/{id}/image   the JPEG
    POST /api/v1/labels               {"labels": {"<sample_id>": 3, ...}, "source": "oracle"}
    POST /api/v1/train                {"epochs": 15} -> 202 a queued training job (see jobs_api.py)
    POST /api/v1/desired              {"version": "v3"} -> roll the fleet to it (a model its training gate
                                      refused: only with "force": true, audited)
    GET  /api/v1/stats                counts for dashboards and the demo
    GET  /api/v1/audit?who=NAME       every write through the API, who made it, and its answer
    GET  /api/v1/live                 production accuracy per site and device class (the labeled audit stream)
    GET  /api/v1/drift                drift alarms per site: accuracy drop, or embeddings unlike the training data
    POST /api/v1/campaigns            {"sample_ids": [...], "threshold", "quota", "ttl_s"}: more like these
    GET  /api/v1/campaigns            the active campaigns (relays set them on their agents)
    DELETE /api/v1/campaigns/{id}     end one (campaigns_api.py: an engineer's, within bounds)
    POST /api/v1/reports              {"relay_id", "site", "devices": [...]}: the latest state of each device
    GET  /api/v1/devices?site=S       those latest states (a device not reported lately shows offline)
    POST /api/v1/rollouts             {"model", "group", "stages", "gates", ...} -> 201 the new staged rollout
    GET  /api/v1/rollouts             every rollout, newest first (?limit=N)
    GET  /api/v1/rollouts/{id}        one rollout with live progress per stage and per relay
    POST /api/v1/rollouts/{id}/pause|resume|abort|rollback
    POST /api/v1/models               a signed artifact trained elsewhere (verified with the hub's key)
    GET  /health                      no auth
    GET  /openapi.json                the OpenAPI document of these routes, no auth

Bad input gets a 4xx whose body names the problem, and nothing of it is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time

from aiohttp import web

from edgeloop.shared.artifact import unpack
from edgeloop.shared.errors import ConfigError, EdgeloopError, ImageError, ProtocolError, TooLarge
from edgeloop.shared.images import check_image
from edgeloop.shared.protocol import MAX_MESSAGE_BYTES, SampleBatch, check_id, decode

from . import campaigns_api, jobs_api, labeling, monitor, pages, selection, statements
from .training.jobs import Jobs
from .training.policy import Policy, PolicyConfig
from .training.golden import LabeledSet
from .openapi import build as build_openapi
from .openapi import get_openapi
from .cards import ModelNotFound, model_card
from .rollouts import RelayReport, RolloutConflict, RolloutNotFound, RolloutRequest, Rollouts
from .auth import speaks_for
from .store import HubStore
from .throttle import Throttle
from .webutil import (CALLER, GOLDEN, LOGINS, OPEN, REFUSALS, ROLLOUT_PERIOD, SECURE_COOKIES, ROLLOUTS, SIGNING_KEY, STORE, TOKENS, JOBS, POLICY, auth, json_errors,
                      read_json as _json, error as _error)

log = logging.getLogger("edgeloop.hub")

MAX_REPORT_BYTES = MAX_MESSAGE_BYTES
DESIRED_TTL = web.AppKey("desired_ttl_s", float)  # how long a signed desired statement stays valid


def _refused_batch(status: type[web.HTTPException], message: str) -> web.HTTPException:
    """The hub's own, typed refusal of a whole batch: `"refused": "batch"` tells a relay these bytes
    are wrong (split it and find the bad ones), where a proxy's or a wrong URL's 4xx says nothing."""
    exc = _error(status, message)
    exc.text = json.dumps({"error": message, "refused": "batch"})
    return exc


def _check_binding(request: web.Request, site: str, relay_id: str) -> None:
    """403 when a relay's token names another site or relay id than it was made for. Not the typed
    batch refusal: the samples are fine, the credentials are wrong, so a relay keeps them and retries."""
    why = speaks_for(request[CALLER], site, relay_id)
    if why is not None:
        log.warning("refused %s %s: %s", request.method, request.path, why)
        raise _error(web.HTTPForbidden, why)


async def _check_devices(request: web.Request, report: RelayReport) -> None:
    """403 when a relay reports a device that another site's relay reports as live: a relay may not
    pull other sites' devices into its own (and its rollouts). A device silent there for the stale
    time may move: devices do change gateways."""
    ro = request.app[ROLLOUTS]
    since = ro.clock() - ro.stale_s
    held = await asyncio.to_thread(request.app[STORE].device_sites, [d.device_id for d in report.devices], since)
    taken = sorted(d for d, site in held.items() if site not in request[CALLER].sites)
    if taken:
        why = f"device {taken[0]!r} is live at site {held[taken[0]]!r}, not one of relay {report.relay_id}'s"
        log.warning("refused %s %s: %s", request.method, request.path, why)
        raise _error(web.HTTPForbidden, why)


def usable(c, widths: dict[str, int] | None = None) -> str | None:
    """Why the hub will not store a candidate it could decode (its image does not decode, or its
    embedding is not as wide as its model's drift reference: `widths`, version -> D), or None."""
    try:
        check_image(c.image)
    except ImageError as exc:
        return f"image: {exc}"
    want = (widths or {}).get(c.model_version)
    if want is not None and c.embedding is not None and len(c.embedding) != want:
        return f"embedding: model {c.model_version} embeds in {want} dimensions, got {len(c.embedding)}"
    return None


def _embedding_widths(store: HubStore) -> dict[str, int]:
    """version -> embedding width, for every model with a drift reference (read once per blob)."""
    return {version: len(ref.mean) for version, ref in monitor.references(store).items()}


async def post_samples(request: web.Request) -> web.Response:
    """-> {"stored": [...], "duplicates": [...], "refused": [{"sample_id", "reason"}]}: a sample whose image
    does not decode, or whose embedding is not its model's width, is refused alone (the rest of its batch is stored); a batch that does not decode is
    refused whole with 400 (413 when too large) and `"refused": "batch"`."""
    store = request.app[STORE]
    if request.content_length and request.content_length > MAX_MESSAGE_BYTES:
        raise _refused_batch(web.HTTPRequestEntityTooLarge, f"batch exceeds {MAX_MESSAGE_BYTES} bytes")
    data = await request.read()
    try:
        batch = decode(data, SampleBatch)  # the whole batch validates before anything is stored
    except TooLarge as exc:
        raise _refused_batch(web.HTTPRequestEntityTooLarge, str(exc)) from exc
    except ProtocolError as exc:
        raise _refused_batch(web.HTTPBadRequest, str(exc)) from exc
    _check_binding(request, batch.site, batch.source)
    widths = await asyncio.to_thread(_embedding_widths, store)
    reasons = await asyncio.to_thread(lambda: [usable(c, widths) for c in batch.samples])
    good = tuple(c for c, why in zip(batch.samples, reasons) if why is None)
    refused = [{"sample_id": c.sample_id, "reason": why} for c, why in zip(batch.samples, reasons) if why is not None]
    for r in refused:
        log.warning("refused sample %s from %s: %s", r["sample_id"], batch.source, r["reason"])
    stored, dup = await asyncio.to_thread(store.ingest, good, batch.site, batch.source) if good else ([], [])
    await asyncio.to_thread(store.bump, "bytes_in", len(data))
    return web.json_response({"stored": stored, "duplicates": dup, "refused": refused})


def _site_param(request: web.Request) -> str | None:
    site = request.query.get("site")
    if site is not None:
        try:
            check_id(site, "site")
        except ProtocolError as exc:
            raise _error(web.HTTPBadRequest, str(exc)) from exc
    return site


async def get_desired(request: web.Request) -> web.Response:
    """{version, sha256, size, artifact, statement, signature} of the site's default model (what relays read
    before rollouts; statement and signature: base64 of the hub's signed desired statement, with ?site only),
    plus "devices": {device_id: {version, sha256, size, artifact, shadow, max_latency_ms, rollout_id}}
    for the devices an active rollout assigns something else, and "models": {version: {sha256, size,
    artifact}} for every version the site needs. 204 when there is nothing to run."""
    site = _site_param(request)
    if request[CALLER].role == "relay":  # a relay reads its own sites' assignments only
        _check_binding(request, site or "", None)
    body = await asyncio.to_thread(request.app[ROLLOUTS].desired_for_site, site)
    if body is None:
        return web.Response(status=204)
    if site is not None:  # what relays ask: every entry signed for the site's agents (hub/statements.py)
        body = await asyncio.to_thread(statements.signed, request.app[STORE], request.app[SIGNING_KEY], site, body,
                                       time.time(), request.app[DESIRED_TTL])
    return web.json_response(body)


async def post_desired(request: web.Request) -> web.Response:
    """{"version": V[, "force": true]}: make V the fleet's desired model at once. A model its training
    gate refused needs "force", as a rollout does, and the override gets its own audit row."""
    store = request.app[STORE]
    body = await _json(request)
    version, force = body.get("version"), body.get("force", False)
    if not isinstance(force, bool):
        raise _error(web.HTTPBadRequest, f"force: expected true or false, got {force!r:.80}")
    model = await asyncio.to_thread(store.model, version) if isinstance(version, str) else None
    if not model:
        raise _error(web.HTTPNotFound, f"no model version {version!r:.80} in the registry")
    gate = model["metrics"].get("gate") or {}
    if gate.get("passed") is False:
        why = "; ".join(map(str, gate.get("reasons", [])))[:500]
        if not force:
            raise _error(web.HTTPConflict, f"{version} was refused by its training gate ({why}); "
                                           "set it anyway with \"force\": true")
        who = request[CALLER]
        await asyncio.to_thread(store.audit, who.name, who.role, "POST", "/api/v1/desired", 200,
                                f"force: {version} set although its training gate refused it ({why})")
        log.warning("%s forced %s as the fleet's desired model past its training gate (%s)", who.name, version, why)
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
    path = store.blobs.path(m["artifact_sha256"])
    # FileResponse answers Range requests: a relay resumes an interrupted download.
    try:
        sent = len(range(*request.http_range.indices(m["artifact_size"])))
    except ValueError as exc:  # a malformed or multi-part Range header
        raise _error(web.HTTPRequestRangeNotSatisfiable, f"Range: {exc}") from exc
    await asyncio.to_thread(store.bump, "model_bytes_out", sent)
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


async def get_card(request: web.Request) -> web.Response:
    try:
        return web.json_response(await asyncio.to_thread(model_card, request.app[STORE], request.match_info["version"]))
    except ModelNotFound as exc:
        raise _error(web.HTTPNotFound, str(exc)) from exc


async def post_model(request: web.Request) -> web.Response:
    """Register a model trained elsewhere: a signed artifact (edgeloop model pack), verified here."""
    store = request.app[STORE]
    data = await request.read()
    try:
        art = unpack(data)
        art.verify(request.app[SIGNING_KEY].public_key())
    except EdgeloopError as exc:
        raise _error(web.HTTPBadRequest, f"artifact: {exc}") from exc
    version = art.manifest.version
    if await asyncio.to_thread(store.model, version):
        raise _error(web.HTTPConflict, f"model version {version!r} is already registered")
    await asyncio.to_thread(store.add_model, version, art.manifest.parent, data, b"", dict(art.manifest.metrics), 0)
    log.info("registered %s (%d bytes), trained elsewhere", version, len(data))
    return web.json_response({"version": version, "artifact_sha256": hashlib.sha256(data).hexdigest(),
                              "artifact_size": len(data)}, status=201)


async def post_selection(request: web.Request) -> web.Response:
    store = request.app[STORE]
    body = await _json(request)
    budget, strategy = body.get("budget"), body.get("strategy", "uncertainty")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 0:
        raise _error(web.HTTPBadRequest, "budget: expected a non-negative integer")
    if strategy not in selection.STRATEGIES:
        raise _error(web.HTTPBadRequest, f"strategy: expected one of {', '.join(selection.STRATEGIES)}")
    dedup = body.get("dedup_threshold", selection.NEAR_DUPLICATE)
    if not isinstance(dedup, (int, float)) or isinstance(dedup, bool) or not 0.0 <= dedup < 1.0:
        raise _error(web.HTTPBadRequest, "dedup_threshold: expected a cosine distance in [0, 1)")
    chosen, pool = await asyncio.to_thread(selection.select_in, store, budget, strategy, float(dedup))
    await asyncio.to_thread(store.mark_queued, chosen)
    return web.json_response({"selected": list(chosen), "pool": pool})


async def post_reports(request: web.Request) -> web.Response:
    """{"relay_id", "site", "devices": [{"device_id", "status", "model_version", "stats", "facts",
    "last_error"}]} -> {"stored": n}. The whole report validates before anything is stored."""
    if request.content_length and request.content_length > MAX_REPORT_BYTES:
        raise _error(web.HTTPRequestEntityTooLarge, f"report exceeds {MAX_REPORT_BYTES} bytes")
    body = await _json(request)
    try:
        report = RelayReport.from_json(body)
    except TooLarge as exc:
        raise _error(web.HTTPRequestEntityTooLarge, str(exc)) from exc
    except ProtocolError as exc:
        raise _error(web.HTTPBadRequest, str(exc)) from exc
    _check_binding(request, report.site, report.relay_id)
    if request[CALLER].role == "relay":
        await _check_devices(request, report)
    return web.json_response({"stored": await asyncio.to_thread(request.app[ROLLOUTS].record, report)})


async def get_devices(request: web.Request) -> web.Response:
    """?site=S (optional) -> {"devices": [the latest report of each device, stale ones offline]}."""
    site = _site_param(request)
    return web.json_response({"devices": await asyncio.to_thread(request.app[ROLLOUTS].devices, site)})


async def _rollout_call(fn, *args):
    """Run a Rollouts verb off the event loop; its errors become 400, 404 and 409 answers."""
    try:
        return await asyncio.to_thread(fn, *args)
    except ConfigError as exc:
        raise _error(web.HTTPBadRequest, str(exc)) from exc
    except RolloutNotFound as exc:
        raise _error(web.HTTPNotFound, str(exc)) from exc
    except RolloutConflict as exc:
        raise _error(web.HTTPConflict, str(exc)) from exc


async def post_rollout(request: web.Request) -> web.Response:
    body = await _json(request)
    try:
        req = RolloutRequest.from_json(body)
    except ConfigError as exc:
        raise _error(web.HTTPBadRequest, str(exc)) from exc
    return web.json_response(await _rollout_call(request.app[ROLLOUTS].start, req), status=201)


async def get_rollouts(request: web.Request) -> web.Response:
    try:
        limit = int(request.query["limit"]) if "limit" in request.query else None
    except ValueError as exc:
        raise _error(web.HTTPBadRequest, "limit: expected an integer") from exc
    if limit is not None and not 1 <= limit <= 10_000:
        raise _error(web.HTTPBadRequest, "limit: expected an integer from 1 to 10000")
    return web.json_response({"rollouts": await _rollout_call(request.app[ROLLOUTS].recent, limit)})


async def get_rollout(request: web.Request) -> web.Response:
    return web.json_response(await _rollout_call(request.app[ROLLOUTS].detail, request.match_info["rollout_id"]))


async def post_rollout_action(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    if action not in Rollouts.ACTIONS:
        raise _error(web.HTTPNotFound, f"no rollout action {action!r} (use {', '.join(Rollouts.ACTIONS)})")
    ro = request.app[ROLLOUTS]
    return web.json_response(await _rollout_call(getattr(ro, action), request.match_info["rollout_id"]))


async def rollout_controller(app: web.Application):
    """Judge running rollouts every ROLLOUT_PERIOD seconds while the app runs."""
    ro, period = app[ROLLOUTS], app[ROLLOUT_PERIOD]
    stop = asyncio.Event()

    async def control():
        while not stop.is_set():
            try:
                await asyncio.to_thread(ro.tick)
            except Exception:  # noqa: BLE001 - a locked or full disk: log it, the next pass retries
                log.exception("rollout controller pass failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), period)

    task = asyncio.create_task(control())
    yield
    # Let a pass in progress finish (its thread cannot be cancelled) so its writes land before the store closes.
    stop.set()
    try:
        await asyncio.wait_for(task, 30)
    except asyncio.TimeoutError:
        log.warning("the rollout controller did not stop in 30 s; cancelled")


async def get_live(request: web.Request) -> web.Response:
    """Production accuracy from the labeled audit stream per site and device class (Wilson 95 %
    intervals), and the drift alarms."""
    return web.json_response(await asyncio.to_thread(monitor.live_view, request.app[STORE]))


async def get_drift(request: web.Request) -> web.Response:
    """{"alarms": [{"site", "kind", "reason", "figures", "model_version"}]}: empty when nothing drifted."""
    view = await asyncio.to_thread(monitor.live_view, request.app[STORE])
    return web.json_response({"alarms": view["alarms"]})


async def get_audit(request: web.Request) -> web.Response:
    """?limit=N&who=NAME -> {"entries": [...]}: the newest writes first, allowed or refused."""
    try:
        limit = min(1000, max(1, int(request.query.get("limit", "100"))))
    except ValueError as exc:
        raise _error(web.HTTPBadRequest, "limit: expected an integer") from exc
    rows = await asyncio.to_thread(request.app[STORE].audit_log, limit, request.query.get("who"))
    return web.json_response({"entries": rows})


async def get_stats(request: web.Request) -> web.Response:
    store = request.app[STORE]
    return web.json_response({**await asyncio.to_thread(store.counts), "desired": await asyncio.to_thread(store.desired)})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def make_app(store: HubStore, golden: LabeledSet, tokens: list[str], signing_key, rollout_period_s: float = 1.0,
             device_stale_s: float = 30.0, jobs: dict | None = None,
             policy: "PolicyConfig | None" = None, open_access: bool = False,
             secure_cookies: bool = False, desired_ttl_s: float = statements.DEFAULT_TTL_S) -> web.Application:
    """The hub's app; its rollout controller runs every `rollout_period_s` while the app runs, its job
    runner trains what is queued (`jobs`: Jobs' keyword settings) and the policy acts, and a device not reported for
    `device_stale_s` counts as offline. `open_access`: callers without a token are admin (`serve --open`);
    `secure_cookies`: the sign-in cookie is Secure even over plain HTTP (TLS ends at a proxy)."""
    app = web.Application(middlewares=[json_errors, auth], client_max_size=MAX_MESSAGE_BYTES + (1 << 16))
    app[STORE], app[GOLDEN], app[TOKENS], app[OPEN] = store, golden, list(tokens), bool(open_access)
    app[REFUSALS] = Throttle(per_s=1.0, burst=20)
    app[LOGINS], app[SECURE_COOKIES] = Throttle(per_s=0.2, burst=10), bool(secure_cookies)
    app[SIGNING_KEY] = signing_key
    app[DESIRED_TTL] = float(desired_ttl_s)
    app[ROLLOUTS], app[ROLLOUT_PERIOD] = Rollouts(store, stale_s=device_stale_s), float(rollout_period_s)
    app[JOBS] = Jobs(store, golden, signing_key, **(jobs or {}))
    app[POLICY] = Policy(store, app[JOBS], app[ROLLOUTS], policy or PolicyConfig())
    app.cleanup_ctx.append(rollout_controller)
    app.cleanup_ctx.append(jobs_api.job_runner)
    r = app.router
    r.add_post("/api/v1/samples", post_samples)
    r.add_get("/api/v1/desired", get_desired)
    r.add_post("/api/v1/desired", post_desired)
    r.add_get("/api/v1/models", get_models)
    r.add_post("/api/v1/models", post_model)
    r.add_get("/api/v1/models/{version}/artifact", get_artifact)
    r.add_get("/api/v1/models/{version}/card", get_card)
    r.add_post("/api/v1/selection", post_selection)
    labeling.add_routes(r)
    jobs_api.add_routes(r)
    r.add_get("/api/v1/stats", get_stats)
    r.add_get("/api/v1/audit", get_audit)
    r.add_get("/api/v1/live", get_live)
    r.add_get("/api/v1/drift", get_drift)
    campaigns_api.add_routes(r)
    r.add_post("/api/v1/reports", post_reports)
    r.add_get("/api/v1/devices", get_devices)
    r.add_post("/api/v1/rollouts", post_rollout)
    r.add_get("/api/v1/rollouts", get_rollouts)
    r.add_get("/api/v1/rollouts/{rollout_id}", get_rollout)
    r.add_post("/api/v1/rollouts/{rollout_id}/{action}", post_rollout_action)
    pages.add_routes(r)
    r.add_get("/health", health)
    r.add_get("/openapi.json", get_openapi)
    build_openapi(app)  # every route must be described: fail at start, not when someone asks
    return app
