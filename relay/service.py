"""The relay: MQTT ingest from a site's agents -> dedup -> windowed selection -> store and forward
to the hub; and the site's model cache: poll the hub's desired model, fetch it once, serve it to
the agents over HTTP, set each agent's retained `desired` topic.

One asyncio loop runs the HTTP server and the background tasks; paho's thread decodes and scores
what arrived together (shared/mqtt._BatchingClient), and the inbox's thread stores it in one SQLite
transaction and only then sends the PUBACKs (relay/inbox.py).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import hmac
import ipaddress
import logging
import math
import threading
import time

import aiohttp
from aiohttp import web
from edgeloop.shared import topics
from edgeloop.shared.errors import EdgeloopError, ProtocolError, StorageError
from edgeloop.shared.mqtt import Connection
from edgeloop.shared.protocol import (MAX_ITEMS, Campaign, CampaignSet, Candidate, DesiredModel, DeviceState,
                                      SampleBatch, ShadowModel, check_id, decode, encode)
from edgeloop.shared.sampling import WindowedSelector
from edgeloop.shared.sampling.policy import (AUDIT, campaign_of, is_feedback, outside_budgets, priority_bonus,
                                             window_picker, window_pool_limit)
from edgeloop.shared.sampling.privileges import Privileges
from edgeloop.shared.sampling.watermarks import CLAIMED_AT, CLOCK_CORRECTED, Watermarks

from .cache import ModelCache
from .campaigns import campaigns_from_hub
from .forwarder import HubForwarder
from .inbox import Inbox
from .ingest import Prepared, receipts, rescored
from .settings import RelaySettings
from .store import RelayStore

log = logging.getLogger("edgeloop.relay")
STORAGE_RETRY_S = 2.0  # how often messages the disk refused are tried again
HOUSEKEEPING_S = 3600.0


def _device(c) -> str:
    """Late candidates are judged per device: a backlog gets the share its hours would have had live."""
    return c.device_id


class Relay:
    def __init__(self, s: RelaySettings):
        self.s = s
        self.store = RelayStore(s.data_dir / "relay.sqlite", s.forward_quota)
        self.selector = WindowedSelector(s.sampling.budget, s.sampling.min_value, track_dropped=True,
                                         pick=window_picker(s.sampling), pool_limit=window_pool_limit(s.sampling),
                                         lateness_s=s.lateness_s, late_key=_device)
        self.marks = Watermarks(s.max_clock_ahead_s, idle_s=max(300.0, 5 * s.sampling.budget.window_s),
                                max_lag_s=s.max_lag_s)
        self._lock = threading.Lock()  # guards the selector and privileges between paho's thread and the loop
        self.privileges = Privileges(s.sampling)
        self._last_arrival = 0.0
        self._last_flush = 0.0  # when windows were last flushed for want of a watermark
        self._restore_windows()
        for c in self.store.pending():  # windows that were open when we stopped
            self.selector.offer(c)
        self.selector_refused: list[str] = []
        self.storage_failed = False
        self._unstored: collections.deque = collections.deque()  # messages the disk refused, oldest first
        self._unsettled: collections.deque = collections.deque()  # (kept, dropped, window) it could not queue
        self.devices: dict[str, DeviceState] = {}
        self.desired: DesiredModel | None = None  # the site's default
        self.desired_devices: dict[str, DesiredModel] = {}  # devices a rollout treats differently
        self._published: dict[str, bytes] = {}  # device -> the desired payload last set
        self.versions: dict[str, str] = {}  # model version -> sha256 of its cached artifact
        self.cache = ModelCache(s.data_dir / "models", s.model_cache_bytes)
        self.counts = {"received": 0, "duplicates": 0, "rejected": 0, "kept": 0, "dropped": 0, "forwarded": 0,
                       "bytes_in": 0, "bytes_to_hub": 0, "model_bytes_in": 0, "model_bytes_out": 0,
                       "refused_by_hub": 0, "hub_retries": 0, "forward_refused": 0, "storage_errors": 0,
                       "audit": 0, "feedback": 0, "campaign": 0, "clock_corrected": 0, "late_kept": 0,
                       "privileges_refused": 0}
        self.to_hub = HubForwarder(s, self.store, self.counts)
        self.inbox = Inbox(self._store_group, lambda msg: self.conn.client.ack(msg.mid, msg.qos))
        self.campaigns: dict[str, Campaign] = {}
        self.campaign_used: dict[str, int] = {}
        self.url = ""
        # A persistent session: while the relay restarts, the broker queues what agents send
        # (agents delete on the broker's PUBACK, so a clean session would drop it).
        self.conn = Connection(s.broker, client_id=f"relay-{s.relay_id}", username=s.relay_id,
                               password=s.password, ca_file=s.ca_file, on_batch=self._on_batch,
                               clean_session=False,
                               manual_ack=True, v5=s.share_group is not None,
                               subscriptions=[(self._samples_filter(), 1),
                                              # Not shared: retained states are not sent on shared subscriptions.
                                              (topics.site_filter(s.site, "state"), 1)])

    def _restore_windows(self) -> None:
        """What the windows closed before a restart kept, from the journal: a backlog that arrives
        after the restart is judged as it would have been without one."""
        closed = self.store.closed_until()
        if closed is None:
            return
        window_s = self.s.sampling.budget.window_s
        self.selector.restore(self.store.windows_kept(closed * window_s - self.s.lateness_s), closed)
        log.info("restored what %d closed window(s) kept, for late candidates", self.selector.remembered_windows)

    def _samples_filter(self) -> str:
        site_samples = topics.site_filter(self.s.site, "samples")
        return topics.shared(self.s.share_group, site_samples) if self.s.share_group else site_samples

    # -- MQTT (paho's thread) ----------------------------------------------------------------
    def _on_batch(self, msgs: list) -> None:
        """What arrived together, decoded and scored on paho's thread, then stored by the inbox's."""
        try:
            self.inbox.put(self._prepare(msgs))
        except Exception:  # noqa: BLE001 - a bug on one message must not hold the others: one by one
            for msg in msgs:
                try:
                    self.inbox.put(self._prepare([msg]))
                except Exception:  # noqa: BLE001 - unacked, the broker sends it again
                    log.exception("unexpected error handling %s", msg.topic)

    def _store_group(self, prepared: list[Prepared]) -> list:
        """Store what queued up in one transaction -> the messages to ack (stored, or malformed).
        What the disk refused is held unacked, and the broker keeps it (and sends no more than its
        in-flight window meanwhile)."""
        msgs = [m for p in prepared for m in p.msgs]
        if self._unstored:  # the disk failed on an earlier message: keep the order, queue behind it
            self._unstored.extend(msgs)
            return []
        try:
            self._store_prepared(Prepared.merged(prepared))
        except StorageError as exc:
            for msg in msgs:
                self._store_later(msg, exc)
            return []
        except Exception:  # noqa: BLE001 - one bad message must not hold its group: one by one
            if len(msgs) == 1:
                log.exception("unexpected error handling %s", msgs[0].topic)
                return []
            return [m for msg in msgs for m in self._store_group([self._prepare([msg])])]
        return msgs

    def _store_later(self, msg, exc: Exception) -> None:
        """The disk refused a message: hold it unacked (the broker keeps it for us, and sends no more
        than its in-flight window meanwhile) and retry until the disk takes it (storage_retry)."""
        if not self.storage_failed:
            log.error("could not store a message from %s: %s; holding it unacknowledged, retrying every %.0f s",
                      msg.topic, exc, STORAGE_RETRY_S)
        self.storage_failed = True
        self.counts["storage_errors"] += 1
        self._unstored.append(msg)

    async def housekeeping(self) -> None:
        """Hourly: forget sample ids seen longer ago than the retention, so the dedup table is bounded."""
        while True:
            n = await asyncio.to_thread(self.store.prune_seen, self.s.seen_retention_s)
            with self._lock:
                self.marks.forget_idle(time.time(), self.s.seen_retention_s)
            if n:
                log.info("forgot %d sample ids seen more than %.0f days ago", n, self.s.seen_retention_s / 86400)
            await asyncio.sleep(HOUSEKEEPING_S)

    async def storage_retry(self) -> None:
        """Queue the closed windows and store and ack, in order, the messages the disk refused, once
        it takes them again."""
        while True:
            await asyncio.sleep(STORAGE_RETRY_S)
            while self._unsettled:
                if not await self._settle(*self._unsettled.popleft()):
                    self._unsettled.rotate(1)  # back to the front: _settle appended it at the end
                    break
            while self._unstored and not self._unsettled:
                msg = self._unstored[0]
                try:
                    await asyncio.to_thread(self._receive, msg)
                except StorageError as exc:
                    log.warning("the disk still refuses a message (%d waiting): %s", len(self._unstored), exc)
                    break
                except Exception:  # noqa: BLE001 - a bug in one message must not hold every later one
                    log.exception("unexpected error storing a held message on %s; left unacked (the broker "
                                  "sends it again)", msg.topic)
                    self._unstored.popleft()
                    continue
                self._unstored.popleft()
                self.conn.client.ack(msg.mid, msg.qos)
            if self.storage_failed and not self._unstored and not self._unsettled:
                self.storage_failed = False
                log.info("storage recovered: every held message is stored and acknowledged")

    def _receive(self, msg) -> None:
        """Decode, score and store one message (storage_retry's, once the disk has room); receipt it;
        offer its new candidates to the windows. StorageError: nothing of it was stored."""
        self._store_prepared(self._prepare([msg]))

    def _prepare(self, msgs: list) -> Prepared:
        """Decode, check, admit and score the messages (no I/O but a device's desired state): what
        paho's thread does while the inbox's thread stores the previous ones. A malformed one is counted
        and logged here, and acked with the rest (it will never store)."""
        batches = []
        for msg in msgs:
            try:
                device = topics.device_of(msg.topic)
                if msg.topic.endswith("/state"):
                    self._on_state(device, decode(msg.payload, DeviceState))
                    continue
                batch = decode(msg.payload, SampleBatch)
                if batch.source != device or any(c.device_id != device for c in batch.samples):
                    raise ProtocolError(f"batch on {msg.topic} claims another device")
            except (ProtocolError, ValueError) as exc:
                self.counts["rejected"] += 1
                log.warning("refused a message on %s: %s", msg.topic, exc)
                continue
            batches.append((msg, device, batch))
        if not batches:
            return Prepared(list(msgs), [], [])
        with self._lock:
            # Devices do not choose their own privileges: audit and feedback claims are checked here.
            admitted = [self.privileges.admit(self._admit_time(c), time.time())
                        for _, _, batch in batches for c in batch.samples]
            self.counts["privileges_refused"] = sum(self.privileges.refused.values())
        return Prepared(list(msgs), batches, [rescored(c, self.s.sampling) for c in admitted])

    def _store_prepared(self, p: Prepared) -> None:
        """Store (one transaction), receipt, and offer to the windows what _prepare made of some
        messages. StorageError: nothing of them was stored."""
        batches = p.batches
        if not batches:
            return
        new = self.store.accept(p.rescored)  # on disk before we ack
        # The agent deletes on this receipt, not on the broker's PUBACK (agent/uplink.py). Duplicates
        # are receipted too: it is the agent's copy of a send whose receipt was lost.
        for device, receipt in receipts(self.s.relay_id, [(device, batch) for _, device, batch in batches]):
            self.conn.publish(topics.received(self.s.site, device), encode(receipt), qos=1)
        # Outside the window budget, straight to the hub: audit and feedback always, campaigns within
        # their quota here; with their priority on the relay's own score, so that a full forward queue
        # evicts them last (the agent's value is not comparable across devices).
        bypass = [dataclasses.replace(c, value=c.value + priority_bonus(c.reasons)) for c in new
                  if outside_budgets(c.reasons) or self._campaign_quota_left(c)]
        if bypass:
            try:
                self._count_refused(self.store.settle(bypass, [], fate="bypassed"))
            except StorageError as exc:  # they are pending on disk already: queue them when the disk has room
                log.error("could not queue %d candidates outside the budgets: %s; retrying", len(bypass), exc)
                self.storage_failed = True
                self.counts["storage_errors"] += 1
                self._unsettled.append((bypass, [], False))
            self.counts["audit"] += sum(AUDIT in c.reasons for c in bypass)
            self.counts["feedback"] += sum(is_feedback(c.reasons) for c in bypass)
            self.counts["campaign"] += sum(not outside_budgets(c.reasons) for c in bypass)
        bypassed = {c.sample_id for c in bypass}
        with self._lock:
            for c in new:
                if c.sample_id in bypassed:
                    continue
                if not self.selector.offer(c):  # below min_value, or the lowest of a full pool
                    self.selector_refused.append(c.sample_id)
            self._last_arrival = time.monotonic()
        received = sum(len(batch.samples) for _, _, batch in batches)
        self.counts["received"] += received
        self.counts["duplicates"] += received - len(new)
        self.counts["bytes_in"] += sum(len(msg.payload) for msg, _, _ in batches)

    def _admit_time(self, c: Candidate) -> Candidate:
        """Advance the device's watermark; a capture time too far ahead of our clock is corrected."""
        fixed = self.marks.admit(c.device_id, c.captured_at, time.time())
        if fixed is None:
            return c
        if self.marks.corrected[c.device_id] == 1:
            log.warning("%s's clock is %.0f s ahead of ours: its capture times are corrected to the site's "
                        "(reason %s, its own in scores[%s])", c.device_id, c.captured_at - time.time(),
                        CLOCK_CORRECTED, CLAIMED_AT)
        self.counts["clock_corrected"] += 1
        scores = dict(list({CLAIMED_AT: c.captured_at, **c.scores}.items())[:MAX_ITEMS])
        reasons = tuple(dict.fromkeys((CLOCK_CORRECTED,) + c.reasons))[:MAX_ITEMS]
        return dataclasses.replace(c, captured_at=fixed, scores=scores, reasons=reasons)

    def _count_refused(self, ids: list[str]) -> None:
        """The forward queue is at its quota (the hub has been away long): these were worth the least."""
        if ids:
            self.counts["forward_refused"] += len(ids)
            log.warning("forward queue full: %d candidate(s) worth less than everything queued were dropped "
                        "(counted as forward_refused)", len(ids))

    def _campaign_quota_left(self, c: Candidate) -> bool:
        """True (and counted) when `c` was kept for an active campaign whose quota at this relay is not spent."""
        camp = self.campaigns.get(campaign_of(c.reasons) or "")
        if camp and time.time() <= camp.expires_at and self.campaign_used.get(camp.campaign_id, 0) < camp.quota:
            self.campaign_used[camp.campaign_id] = self.campaign_used.get(camp.campaign_id, 0) + 1
            return True
        return False

    def _on_state(self, device: str, state: DeviceState) -> None:
        first = device not in self.devices
        self.devices[device] = state
        if first and state.status == "online":
            self._set_desired(device)

    def _desired_for(self, device: str) -> DesiredModel | None:
        """What the hub wants this device to run: its own entry during a rollout, else the default."""
        return self.desired_devices.get(device, self.desired)

    def _set_desired(self, device: str) -> None:
        """Publish the device's desired state (retained) if it changed since we last did."""
        msg = self._desired_for(device)
        if msg is None:
            return
        payload = encode(msg)
        if self._published.get(device) == payload:
            return
        self.conn.publish(topics.desired(self.s.site, device), payload, qos=1, retain=True)
        self._published[device] = payload

    # -- selection windows -------------------------------------------------------------------
    async def windows(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            with self._lock:
                if not self.selector.pending:
                    continue
                until = self.marks.site(time.time()) - self.s.sampling.budget.window_s
                if time.monotonic() - self._last_arrival >= self.s.flush_idle_s:
                    kept = self.selector.close_until(None)  # quiet: close everything open
                elif math.isfinite(until):
                    # Steady traffic: close windows a full window behind the site's watermark, and the
                    # late panes of what arrived after its window closed.
                    kept = self.selector.close_until(until)
                elif time.monotonic() - self._last_flush >= self.s.sampling.budget.window_s:
                    # No device whose clock we believe (only corrected ones): no watermark. Flush once
                    # a window, which closes the windows it judges and nothing before them.
                    kept, self._last_flush = self.selector.close_until(None), time.monotonic()
                else:
                    kept = []
                dropped = [c.sample_id for c in self.selector.drain_dropped()] + self.selector_refused
                late = self.selector.drain_late()
                self.selector_refused = []
                self.counts["late_kept"] = self.selector.late_kept
                if not kept and not dropped:
                    continue
            await self._settle(kept, dropped, late_ids=late)

    async def _settle(self, kept: list[Candidate], dropped: list[str], window: bool = True,
                      late_ids: list[str] = ()) -> bool:
        """A closed window (window=False: what bypassed the budgets) to the forward queue; on a disk
        error it is held and retried (storage_retry)."""
        try:
            self._count_refused(await asyncio.to_thread(self.store.settle, kept, dropped,
                                                        "kept" if window else "bypassed",
                                                        self.selector.closed_until, late_ids))
        except StorageError as exc:
            if not self.storage_failed:
                log.error("could not queue a closed window (%d kept): %s; retrying every %.0f s", len(kept), exc,
                          STORAGE_RETRY_S)
            self.storage_failed = True
            self.counts["storage_errors"] += 1
            self._unsettled.append((kept, dropped, window, late_ids))
            return False
        if window:
            self.counts["kept"] += len(kept)
            self.counts["dropped"] += len(dropped)
            log.info("window closed: kept %d, dropped %d", len(kept), len(dropped))
        return True

    # -- model cache -------------------------------------------------------------------------
    async def model_poller(self, http: aiohttp.ClientSession) -> None:
        while True:
            try:
                await self._poll_once(http)
            except (aiohttp.ClientError, asyncio.TimeoutError, EdgeloopError, ValueError, KeyError, OSError) as exc:
                log.warning("desired-model poll failed: %s", exc)
            await asyncio.sleep(self.s.poll_s)

    async def _poll_campaigns(self, http: aiohttp.ClientSession) -> None:
        async with http.get(f"{self.s.hub_url}/api/v1/campaigns", params={"site": self.s.site},
                            headers=self._auth()) as resp:
            resp.raise_for_status()
            reply = await resp.json()
        active = campaigns_from_hub(reply)
        ids = {c.campaign_id for c in active}
        if ids == set(self.campaigns):
            return
        # Validate as agents will, then set it retained on the site's campaigns topic.
        payload = encode(decode(encode(CampaignSet(active)), CampaignSet))
        self.campaigns = {c.campaign_id: c for c in active}
        self.conn.publish(topics.campaigns(self.s.site), payload, qos=1, retain=True)
        log.info("campaigns on site %s: %s", self.s.site, ", ".join(sorted(ids)) or "none")

    async def _poll_once(self, http: aiohttp.ClientSession) -> None:
        # Campaigns are an extra: whatever the hub answers for them, reports and the desired model go on.
        try:
            await self._poll_campaigns(http)
        except (aiohttp.ClientError, asyncio.TimeoutError, EdgeloopError, ValueError, KeyError, TypeError) as exc:
            log.warning("campaign poll failed (reports and the desired model go on): %s", exc)
        await self._send_reports(http)
        async with http.get(f"{self.s.hub_url}/api/v1/desired", params={"site": self.s.site},
                            headers=self._auth()) as resp:
            if resp.status == 204:
                return
            resp.raise_for_status()
            info = await resp.json()
        # Every artifact the site needs (the default, and a rollout's candidate and shadow), once each.
        models = {info["version"]: info, **info.get("models", {})}
        for version, m in models.items():
            check_id(version, "desired.version")
            if not self.cache.has(m["sha256"]):
                before = self.cache.bytes_in
                await self.cache.fetch(http, f"{self.s.hub_url}{m['artifact']}", m["sha256"], m["size"], self._auth())
                self.counts["model_bytes_in"] += self.cache.bytes_in - before
            self.versions[version] = m["sha256"]
        default = self._desired_msg(info)
        per_device = {check_id(d, "desired.devices"): self._desired_msg(v) for d, v in info.get("devices", {}).items()}
        if (default, per_device) != (self.desired, self.desired_devices):
            changed = default != self.desired
            self.desired, self.desired_devices = default, per_device
            if changed:
                log.info("desired model is now %s (%d devices with a rollout's own)", default.version, len(per_device))
        for device in set(self.devices) | set(per_device):
            self._set_desired(device)
        self.cache.prune(keep={m["sha256"] for m in models.values()})

    def _desired_msg(self, m: dict) -> DesiredModel:
        """The hub's JSON for one device -> the message agents get, pointing at this relay's cache."""
        sh = m.get("shadow")
        shadow = None if not sh else ShadowModel(sh["version"], sh["sha256"], sh["size"], self._model_url(sh),
                                                 float(sh.get("fraction", 0.25)))
        # The hub's signed statement goes on unchanged: agents act on nothing else (shared/statement.py).
        signed = {k: base64.b64decode(m[k], validate=True) for k in ("statement", "signature") if m.get(k)}
        msg = DesiredModel(m["version"], m["sha256"], m["size"], self._model_url(m), "active",
                           shadow=shadow, max_latency_ms=m.get("max_latency_ms"), rollout_id=m.get("rollout_id"),
                           **signed)
        return decode(encode(msg), DesiredModel)  # validated exactly as an agent will

    def _model_url(self, m: dict) -> str:
        return f"{self.url}/models/{m['version']}/{m['sha256']}"

    async def _send_reports(self, http: aiohttp.ClientSession) -> None:
        """The devices' latest states, for the hub's rollout gates and status."""
        devices = [{"device_id": d, "status": st.status, "model_version": st.model_version, "stats": st.stats,
                    "facts": st.facts, "last_error": st.last_error} for d, st in list(self.devices.items())]
        if not devices:
            return
        async with http.post(f"{self.s.hub_url}/api/v1/reports", headers=self._auth(),
                             json={"relay_id": self.s.relay_id, "site": self.s.site, "devices": devices}) as resp:
            if resp.status >= 400:
                log.warning("the hub refused device reports: %s %s", resp.status, (await resp.text())[:200])

    async def serve_model(self, request: web.Request) -> web.StreamResponse:
        """GET /models/{version}/{sha256}: the artifact, to whoever names its sha256 (the relay listens
        beyond loopback for its agents, and only the site's devices read the desired messages that
        carry it: a capability URL). Artifacts are signed; this keeps them from anyone else on the network."""
        version = request.match_info["version"]
        sha = self.versions.get(version, "")
        path = self.cache.path(sha) if sha else None
        if path is None or not path.exists() or not hmac.compare_digest(
                request.match_info["sha256"].encode(), sha.encode()):  # bytes: any text in the URL is a 404, not a 500
            raise web.HTTPNotFound(text=f"model {version} is not in this relay's cache")
        self.cache.touch(sha)
        # FileResponse answers Range requests too: an agent on a flaky link resumes its download.
        self.counts["model_bytes_out"] += len(range(*request.http_range.indices(path.stat().st_size)))
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})

    async def status(self, request: web.Request) -> web.Response:
        """The relay's figures: to a caller on this machine, or one with the relay's token (Bearer): the
        relay listens beyond loopback for its agents, and this names every device and model of the site."""
        if not _is_loopback(request.remote) and not hmac.compare_digest(
                request.headers.get("Authorization", "").encode(), f"Bearer {self.s.token}".encode()):
            raise web.HTTPUnauthorized(text="GET /status from another machine needs the relay's token "
                                            "(Authorization: Bearer ...)")
        with self._lock:
            pending, late_panes = self.selector.pending, len(self.selector.late_panes())
            clocks = dict(self.marks.corrected)
        devices = dict(self.devices)  # paho's thread may add one meanwhile
        return web.json_response({
            "relay_id": self.s.relay_id, "site": self.s.site, "pending": pending, "late_panes": late_panes,
            "clock_corrected": clocks,
            "connected": self.conn.connected.is_set(), "share_group": self.s.share_group,
            "queued": await asyncio.to_thread(len, self.store.forward),
            "seen": await asyncio.to_thread(self.store.seen_count),
            "desired": self.desired.version if self.desired else None,
            "devices": {d: {"status": st.status, "model_version": st.model_version} for d, st in devices.items()},
            "counts": self.counts, "storage_failed": self.storage_failed, "unstored": len(self._unstored),
            "campaigns": {cid: {"quota": c.quota, "used": self.campaign_used.get(cid, 0)} for cid, c in self.campaigns.items()}})

    def _auth(self, headers: dict | None = None) -> dict:
        return {**(headers or {}), "Authorization": f"Bearer {self.s.token}"}


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False
