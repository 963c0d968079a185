"""A TCP link that breaks on demand, for the chaos run (edgeloop/bench/chaos.py): FaultyLink proxies
clients to their upstream on loopback and can refuse, blackhole, turn lossy, slow down to a rate, or
answer HTTP itself with an error page (a reverse proxy in front of the hub); LinkHost runs the
proxies on an event loop of their own. No root, no tc."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import Counter

# link_drop: every LOSSY_TICK_S each connection is reset with P_CUT, else stalled with P_STALL;
# a new connection is refused with P_REFUSE.
LOSSY_TICK_S, P_CUT, P_STALL, P_REFUSE = 0.5, 0.03, 0.06, 0.3
STALL_S = (0.5, 4.0)
RATE_CHUNK = 4096  # bytes a throttled link passes at a time
PROXY_PAGE = (b"<html><head><title>404 Not Found</title></head><body><center><h1>404 Not Found</h1></center>"
              b"<hr><center>nginx</center></body></html>")


class _Pipe:
    """One proxied connection: both ends, and until when it is stalled."""

    def __init__(self, *writers: asyncio.StreamWriter):
        self.writers = writers
        self.stalled_until = 0.0
        self.closed = False

    def abort(self) -> None:
        self.closed = True
        for w in self.writers:
            w.transport.abort()


class FaultyLink:
    """A TCP proxy on loopback between clients and their upstream that faults can break.

    cut: None (pass), "refuse" (every connection is reset, new ones at once) or "blackhole"
    (connections stay open but nothing passes until the cut ends; then what was held goes through,
    late). lossy: connections are reset or stalled at random, and some new ones refused: what a link
    that drops packets does to the application above TCP. rate: bytes a second the link carries, in
    both directions together (a modem). http_error: open connections are reset and every request on
    a new one is answered with that status and an HTML page, as a misconfigured reverse proxy does.
    Runs on a LinkHost's event loop; the setters may be called from any thread.
    """

    def __init__(self, name: str, upstream: int, loop: asyncio.AbstractEventLoop):
        self.name, self.upstream, self.loop = name, upstream, loop
        self.cut: str | None = None
        self.lossy = False
        self.rate: float | None = None
        self.http_error: int | None = None
        self._free_at = 0.0  # a throttled link is busy until then
        self.port = 0
        self.pipes: set[_Pipe] = set()
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(0)
        self._ticker: asyncio.Task | None = None
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self._server.close()
        self._set_lossy(False, 0)
        for p in list(self.pipes):
            p.abort()

    def set_cut(self, mode: str | None) -> None:
        self.loop.call_soon_threadsafe(self._set_cut, mode)

    def set_lossy(self, on: bool, seed: int = 0) -> None:
        self.loop.call_soon_threadsafe(self._set_lossy, on, seed)

    def set_rate(self, bytes_per_s: float | None) -> None:
        self.loop.call_soon_threadsafe(setattr, self, "rate", bytes_per_s)

    def set_http_error(self, status: int | None) -> None:
        self.loop.call_soon_threadsafe(self._set_http_error, status)

    def _set_http_error(self, status: int | None) -> None:
        self.http_error = status
        if status is not None:  # kept-alive connections would go on reaching the upstream
            for p in list(self.pipes):
                p.abort()

    def _set_cut(self, mode: str | None) -> None:
        self.cut = mode
        if mode == "refuse":
            for p in list(self.pipes):
                p.abort()
                self.counts["reset"] += 1

    def _set_lossy(self, on: bool, seed: int) -> None:
        self.lossy = on
        if on and self._ticker is None:
            self._rng = random.Random(seed)
            self._ticker = self.loop.create_task(self._lossy_ticker())
        elif not on and self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    async def _lossy_ticker(self) -> None:
        while True:
            await asyncio.sleep(LOSSY_TICK_S)
            for p in list(self.pipes):
                r = self._rng.random()
                if r < P_CUT:
                    p.abort()
                    self.counts["lossy_reset"] += 1
                elif r < P_CUT + P_STALL:
                    p.stalled_until = self.loop.time() + self._rng.uniform(*STALL_S)
                    self.counts["lossy_stall"] += 1

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while self.cut == "blackhole":  # held: the client waits, as for a host that does not answer
            await asyncio.sleep(0.1)
        if self.cut == "refuse" or (self.lossy and self._rng.random() < P_REFUSE):
            self.counts["refused" if self.cut else "lossy_refused"] += 1
            writer.transport.abort()
            return
        if self.http_error is not None:
            await self._answer_http(reader, writer, self.http_error)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:  # the upstream is down: so is the link
            writer.transport.abort()
            return
        pipe = _Pipe(writer, up_writer)
        self.pipes.add(pipe)
        self.counts["connections"] += 1
        try:
            await asyncio.gather(self._pump(reader, up_writer, pipe), self._pump(up_reader, writer, pipe))
        finally:
            self.pipes.discard(pipe)
            pipe.abort()

    async def _answer_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int) -> None:
        """Read each request (head and Content-Length body) and answer it with `status` and a page."""
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                if self.http_error != status:  # the fault is over: reset, the client reconnects
                    return
                self.counts[f"http_{status}"] += 1
                writer.write(b"HTTP/1.1 %d Error\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s"
                             % (status, len(PROXY_PAGE), PROXY_PAGE))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError, ValueError):
            pass
        finally:
            writer.transport.abort()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, pipe: _Pipe) -> None:
        try:
            while data := await src.read(RATE_CHUNK if self.rate else 1 << 16):
                while not pipe.closed and (self.cut == "blackhole" or self.loop.time() < pipe.stalled_until):
                    await asyncio.sleep(0.05)
                if self.rate:  # one link for every connection through it, both ways
                    now = self.loop.time()
                    self._free_at = max(self._free_at, now) + len(data) / self.rate
                    await asyncio.sleep(self._free_at - now)
                    self.counts["throttled_bytes"] += len(data)
                if pipe.closed:
                    return
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            pipe.abort()  # one side gone: the connection is over


class LinkHost:
    """An event loop in a thread, hosting every FaultyLink of a run."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="links", daemon=True)
        self.thread.start()
        self.links: dict[str, FaultyLink] = {}

    def add(self, name: str, upstream: int) -> FaultyLink:
        link = FaultyLink(name, upstream, self.loop)
        asyncio.run_coroutine_threadsafe(link.start(), self.loop).result(10)
        self.links[name] = link
        return link

    def close(self) -> None:
        """Close every link and its connections, end the tasks, stop the loop."""
        async def shutdown():
            for link in self.links.values():
                await link.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):  # closing is best effort: the run's figures are already taken
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()
