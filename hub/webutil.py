"""What the hub's API and its pages share: the app's keys, JSON errors, and who may come in.

Machines send `Authorization: Bearer <token>`. People sign in once at /login with the same kind of
token; their cookie then holds a session id (never the token: a stolen cookie dies with the session,
at sign-out or after SESSION_TTL_S), HttpOnly, SameSite=Strict, and Secure over HTTPS (or with
`serve --secure-cookies` behind a TLS proxy). The pages' scripts use the API with it. A write made
with the cookie must also look like our own page's: a JSON body (a form or `text/plain` post from
another site is refused with 415) and, when the browser says, from this origin (`Sec-Fetch-Site`,
`Origin`): 403 otherwise. (OWASP's defence in depth on top of SameSite.)
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from edgeloop.shared.protocol import MAX_MESSAGE_BYTES

from .auth import ANONYMOUS, Caller, allowed, token_hash
from .training.golden import LabeledSet
from .training.jobs import Jobs
from .rollouts import Rollouts
from .store import HubStore

STORE = web.AppKey("store", HubStore)
GOLDEN = web.AppKey("golden", LabeledSet)
TOKENS = web.AppKey("tokens", list)
OPEN = web.AppKey("open", bool)  # `hub serve --open`: no sign-in, anyone is admin (loopback only)
JOBS = web.AppKey("jobs", Jobs)
POLICY = web.AppKey("policy", object)  # training.policy.Policy (imported lazily: it loads the selection code)
SIGNING_KEY = web.AppKey("signing_key", object)
ROLLOUTS = web.AppKey("rollouts", Rollouts)
ROLLOUT_PERIOD = web.AppKey("rollout_period", float)
CALLER = web.RequestKey("caller", Caller)  # who is calling, set by `auth`

SECURE_COOKIES = web.AppKey("secure_cookies", bool)  # `serve --secure-cookies`: HTTPS ends at a proxy
LOGINS = web.AppKey("logins", object)  # a Throttle of failed sign-ins per remote address

COOKIE = "edgeloop_session"
SESSION_TTL_S = 12 * 3600
log = logging.getLogger("edgeloop.hub")


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
    except ConnectionResetError:  # the client went away mid-request (a relay restarting): nothing to answer
        log.info("%s %s: the client went away", request.method, request.path)
        raise
    except Exception:  # a bug: logged with its traceback, answered as JSON like everything else
        log.exception("%s %s failed", request.method, request.path)
        raise error(web.HTTPInternalServerError, "internal error; see the hub's log") from None


def _is_page(path: str) -> bool:
    return path in ("/", "/label") or path.startswith("/models/")


def _given(request: web.Request) -> tuple[str, str]:
    """("bearer", token), ("cookie", session id) or ("", "")."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return "bearer", header[7:]
    sid = request.cookies.get(COOKIE, "")
    return ("cookie", sid) if sid else ("", "")


def identify(app: web.Application, token: str) -> Caller | None:
    """The caller a token belongs to: an admin token given at start, or a live token in the store."""
    return _by_hash(app, token_hash(token)) if token else None


def _by_hash(app: web.Application, hashed: str) -> Caller | None:
    if any(hmac.compare_digest(hashed, token_hash(t)) for t in app[TOKENS]):
        return Caller("admin", "admin")
    row = app[STORE].token(hashed)
    return Caller(row["name"], row["role"], row["relay_id"], tuple(row["sites"])) if row else None


def session_caller(app: web.Application, session_id: str) -> Caller | None:
    """Who a sign-in session is: its token's holder while both the session and the token live."""
    hashed = app[STORE].session_token(token_hash(session_id)) if session_id else None
    return _by_hash(app, hashed) if hashed else None


def _caller(app: web.Application, kind: str, value: str) -> Caller | None:
    """Who a request's token or session says it is; on an --open hub, anyone else is ANONYMOUS (admin).
    Whether the hub is open is decided at start, never from whether tokens are left: revoking the
    last one opens nothing."""
    caller = identify(app, value) if kind == "bearer" else session_caller(app, value) if kind == "cookie" else None
    return caller or (ANONYMOUS if app[OPEN] else None)


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def _loopback_host(request: web.Request) -> bool:
    host = urlsplit(f"//{request.host}").hostname or ""
    return host in LOOPBACK_NAMES or host.endswith(".localhost")


