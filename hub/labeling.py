"""The labeling API: the project, the queue, samples, labels in and out, undo, and "more like this".

    GET    /api/v1/project                   {"task": "classify" | "detect", "classes": [name, ...]}
    GET    /api/v1/label-queue?limit=N       what waits for a label, best first
    GET    /api/v1/samples/{id}              one sample: prediction, top classes, reasons, boxes
    GET    /api/v1/samples/{id}/image        the JPEG
    GET    /api/v1/samples/{id}/similar?k=N  its nearest neighbours at the hub (embedding distance)
    POST   /api/v1/labels                    {"labels": {id: class index}} (classification projects),
                                             {"boxes": {id: [{"class": index or name, "xyxy": [x1, y1,
                                             x2, y2]}, ...]}} (detection projects; [] = no objects), and
                                             "ambiguous": [id]: recorded as the caller's (an admin token
                                             may name a "source", e.g. "oracle")
    GET    /api/v1/labels?source=S           every label (with `boxes`: list, or null for a class label),
                                             and the samples marked ambiguous
    DELETE /api/v1/labels/{id}               undo a label or an ambiguous mark: back to the queue
                                             (a labeler undoes only their own)

A labeler's POST may not replace or mark ambiguous a sample someone else labeled (403, nothing stored):
overruling another person is an engineer's or admin's call, as an undo is.

A sample (and each queue item) carries "width" and "height", its stored image's pixels (null when the
hub cannot read the image's header), "detections", the model's boxes as pre-labels (normalised x1, y1,
x2, y2, score, class), and "label": null, {"class": i, "source"} or {"boxes": [...], "source"}.

Boxes are in pixels of the stored image; the checks are hub/project.py's (a coordinate at most 1 px
beyond an edge is clipped to it, further out is refused). A request is validated whole before anything
is stored; a refusal is a 400 naming the field (`boxes.<id>[2].xyxy: box [...] lies outside the 320x240
image`).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from edgeloop.shared.errors import ProtocolError
from edgeloop.shared.protocol import check_id
from edgeloop.shared.sampling.policy import is_feedback

from .project import Project, project
from .webutil import CALLER, STORE, error, read_json

TOP_CLASSES = 3
MAX_SIMILAR = 100


def public(row: dict) -> dict:
    """A sample as the API shows it (no image, no raw arrays)."""
    probs = row["probs"]
    top = sorted(range(len(probs)), key=lambda i: -float(probs[i]))[:TOP_CLASSES]
    det = row.get("detections")
    return {k: row[k] for k in ("sample_id", "device_id", "camera_id", "site", "captured_at", "model_version",
                                "predicted", "confidence", "reasons", "tags", "status", "priority")} | {
        "slice": "audit" if row.get("audit") else "feedback" if is_feedback(row["reasons"]) else "selected",
        "top": [[int(i), round(float(probs[i]), 4)] for i in top],
        # Boxes in normalised frame coordinates: x1, y1, x2, y2, score, class.
        "detections": [] if det is None else [[round(float(v), 4) for v in d] for d in det],
        "width": row.get("width"), "height": row.get("height"), "label": row.get("label"),
    }


def _limit(request: web.Request, name: str, default: int, top: int) -> int:
    try:
        return min(top, max(1, int(request.query.get(name, str(default)))))
    except ValueError as exc:
        raise error(web.HTTPBadRequest, f"{name}: expected an integer") from exc


async def _sample(request: web.Request) -> dict:
    row = await asyncio.to_thread(request.app[STORE].sample, request.match_info["sample_id"])
    if not row:
        raise error(web.HTTPNotFound, f"no sample {request.match_info['sample_id']!r} at the hub")
    return row


async def get_project(request: web.Request) -> web.Response:
    p = await asyncio.to_thread(project, request.app[STORE])
    return web.json_response({"task": p.task, "classes": list(p.classes)})


async def get_label_queue(request: web.Request) -> web.Response:
    rows = await asyncio.to_thread(request.app[STORE].label_queue, _limit(request, "limit", 100, 1000))
    return web.json_response({"items": [public(r) for r in rows]})


async def get_sample(request: web.Request) -> web.Response:
    return web.json_response(public(await _sample(request)))


async def get_image(request: web.Request) -> web.Response:
    row = await _sample(request)
    body = await asyncio.to_thread(request.app[STORE].blobs.get, row["image_sha256"])
    return web.Response(body=body, content_type="image/jpeg")


async def get_similar(request: web.Request) -> web.Response:
    store, sid = request.app[STORE], request.match_info["sample_id"]
    k = _limit(request, "k", 12, MAX_SIMILAR)
    try:
        near = await asyncio.to_thread(store.similar, sid, k)
    except KeyError as exc:
        raise error(web.HTTPNotFound, f"no sample {sid!r} with an embedding at the hub") from exc
    items = []
    for other, dist in near:
        row = await asyncio.to_thread(store.sample, other)
        items.append(public(row) | {"distance": round(dist, 4)})
    return web.json_response({"sample_id": sid, "items": items})


MAX_PROBLEMS = 5  # named in one 400 answer; the rest are counted


def _refuse(problems: list[str]) -> web.HTTPException:
    more = f"; and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
    return error(web.HTTPBadRequest, "; ".join(problems[:MAX_PROBLEMS]) + more)


def _check_shapes(labels, boxes, ambiguous) -> None:
    """The request's parts have the right types and do not overlap (before the project is asked)."""
    if not isinstance(labels, dict):
        raise error(web.HTTPBadRequest, "labels: expected an object of sample_id -> class index")
    if not isinstance(boxes, dict):
        raise error(web.HTTPBadRequest, "boxes: expected an object of sample_id -> list of boxes")
    if not isinstance(ambiguous, list) or not all(isinstance(i, str) for i in ambiguous):
        raise error(web.HTTPBadRequest, "ambiguous: expected a list of sample ids")
    if both := sorted(set(labels) & set(ambiguous)):
        raise error(web.HTTPBadRequest, f"ambiguous: {both[0]!r} is also given a label")
    if both := sorted(set(boxes) & set(ambiguous)):
        raise error(web.HTTPBadRequest, f"ambiguous: {both[0]!r} is also given boxes")
    if both := sorted(set(labels) & set(boxes)):
        raise error(web.HTTPBadRequest, f"boxes.{both[0]}: also given a class label; a sample takes one or the other")
    if not labels and not boxes and not ambiguous:
        raise error(web.HTTPBadRequest, "expected labels, ambiguous or both (or boxes, in a detection project)")


