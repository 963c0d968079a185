"""The relay's store-and-forward to the hub: lease from the forward queue, POST, delete only what the
hub confirms it holds (relay/answers.py decides what an answer means).

    forward = HubForwarder(settings, store, counts)   # counts: the relay's counters, updated here
    await forward.run(http)                           # for as long as the relay runs

Batches are sized to the measured link (shared/pacing.py) with a timeout for their size; an untyped
413 halves them; what the hub itself refuses goes to the dead letters (relay/store.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp

from edgeloop.shared.pacing import Pace
from edgeloop.shared.protocol import Candidate, SampleBatch, encode

from . import answers
from .store import RelayStore

log = logging.getLogger("edgeloop.relay")
BATCH_BYTES = 4 << 20  # the most a batch to the hub carries (fewer after an untyped 413)
TIMED_OUT = "timed out"


class HubForwarder:
    def __init__(self, s, store: RelayStore, counts: dict):
        """s: the relay's settings (hub_url, token, relay_id, site, batch_items)."""
        self.s, self.store, self.counts = s, store, counts
        # Batches to the hub sized to the measured link (a site on a slow uplink), timeouts to match.
        self.pace = Pace(max_bytes=BATCH_BYTES, start_bytes=256 << 10, min_timeout_s=30.0)

    async def run(self, http: aiohttp.ClientSession) -> None:
        backoff = 0.5
        limit_items, limit_bytes = self.s.batch_items, BATCH_BYTES  # smaller after a proxy's 413
        while True:
            batch = await asyncio.to_thread(self.store.forward.lease, limit_items,
                                            min(limit_bytes, self.pace.batch_bytes()))
            if not batch:
                await asyncio.sleep(0.25)
                continue
            t0 = time.monotonic()
            status, ctype, text, reply, nbytes = await self._post(http, batch)
            verdict = answers.classify(status, ctype, text)
            if verdict == answers.OK:
                self.pace.acked(nbytes, time.monotonic() - t0)
                await self._settle_reply(batch, reply, nbytes)
                backoff = 0.5
                limit_items, limit_bytes = min(self.s.batch_items, limit_items * 2), min(BATCH_BYTES, limit_bytes * 2)
                continue
            if status == 0 and text == TIMED_OUT:  # a slow link: send less at once, and allow for it
                self.pace.timed_out(nbytes, time.monotonic() - t0)
            if verdict == answers.REFUSED:
                # The hub itself says these bytes are wrong; resending them won't help. Find the bad ones alone.
                await self._post_one_by_one(http, batch, text)
                continue
            await asyncio.to_thread(self.store.forward.release, [c.sample_id for c in batch])
            if verdict == answers.SPLIT and len(batch) > 1:
                limit_items, limit_bytes = max(1, len(batch) // 2), max(1, nbytes // 2)
                log.warning("413 from %s (not the hub's own): sending at most %d samples, %d bytes a batch",
                            ctype or "a peer", limit_items, limit_bytes)
                continue
            self.counts["hub_retries"] += 1
            log.warning("hub %s; %d samples wait, retry in %.1fs", answers.describe(status, ctype, text), len(batch),
                        backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30)

    async def _post_one_by_one(self, http: aiohttp.ClientSession, batch: list[Candidate], why: str) -> None:
        log.warning("hub refused a batch of %d (%s); sending one by one", len(batch), why[:200])
        for c in batch:
            status, ctype, text, reply, nbytes = await self._post(http, [c])
            verdict = answers.classify(status, ctype, text)
            if verdict == answers.OK:
                await self._settle_reply([c], reply, nbytes)
            elif verdict == answers.REFUSED:
                await self._dead_letter({c.sample_id: text[:500]}, [c])
            else:
                await asyncio.to_thread(self.store.forward.release, [c.sample_id])

    async def _dead_letter(self, refused: dict[str, str], batch: list[Candidate]) -> None:
        n = await asyncio.to_thread(self.store.dead_letter, refused, batch)
        self.counts["refused_by_hub"] += n
        for sid, reason in refused.items():
            log.error("hub refused sample %s: %s; kept in the dead letters (edgeloop relay dead-letters)", sid,
                      reason[:300])

    async def _post(self, http: aiohttp.ClientSession, batch: list[Candidate]) -> tuple[int, str, str, dict, int]:
        """POST candidates to the hub -> (status, content type, body text unless 200, JSON reply if 200,
        body bytes); status 0: unreachable, or a 200 that is not the hub's JSON."""
        body = encode(SampleBatch(source=self.s.relay_id, site=self.s.site, samples=tuple(batch)))
        timeout = aiohttp.ClientTimeout(total=self.pace.timeout_s(len(body)))
        try:
            async with http.post(f"{self.s.hub_url}/api/v1/samples", data=body, timeout=timeout,
                                 headers=self._auth({"Content-Type": "application/msgpack"})) as resp:
                if resp.status == 200:
                    reply = await resp.json()  # ContentTypeError (a ClientError) for a proxy's HTML 200
                    if not isinstance(reply, dict):
                        raise ValueError(f"a 200 whose body is not the hub's reply: {str(reply)[:100]}")
                    return 200, resp.content_type, "", reply, len(body)
                return resp.status, resp.content_type, await resp.text(), {}, len(body)
        except asyncio.TimeoutError:
            return 0, "", TIMED_OUT, {}, len(body)
        except (aiohttp.ClientError, ValueError) as exc:
            return 0, "", str(exc), {}, len(body)

    async def _settle_reply(self, batch: list[Candidate], reply: dict, nbytes: int) -> None:
        # Delete only what the hub confirms it holds (stored now or before); the samples it refused
        # go to the dead letters; lease the rest again.
        confirmed = set(reply.get("stored", [])) | set(reply.get("duplicates", []))
        refused = {sid: why for sid, why in answers.refused_samples(reply).items() if sid not in confirmed}
        if refused:
            await self._dead_letter(refused, batch)
        ids = [c.sample_id for c in batch]
        await asyncio.to_thread(self.store.forward.ack, [i for i in ids if i in confirmed])
        await asyncio.to_thread(self.store.forward.release, [i for i in ids if i not in confirmed and i not in refused])
        self.counts["forwarded"] += len(confirmed)
        self.counts["bytes_to_hub"] += nbytes

    def _auth(self, headers: dict | None = None) -> dict:
        return {**(headers or {}), "Authorization": f"Bearer {self.s.token}"}