def cross_site(request: web.Request) -> web.HTTPException | None:
    """The refusal of a write that came with the sign-in cookie but does not look like our own page's
    (415: not a JSON body; 403: the browser says it comes from another site or origin), or None."""
    if request.can_read_body and request.content_type != "application/json":
        return error(web.HTTPUnsupportedMediaType,
                     f"a signed-in write takes an application/json body, not {request.content_type:.100}")
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return error(web.HTTPForbidden, f"a signed-in write from another site (Sec-Fetch-Site: {fetch_site:.40})")
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        return error(web.HTTPForbidden, f"a signed-in write from another origin ({origin:.100})")
    return None


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


@web.middleware
async def auth(request: web.Request, handler):
    """Who is calling (request[CALLER]), and may they? /api/ and pages take a bearer token or the
    sign-in cookie: unknown -> 401 (pages: to /login), a role without the right -> 403. Every write
    to the API, allowed or refused, goes to the audit log with who made it."""
    app, path = request.app, request.path
    if not (path.startswith("/api/") or _is_page(path)):
        return await handler(request)
    kind, value = _given(request)
    caller = await asyncio.to_thread(_caller, app, kind, value)
    write = path.startswith("/api/") and request.method not in ("GET", "HEAD", "OPTIONS")
    status = 500
    try:
        if caller is None:
            if _is_page(path):
                raise web.HTTPFound(f"/login?{urlencode({'next': request.path_qs})}")
            raise error(web.HTTPUnauthorized, "missing or wrong bearer token")
        if caller is ANONYMOUS and not _loopback_host(request):
            # An --open hub answers only to its loopback names: a page elsewhere that rebinds a DNS
            # name to 127.0.0.1 is refused here, as at the agent's local API.
            raise error(web.HTTPForbidden, f"an --open hub answers only to loopback names, not {request.host:.100}")
        # A browser sends the cookie by itself, and on an --open hub anyone is admin with no credential
        # at all: either way a write must look like our own page's.
        if write and (kind == "cookie" or caller is ANONYMOUS) and (refusal := cross_site(request)) is not None:
            raise refusal
        if not allowed(caller.role, request.method, _route(request) if path.startswith("/api/") else "/pages"):
            raise error(web.HTTPForbidden, f"{caller.name} ({caller.role}) may not {request.method} {_route(request)}")
        request[CALLER] = caller
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        if write:
            await _audit(app, caller, request.method, path, status)


MAX_AUDIT_PATH = 200  # characters of a path kept in the audit log
REFUSALS = web.AppKey("refusals", object)  # a Throttle: strangers' refused writes logged per second


async def _audit(app: web.Application, caller: Caller | None, method: str, path: str, status: int) -> None:
    """Every write of a known caller goes to the audit log. A stranger's (no valid token) is logged
    within a budget (REFUSALS): anyone can send those, and the log must not be theirs to fill; the
    next one logged says how many were left out. Paths are cut to MAX_AUDIT_PATH characters."""
    detail = ""
    if caller is None:
        if not app[REFUSALS].take():
            return
        skipped = app[REFUSALS].refused_since()
        detail = f"{skipped} more refused writes since the last one logged were not logged" if skipped else ""
    who = caller or Caller("unknown", "")
    cut = path if len(path) <= MAX_AUDIT_PATH else path[:MAX_AUDIT_PATH] + f"... ({len(path)} characters)"
    await asyncio.to_thread(app[STORE].audit, who.name, who.role, method, cut, status, detail)


async def read_json(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(web.HTTPBadRequest, f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # json's decoder recurses once per nesting level
        raise error(web.HTTPBadRequest, "body is nested too deeply") from exc
    if not isinstance(body, dict):
        raise error(web.HTTPBadRequest, "body must be a JSON object")
    try:
        # JSON may escape lone surrogates ("\ud800"), which no UTF-8 store can hold.
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise error(web.HTTPBadRequest, "body holds a lone surrogate (\\ud800-\\udfff): not valid Unicode") from exc
    return body
