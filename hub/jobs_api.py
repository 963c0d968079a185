"""The API of training jobs, and the runner that works through them while the hub runs.

    POST /api/v1/train                  {"epochs": 12, "trainer": "command:...", ...} -> 202 the queued job
    GET  /api/v1/jobs                   {"jobs": [...]}: the newest first
    GET  /api/v1/jobs/{job_id}          state, progress, the log's tail, the result or the error
    POST /api/v1/jobs/{job_id}/cancel   stop it (a queued job at once, a running one once its trainer stops)
    GET  /api/v1/policy                 the automatic loop's settings and state (paused, last action)
    POST /api/v1/policy                 {"paused": true | false}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from .training.jobs import JobNotFound, Jobs, check_settings
from .webutil import CALLER, JOBS, POLICY, error, read_json

log = logging.getLogger("edgeloop.hub")
RUNNER_PERIOD_S = 1.0


async def post_train(request: web.Request) -> web.Response:
    body = await read_json(request) if request.can_read_body else {}
    if not isinstance(body, dict):
        raise error(web.HTTPBadRequest, "expected a JSON object of training settings")
    try:
        settings = check_settings(body)
    except ValueError as exc:
        raise error(web.HTTPBadRequest, str(exc)) from exc
    job = await asyncio.to_thread(request.app[JOBS].submit, settings, request[CALLER].name)
    return web.json_response(job, status=202, headers={"Location": f"/api/v1/jobs/{job['job_id']}"})


async def get_jobs(request: web.Request) -> web.Response:
    return web.json_response({"jobs": await asyncio.to_thread(request.app[JOBS].list)})


async def _job_call(fn, job_id: str) -> web.Response:
    try:
        return web.json_response(await asyncio.to_thread(fn, job_id))
    except JobNotFound as exc:
        raise error(web.HTTPNotFound, str(exc)) from exc


async def get_job(request: web.Request) -> web.Response:
    return await _job_call(request.app[JOBS].get, request.match_info["job_id"])


async def post_cancel(request: web.Request) -> web.Response:
    return await _job_call(request.app[JOBS].cancel, request.match_info["job_id"])


async def get_policy(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(request.app[POLICY].view))


async def post_policy(request: web.Request) -> web.Response:
    body = await read_json(request)
    if set(body) != {"paused"} or not isinstance(body["paused"], bool):
        raise error(web.HTTPBadRequest, 'expected {"paused": true} or {"paused": false}')
    return web.json_response(await asyncio.to_thread(request.app[POLICY].pause, body["paused"], request[CALLER].name))


async def job_runner(app: web.Application):
    """Run queued jobs one at a time while the app runs; at start, fail the jobs a dead hub left running."""
    jobs: Jobs = app[JOBS]
    stop = asyncio.Event()
    await asyncio.to_thread(jobs.reap)

    policy = app[POLICY]

    async def run():
        while not stop.is_set():
            try:
                await asyncio.to_thread(policy.tick)
            except Exception:  # noqa: BLE001 - as below: the next pass retries
                log.exception("policy pass failed")
            try:
                done = await asyncio.to_thread(jobs.run_next)
            except Exception:  # noqa: BLE001 - a locked or full disk: log it, the next pass retries
                log.exception("job runner pass failed")
                done = None
            if done is None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), RUNNER_PERIOD_S)

    task = asyncio.create_task(run())
    yield
    stop.set()
    # A job in progress runs in a thread that cannot be cancelled; cancel its trainer and let it end.
    for job in await asyncio.to_thread(jobs.list, 5, ("running",)):
        await asyncio.to_thread(jobs.cancel, job["job_id"])
    try:
        await asyncio.wait_for(task, 30)
    except asyncio.TimeoutError:
        log.warning("the job runner did not stop in 30 s")


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_post("/api/v1/train", post_train)
    r.add_get("/api/v1/jobs", get_jobs)
    r.add_get("/api/v1/jobs/{job_id}", get_job)
    r.add_post("/api/v1/jobs/{job_id}/cancel", post_cancel)
    r.add_get("/api/v1/policy", get_policy)
    r.add_post("/api/v1/policy", post_policy)
