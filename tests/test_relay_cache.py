"""The relay's model cache against a real HTTP server: resume with Range, verify, stay bounded."""

from __future__ import annotations

import asyncio
import hashlib
import os

import aiohttp
import pytest
from aiohttp import web

from edgeloop.relay.cache import ModelCache
from edgeloop.shared.errors import IntegrityError


async def serving(path, tmp_path):
    """A real aiohttp server on loopback; FileResponse honours Range like the hub's artifact route.
    Records the Range header of every request."""
    seen = []

    async def handler(request):
        seen.append(request.headers.get("Range"))
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/a", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/a", seen


def test_a_partial_download_resumes_with_range_and_is_verified(tmp_path):
    data = os.urandom(300_000)
    src = tmp_path / "artifact"
    src.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    cache = ModelCache(tmp_path / "cache")
    (tmp_path / "cache" / f"{sha}.part").write_bytes(data[:120_000])  # a download cut off earlier

    async def go():
        runner, url, seen = await serving(src, tmp_path)
        try:
            async with aiohttp.ClientSession() as http:
                await cache.fetch(http, url, sha, len(data), {})
                await cache.fetch(http, url, sha, len(data), {})  # cached: no second request
        finally:
            await runner.cleanup()
        return seen

    seen = asyncio.run(go())
    assert seen == ["bytes=120000-"]
    assert cache.path(sha).read_bytes() == data and cache.bytes_in == len(data) - 120_000
    assert not (tmp_path / "cache" / f"{sha}.part").exists()


def test_bytes_that_do_not_match_the_announced_sha256_never_enter_the_cache(tmp_path):
    src = tmp_path / "artifact"
    src.write_bytes(b"x" * 5000)
    cache = ModelCache(tmp_path / "cache")
    wrong = "0" * 64

    async def go():
        runner, url, _ = await serving(src, tmp_path)
        try:
            async with aiohttp.ClientSession() as http:
                await cache.fetch(http, url, wrong, 5000, {})
        finally:
            await runner.cleanup()

    with pytest.raises(IntegrityError, match="sha256"):
        asyncio.run(go())
    assert not cache.has(wrong) and not list((tmp_path / "cache").glob("*.part"))


def test_the_cache_evicts_the_least_recently_used_that_no_device_needs(tmp_path):
    cache = ModelCache(tmp_path / "cache", max_bytes=2500)
    for i, name in enumerate(["a" * 64, "b" * 64, "c" * 64]):
        cache.path(name).write_bytes(bytes(1000))
        os.utime(cache.path(name), (1000 + i, 1000 + i))
    assert cache.prune(keep={"a" * 64}) == ["b" * 64]  # a is needed, b is the oldest of the rest
    assert cache.has("a" * 64) and cache.has("c" * 64)


def test_a_download_longer_than_announced_is_cut_off_and_never_fills_the_disk(tmp_path):
    # A hub gone wrong (or anything between) streams 32 MiB for an artifact announced at 5000 bytes.
    async def endless(request):
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(32):
            await resp.write(b"x" * (1 << 20))
        return resp

    cache = ModelCache(tmp_path / "cache")

    async def go():
        app = web.Application()
        app.router.add_get("/a", endless)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            async with aiohttp.ClientSession() as http:
                await cache.fetch(http, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/a",
                                  "0" * 64, 5000, {})
        finally:
            await runner.cleanup()

    with pytest.raises(IntegrityError, match="more than the announced 5000 bytes"):
        asyncio.run(go())
    assert cache.bytes_in <= 5000 and not list((tmp_path / "cache").iterdir())