def _check_for(proj: Project, labels: dict, boxes: dict, sizes: dict) -> dict[str, list[dict]]:
    """Labels fit the project (classification: class indices; detection: boxes inside each image) ->
    the boxes to store, for the samples the hub holds. Raises the 400 naming every field refused."""
    if labels and proj.task == "detect":
        raise error(web.HTTPBadRequest, f"labels: this is a detection project ({proj.describe()}): "
                                        "send boxes per sample, not class labels")
    if boxes and proj.task == "classify":
        raise error(web.HTTPBadRequest, f"boxes: this is a classification project ({proj.describe()}): "
                                        "send a class index per sample in labels, not boxes")
    for sid, label in labels.items():
        if proj.check_class(f"labels.{sid}", label, names=False)[1]:
            raise error(web.HTTPBadRequest, f"labels.{sid}: expected a class index from 0 to "
                                            f"{len(proj.classes) - 1} ({proj.describe()}), got {label!r:.40}")
    clean, problems = {}, []
    for sid, given in boxes.items():
        if sid not in sizes:  # not at the hub: reported as unknown, like a class label's
            continue
        ok, found = proj.check_boxes(f"boxes.{sid}", given, sizes[sid])
        problems += found
        if ok is not None:
            clean[sid] = ok
    if problems:
        raise _refuse(problems)
    return clean


