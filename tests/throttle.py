"""A TCP proxy on loopback that carries bytes no faster than `rate` a second each way: a slow link
(a cellular modem, a congested site uplink) between a client and a real server, for the tests.

    link = Throttle(upstream_port=1883, rate=20_000)   # then connect to 127.0.0.1:link.port
    link.carried  # bytes carried client -> server so far
    link.stop()
"""

from __future__ import annotations

import asyncio
import threading
import time

from edgeloop.broker import free_port

CHUNK = 1024


class Throttle:
    def __init__(self, upstream_port: int, rate: float):
        self.upstream_port, self.rate, self.port = upstream_port, float(rate), free_port()
        self.carried = 0
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", self.port), self._loop).result(10)

    async def _client(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pump(reader, up_writer, count=True), self._pump(up_reader, writer),
                             return_exceptions=True)

    async def _pump(self, reader, writer, count: bool = False):
        free_at = time.monotonic()  # when the link is free for the next chunk: no burst after idling
        try:
            while data := await reader.read(CHUNK):
                if count:
                    self.carried += len(data)
                now = time.monotonic()
                free_at = max(free_at, now) + len(data) / self.rate
                await asyncio.sleep(free_at - now)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def stop(self):
        async def down():
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(down(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
