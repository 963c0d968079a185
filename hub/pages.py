"""The hub's pages for people, on the API's port: the dashboard at /, the labeling page at /label,
model cards at /models/{version}, and /login. Server-rendered (jinja2) with small scripts of our
own under /static: no build step, nothing fetched from the internet.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

import jinja2
from aiohttp import web

from . import monitor, plots
from .auth import token_hash
from .cards import ModelNotFound, model_card
from .project import project
from .rollouts import Rollouts
from .store import HubStore
from .training.policy import WHO as POLICY_WHO
from .webutil import COOKIE, JOBS, LOGINS, POLICY, ROLLOUTS, SECURE_COOKIES, SESSION_TTL_S, STORE, error, identify

HERE = Path(__file__).parent
ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                         undefined=jinja2.StrictUndefined)
MAX_DEVICE_ROWS = 200  # a big fleet's dashboard lists the first ones and says how many more


def render(name: str, **context) -> web.Response:
    return web.Response(text=ENV.get_template(name).render(**context), content_type="text/html")


# -- what the dashboard shows (pure: store and rollouts in, a dict out) --------------------------
def fleet_view(devices: list[dict], now: float) -> dict:
    """Relays (from their devices' reports) and agents, online or not, with their model versions."""
    relays: dict[str, dict] = {}
    for d in devices:
        r = relays.setdefault(d["relay_id"], {"relay_id": d["relay_id"], "site": d["site"], "devices": 0,
                                              "online": 0, "last_report_s": float("inf")})
        r["devices"] += 1
        r["online"] += d["status"] == "online"
        r["last_report_s"] = min(r["last_report_s"], now - d["updated_at"])
    versions: dict[str, int] = defaultdict(int)
    for d in devices:
        versions[d["model_version"] or "none"] += 1
    return {"relays": sorted(relays.values(), key=lambda r: r["relay_id"]),
            "agents_online": sum(d["status"] == "online" for d in devices), "agents": len(devices),
            "versions": dict(sorted(versions.items())), "devices": devices[:MAX_DEVICE_ROWS],
            "more_devices": max(0, len(devices) - MAX_DEVICE_ROWS)}


def funnel_view(devices: list[dict], hub: dict) -> list[dict]:
    """Frames seen -> kept on devices -> forwarded by relays -> selected for labeling -> labeled.
    Device figures are each agent's counts since it started (from its latest report)."""
    total = lambda key: int(sum(d["stats"].get(key, 0) for d in devices))  # noqa: E731
    steps = [("seen", "frames seen by agents", total("frames_seen")),
             ("kept", "kept on devices", total("kept")),
             ("forwarded", "forwarded by relays", hub["forwarded"]),
             ("selected", "selected for labeling", hub["selected"]),
             ("labeled", "labeled", hub["labeled"])]
    top = max(1, steps[0][2])
    return [{"key": k, "name": name, "n": n, "share": n / top} for k, name, n in steps]


def models_view(models: list[dict], desired: str | None) -> dict:
    """Accuracy per version, overall and per golden slice, as a table and a chart."""
    slices = sorted({s for m in models for s in (m["metrics"].get("per_slice") or {})})
    rows = []
    for m in models:
        met = m["metrics"]
        gate = met.get("gate") or {}
        cal = met.get("calibration") or {}
        # A detector's headline figure is COCO mAP@0.5 (its per_slice are mAP@0.5 too).
        rows.append({"version": m["version"], "parent": m["parent"], "accuracy": met.get("map50", met.get("accuracy")),
                     "per_slice": {s: (met.get("per_slice") or {}).get(s) for s in slices},
                     "labels": m["labels_total"], "desired": m["version"] == desired,
                     "gate": gate.get("passed"), "gate_reasons": gate.get("reasons", []),
                     "ece_before": cal.get("ece_before"), "ece_after": cal.get("ece_after")})
    series = {"overall": [r["accuracy"] for r in rows], **{s: [r["per_slice"][s] for r in rows] for s in slices}}
    chart = plots.line_chart([r["version"] for r in rows], series) if rows else ""
    return {"slices": slices, "rows": rows, "chart": chart}


def training_view(jobs: list[dict], policy: dict, actions: list[dict], now: float) -> dict:
    """The newest training jobs (state, progress, what came of them) and the policy's state and steps."""
    rows = []
    for j in jobs:
        result, progress = j.get("result") or {}, j.get("progress") or {}
        rows.append({"job_id": j["job_id"], "state": j["state"], "created_by": j["created_by"],
                     "trainer": (j.get("settings") or {}).get("trainer") or "the project's",
                     "progress": f"epoch {progress['epoch']} of {progress.get('of', '?')}" if progress else "",
                     "version": result.get("version"), "promoted": result.get("promoted"),
                     "error": j.get("error") or "", "age_s": now - (j.get("created_at") or now)})
    return {"jobs": rows, "policy": policy,
            "actions": [{"at_s": now - a["at"], "detail": a["detail"], "path": a["path"]} for a in actions]}


def dashboard_view(store: HubStore, rollouts: Rollouts, now: float | None = None, jobs=None, policy=None) -> dict:
    now = time.time() if now is None else now
    devices = rollouts.devices(None)
    hub = store.funnel()
    view = {"fleet": fleet_view(devices, now), "funnel": funnel_view(devices, hub), "hub": hub,
            "live": monitor.live_view(store),
            "models": models_view(store.models(), store.desired()), "rollouts": rollouts.recent(5),
            "campaigns": store.active_campaigns(), "training": None}
    if jobs is not None and policy is not None:
        view["training"] = training_view(jobs.list(8), policy.view(), store.audit_log(8, who=POLICY_WHO), now)
    return view


# -- handlers ------------------------------------------------------------------------------------
async def dashboard(request: web.Request) -> web.Response:
    app = request.app
    view = await asyncio.to_thread(dashboard_view, app[STORE], app[ROLLOUTS], None, app[JOBS], app[POLICY])
    return render("dashboard.html", page="dashboard", **view)


async def label_page(request: web.Request) -> web.Response:
    proj = await asyncio.to_thread(project, request.app[STORE])
    return render("label.html", page="label", labels=proj.classes)


async def model_page(request: web.Request) -> web.Response:
    try:
        card = await asyncio.to_thread(model_card, request.app[STORE], request.match_info["version"])
    except ModelNotFound as exc:
        raise error(web.HTTPNotFound, str(exc)) from exc
    return render("model.html", page="model", card=card)


async def login_page(request: web.Request) -> web.Response:
    """The sign-in form; /login?token=T signs in at once (the link `hub serve` prints at a first start)."""
    target = _local(request.query.get("next", "/"))
    if "token" in request.query:
        return await _sign_in(request, request.query["token"], target)
    return render("login.html", page="login", next=target, failed=False)


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    return await _sign_in(request, str(form.get("token", "")), _local(str(form.get("next", "/"))))


async def _sign_in(request: web.Request, token: str, target: str) -> web.Response:
    """A session for a person's token: the cookie holds its id, never the token. Failed attempts are
    throttled per remote address (429 past LOGINS' budget): a token cannot be guessed, but a hub
    should not be a free oracle for trying stolen or leaked ones in bulk."""
    app, remote = request.app, request.remote or ""
    if app[LOGINS].blocked(remote):
        resp = render("login.html", page="login", next=target, failed=True)
        resp.set_status(429)
        return resp
    caller = await asyncio.to_thread(identify, app, token)
    if caller is None or caller.role == "relay":  # a relay's token is for machines, not for pages
        app[LOGINS].take(remote)
        resp = render("login.html", page="login", next=target, failed=True)
        resp.set_status(401)
        return resp
    session = secrets.token_urlsafe(32)
    await asyncio.to_thread(app[STORE].add_session, token_hash(session), token_hash(token), SESSION_TTL_S)
    resp = web.HTTPFound(target)
    resp.set_cookie(COOKIE, session, httponly=True, samesite="Strict", path="/", max_age=SESSION_TTL_S,
                    secure=request.secure or app[SECURE_COOKIES])
    raise resp


async def logout(request: web.Request) -> web.Response:
    """End this browser's session (the token stays valid elsewhere) and go back to the sign-in form."""
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:  # another site cannot sign you out
        raise error(web.HTTPForbidden, f"sign-out from another origin ({origin:.100})")
    session = request.cookies.get(COOKIE)
    if session:
        await asyncio.to_thread(request.app[STORE].end_session, token_hash(session))
    resp = web.HTTPFound("/login")
    resp.del_cookie(COOKIE, path="/")
    raise resp


def _local(target: str) -> str:
    """Only a path on this hub: /login?next= must not send anyone elsewhere. Browsers drop tabs and
    newlines from a Location and read a backslash as a slash, so `/<tab>/evil` or `/<backslash>evil` is `//evil`,
    another host: a target with any of those, or with a scheme or host of its own, becomes /."""
    if not target.startswith("/") or any(c <= " " or c in "\\\x7f" for c in target):
        return "/"
    parts = urlsplit(target)
    return "/" if target.startswith("//") or parts.scheme or parts.netloc else target


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/", dashboard)
    r.add_get("/label", label_page)
    r.add_get("/models/{version}", model_page)
    r.add_get("/login", login_page)
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_static("/static", HERE / "static")
