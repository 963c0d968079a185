"""The hub's OpenAPI 3.1 document, built from the app's own router so that it cannot drift.

Each route is described in `SUMMARIES`; `build(app)` walks the router and fails loudly (KeyError)
when a route has no description, and the test checks that every described route exists.
"""

from __future__ import annotations

import re

from aiohttp import web

# (method, path) -> (summary, request content type or None)
SUMMARIES: dict[tuple[str, str], tuple[str, str | None]] = {
    ("POST", "/api/v1/samples"): ("Ingest a batch of candidates (msgpack SampleBatch), idempotent by sample_id",
                                  "application/msgpack"),
    ("GET", "/api/v1/desired"): ("The site's default model, per-device rollout assignments, models it needs", None),
    ("POST", "/api/v1/desired"): ("Set the fleet's desired model at once (no stages)", "application/json"),
    ("GET", "/api/v1/models"): ("The model registry and the desired version", None),
    ("POST", "/api/v1/models"): ("Register a signed artifact trained elsewhere", "application/octet-stream"),
    ("GET", "/api/v1/models/{version}/artifact"): ("The signed model artifact (HTTP Range supported)", None),
    ("GET", "/api/v1/models/{version}/card"): ("The model card: data, settings, metrics per slice, calibration, gate",
                                               None),
    ("POST", "/api/v1/selection"): ("Queue the best K unlabeled samples for labeling", "application/json"),
    ("GET", "/api/v1/project"): ("The project's task (classify or detect) and class names", None),
    ("GET", "/api/v1/label-queue"): ("What waits for a label, best first (with image width/height, model boxes, "
                                     "label)", None),
    ("GET", "/api/v1/samples/{sample_id}/image"): ("A sample's JPEG", None),
    ("GET", "/api/v1/samples/{sample_id}"): ("One sample: prediction, top classes, reasons, the model's boxes, image "
                                             "width/height, its label (class or boxes)", None),
    ("GET", "/api/v1/samples/{sample_id}/similar"): ("A sample's nearest neighbours at the hub (?k=N)", None),
    ("POST", "/api/v1/labels"): ("Store labels by sample id: class indices (labels), boxes in image pixels "
                                 "[{class, xyxy}] ([] = no objects), ambiguous marks", "application/json"),
    ("GET", "/api/v1/labels"): ("Every label (class index or boxes), and the samples marked ambiguous (?source=S)",
                                None),
    ("DELETE", "/api/v1/labels/{sample_id}"): ("Undo a label or an ambiguous mark: the sample queues again", None),
    ("POST", "/api/v1/train"): ("Queue a training job (its trainer, epochs, seed...): 202 and the job",
                                "application/json"),
    ("GET", "/api/v1/jobs"): ("Training jobs, newest first: state, progress, result or error", None),
    ("GET", "/api/v1/jobs/{job_id}"): ("One job: state, progress, the trainer's log tail, the result or error", None),
    ("POST", "/api/v1/jobs/{job_id}/cancel"): ("Cancel a job (a running one once its trainer has stopped)", None),
    ("GET", "/api/v1/policy"): ("The automatic loop: its settings, whether it is paused, its last action", None),
    ("POST", "/api/v1/policy"): ("Pause or resume the automatic loop: {\"paused\": true}", "application/json"),
    ("GET", "/api/v1/stats"): ("Counts for dashboards", None),
    ("GET", "/api/v1/live"): ("Production accuracy per site and device class from the audit stream (Wilson 95 %)",
                              None),
    ("GET", "/api/v1/drift"): ("Drift alarms naming their site (accuracy drop; embeddings unlike the training data)",
                               None),
    ("GET", "/api/v1/audit"): ("The audit log: every write, who made it, its status (?who=NAME&limit=N)", None),
    ("POST", "/api/v1/campaigns"): ("Start a campaign: find more frames like these samples", "application/json"),
    ("GET", "/api/v1/campaigns"): ("The active campaigns", None),
    ("DELETE", "/api/v1/campaigns/{campaign_id}"): ("End a campaign now (relays drop it at their next poll)", None),
    ("POST", "/api/v1/reports"): ("Relays report the latest state of their devices", "application/json"),
    ("GET", "/api/v1/devices"): ("The latest state of each device", None),
    ("POST", "/api/v1/rollouts"): ("Start a staged rollout (shadow, canary, full) with gates", "application/json"),
    ("GET", "/api/v1/rollouts"): ("Every rollout, newest first", None),
    ("GET", "/api/v1/rollouts/{rollout_id}"): ("One rollout with live progress per stage and per relay", None),
    ("POST", "/api/v1/rollouts/{rollout_id}/{action}"): ("pause, resume, abort or rollback a rollout", None),
    ("GET", "/health"): ("Liveness (no token)", None),
    ("GET", "/openapi.json"): ("This document (no token)", None),
}
PUBLIC = {"/health", "/openapi.json"}
# Success answers other than 200.
OTHER_SUCCESS = {("GET", "/api/v1/desired"): {"204": {"description": "no model to run yet"}},
                 ("POST", "/api/v1/models"): {"201": {"description": "registered"}},
                 ("POST", "/api/v1/rollouts"): {"201": {"description": "started"}},
                 ("POST", "/api/v1/train"): {"202": {"description": "queued"}},
                 ("GET", "/api/v1/models/{version}/artifact"): {"206": {"description": "the requested range"}}}


def routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves (HEAD is implied by GET)."""
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        # The API only: pages (/, /label, /login, /models/...) and static files are for people.
        if route.method != "HEAD" and path and (path.startswith("/api/") or path in PUBLIC):
            out.add((route.method, path))
    return out


def build(app: web.Application) -> dict:
    paths: dict[str, dict] = {}
    for method, path in sorted(routes(app)):
        summary, ctype = SUMMARIES[(method, path)]
        op: dict = {"summary": summary, "responses": {"200": {"description": "success"},
                                                      **OTHER_SUCCESS.get((method, path), {}),
                                                      "4XX": {"description": "the error, as {\"error\": \"...\"}"}}}
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in re.findall(r"{(\w+)}", path)]
        if params:
            op["parameters"] = params
        if ctype:
            op["requestBody"] = {"required": True, "content": {ctype: {}}}
        op["security"] = [] if path in PUBLIC else [{"bearer": []}]
        paths.setdefault(path, {})[method.lower()] = op
    return {"openapi": "3.1.0",
            "info": {"title": "edgeloop hub", "version": "1",
                     "description": "Ingest, labeling, training, registry and staged rollouts of an edgeloop fleet."},
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearer": []}], "paths": paths}


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(build(request.app))