async def post_labels(request: web.Request) -> web.Response:
    body = await read_json(request)
    caller, store = request[CALLER], request.app[STORE]
    labels, boxes, ambiguous = body.get("labels", {}), body.get("boxes", {}), body.get("ambiguous", [])
    # Attribution cannot be forged: a person's labels are theirs; only an admin token names a source.
    source = body.get("source", "human" if caller.name in ("admin", "anonymous") else caller.name) \
        if caller.role == "admin" else caller.name
    _check_shapes(labels, boxes, ambiguous)
    try:
        check_id(source, "source")
    except ProtocolError as exc:
        raise error(web.HTTPBadRequest, str(exc)) from exc
    if caller.role not in ("admin", "engineer"):
        await _check_owner(store, caller, [*labels, *boxes, *ambiguous])
    proj = await asyncio.to_thread(project, store)
    sizes = await asyncio.to_thread(store.sample_sizes, boxes) if boxes else {}
    clean = _check_for(proj, labels, boxes, sizes)
    done = await asyncio.to_thread(store.add_labels, labels, source) if labels else []
    boxed = await asyncio.to_thread(store.add_box_labels, clean, source) if clean else []
    marked = await asyncio.to_thread(store.mark_ambiguous, ambiguous, source) if ambiguous else []
    unknown = sorted((set(labels) - set(done)) | (set(boxes) - set(boxed)) | (set(ambiguous) - set(marked)))
    return web.json_response({"labeled": len(done) + len(boxed), "ambiguous": len(marked), "unknown": unknown})


async def _check_owner(store, caller, sample_ids: list[str]) -> None:
    """403 when a labeler's request would replace or erase (ambiguous) someone else's label: as with
    an undo, only an engineer or admin may overrule another person."""
    theirs = {sid: src for sid, src in (await asyncio.to_thread(store.label_sources, sample_ids)).items()
              if src != caller.name}
    if theirs:
        sid = sorted(theirs)[0]
        more = f" (and {len(theirs) - 1} more)" if len(theirs) > 1 else ""
        raise error(web.HTTPForbidden, f"{caller.name} ({caller.role}) may change only their own labels; "
                                       f"{sid} was labeled by {theirs[sid]}{more}")


async def get_labels(request: web.Request) -> web.Response:
    store, source = request.app[STORE], request.query.get("source")
    rows = await asyncio.to_thread(store.labels, source)
    amb = await asyncio.to_thread(store.ambiguous)
    return web.json_response({"labels": rows, "ambiguous": [a for a in amb if source in (None, a["source"])]})


async def delete_label(request: web.Request) -> web.Response:
    sid, caller, store = request.match_info["sample_id"], request[CALLER], request.app[STORE]
    if caller.role not in ("admin", "engineer"):
        source = await asyncio.to_thread(store.label_source, sid)
        if source is not None and source != caller.name:
            raise error(web.HTTPForbidden, f"{caller.name} ({caller.role}) may undo only their own labels; "
                                           f"{sid} was labeled by {source}")
    was = await asyncio.to_thread(store.unlabel, sid)
    if was is None:
        await _sample(request)  # 404 when unknown
        raise error(web.HTTPConflict, f"sample {sid!r} has no label to undo")
    return web.json_response({"sample_id": sid, "was": was, "status": "queued"})


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/api/v1/project", get_project)
    r.add_get("/api/v1/label-queue", get_label_queue)
    r.add_get("/api/v1/samples/{sample_id}", get_sample)
    r.add_get("/api/v1/samples/{sample_id}/image", get_image)
    r.add_get("/api/v1/samples/{sample_id}/similar", get_similar)
    r.add_post("/api/v1/labels", post_labels)
    r.add_get("/api/v1/labels", get_labels)
    r.add_delete("/api/v1/labels/{sample_id}", delete_label)
