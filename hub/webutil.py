"""What the hub's API and its pages share: the app's keys, JSON errors, and who may come in.

Machines send `Authorization: Bearer <token>`. People sign in once at /login with the same kind of
token; it is kept in an HttpOnly, SameSite=Strict cookie, which the pages' scripts then use for the
API (SameSite=Strict: another site cannot make a browser send it, so no CSRF token is needed).
"""

from __future__ import annotations

import asyncio
import hmac
import json

from aiohttp import web

from edgeloop.shared.protocol import MAX_MESSAGE_BYTES

from .golden import LabeledSet
from .rollouts import Rollouts
from .store import HubStore

STORE = web.AppKey("store", HubStore)
GOLDEN = web.AppKey("golden", LabeledSet)
TOKENS = web.AppKey("tokens", list)
TRAIN_LOCK = web.AppKey("train_lock", asyncio.Lock)
SIGNING_KEY = web.AppKey("signing_key", object)
ROLLOUTS = web.AppKey("rollouts", Rollouts)
ROLLOUT_PERIOD = web.AppKey("rollout_period", float)

COOKIE = "edgeloop_token"


def error(status: type[web.HTTPException], message: str) -> web.HTTPException:
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


def token_ok(app: web.Application, given: str) -> bool:
    return any(hmac.compare_digest(given, t) for t in app[TOKENS])


def _is_page(path: str) -> bool:
    return path in ("/", "/label") or path.startswith("/models/")


@web.middleware
async def auth(request: web.Request, handler):
    """/api/: a bearer token or the sign-in cookie, else 401. Pages: the cookie, else to /login."""
    if request.app[TOKENS]:
        if request.path.startswith("/api/"):
            header = request.headers.get("Authorization", "")
            given = header[7:] if header.startswith("Bearer ") else request.cookies.get(COOKIE, "")
            if not token_ok(request.app, given):
                raise error(web.HTTPUnauthorized, "missing or wrong bearer token")
        elif _is_page(request.path) and not token_ok(request.app, request.cookies.get(COOKIE, "")):
            raise web.HTTPFound(f"/login?next={request.path_qs}")
    return await handler(request)


async def read_json(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(web.HTTPBadRequest, f"body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise error(web.HTTPBadRequest, "body must be a JSON object")
    return body
