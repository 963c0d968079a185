"""Campaigns ("find me more like this") at the hub: an engineer's write, within bounds.

    POST   /api/v1/campaigns                 {"sample_ids": [...], "threshold", "quota", "ttl_s"} -> the campaign
    GET    /api/v1/campaigns                 the active campaigns (relays set them on their agents)
    DELETE /api/v1/campaigns/{campaign_id}   end a campaign now

A campaign sends frames past every device's and relay's budget, so it is bounded: at most
MAX_ACTIVE at once (a relay carries at most protocol.MAX_ITEMS on its site's topic), a quota of at
most MAX_QUOTA per device and per relay, a threshold no wider than MAX_THRESHOLD (cosine distance:
2 would match every frame) and a life of at most MAX_TTL_S.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from .webutil import STORE, error, read_json

MAX_ACTIVE = 16
MAX_QUOTA = 1000
MAX_THRESHOLD = 0.5
MAX_TTL_S = 7 * 86400
MAX_EXEMPLARS = 64

log = logging.getLogger("edgeloop.hub")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_request(body: dict) -> tuple[list[str], float, int, float]:
    """A request's fields -> (sample_ids, threshold, quota, ttl_s); a 400 names the first bad one."""
    ids, threshold = body.get("sample_ids"), body.get("threshold", 0.15)
    quota, ttl = body.get("quota", 100), body.get("ttl_s", 86400)
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_EXEMPLARS or not all(isinstance(i, str) for i in ids):
        raise error(web.HTTPBadRequest, f"sample_ids: expected a list of 1 to {MAX_EXEMPLARS} sample ids")
    if not _number(threshold) or not 0 < threshold <= MAX_THRESHOLD:
        raise error(web.HTTPBadRequest, f"threshold: expected a cosine distance in (0, {MAX_THRESHOLD}]")
    if not isinstance(quota, int) or isinstance(quota, bool) or not 1 <= quota <= MAX_QUOTA:
        raise error(web.HTTPBadRequest, f"quota: expected a count from 1 to {MAX_QUOTA} (per device and per relay)")
    if not _number(ttl) or not 0 < ttl <= MAX_TTL_S:
        raise error(web.HTTPBadRequest, f"ttl_s: expected seconds up to {MAX_TTL_S} (a week)")
    return ids, float(threshold), quota, float(ttl)


async def post_campaign(request: web.Request) -> web.Response:
    """{"sample_ids": [...], "threshold": 0.15, "quota": 100, "ttl_s": 86400} -> the new campaign; 409
    when MAX_ACTIVE are running."""
    ids, threshold, quota, ttl = check_request(await read_json(request))
    try:
        camp = await asyncio.to_thread(request.app[STORE].add_campaign, ids, threshold, quota, ttl, MAX_ACTIVE)
    except OverflowError as exc:
        raise error(web.HTTPConflict, f"{exc}: end one first (DELETE /api/v1/campaigns/ID)") from exc
    except ValueError as exc:
        raise error(web.HTTPBadRequest, f"sample_ids: {exc}") from exc
    log.info("campaign %s: %d exemplars, threshold %.3f, quota %d", camp["campaign_id"], len(ids), threshold, quota)
    return web.json_response(camp)


async def get_campaigns(request: web.Request) -> web.Response:
    return web.json_response({"campaigns": await asyncio.to_thread(request.app[STORE].active_campaigns)})


async def delete_campaign(request: web.Request) -> web.Response:
    cid = request.match_info["campaign_id"]
    if not await asyncio.to_thread(request.app[STORE].end_campaign, cid):
        raise error(web.HTTPNotFound, f"no active campaign {cid!r}")
    log.info("campaign %s ended", cid)
    return web.json_response({"campaign_id": cid, "ended": True})


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_post("/api/v1/campaigns", post_campaign)
    r.add_get("/api/v1/campaigns", get_campaigns)
    r.add_delete("/api/v1/campaigns/{campaign_id}", delete_campaign)
