"""The hub's signed desired statements (shared/statement.py): each entry of GET /api/v1/desired?site=S
gets `statement` and `signature` (base64), which relays pass on to agents unchanged.

    body = signed(store, key, site, body, now, ttl_s)

`seq` comes from the store: one number for the whole hub, bumped whenever the site's desired state
(its default and every device's own entry) changes, so a statement the hub signed earlier always
ranks lower than the current one. `expires_at` is refreshed in steps of a quarter of `ttl_s`, so
that an unchanged state signs to the same bytes (Ed25519 is deterministic) and relays do not
republish every poll; an agent sees a statement expire at the latest `ttl_s` after the hub last
signed one for it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math

from edgeloop.shared.statement import ShadowRef, Statement, sign

DEFAULT_TTL_S = 24 * 3600.0


def signed(store, private_key, site: str, body: dict, now: float, ttl_s: float = DEFAULT_TTL_S) -> dict:
    """The desired body of `site` with every entry (the default, each device's) signed."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    seq = store.desired_seq(site, digest)
    step = ttl_s / 4
    expires_at = math.floor(now / step) * step + ttl_s
    out = {**body, **_sign(private_key, site, None, body, seq, expires_at, others=tuple(body["devices"]))}
    out["devices"] = {d: {**e, **_sign(private_key, site, d, e, seq, expires_at)} for d, e in body["devices"].items()}
    return out


def _sign(private_key, site: str, device: str | None, e: dict, seq: int, expires_at: float,
          others: tuple[str, ...] = ()) -> dict:
    sh = e.get("shadow")
    st = Statement(site=site, device=device, version=e["version"], sha256=e["sha256"], size=e["size"], seq=seq,
                   expires_at=expires_at,
                   shadow=ShadowRef(sh["version"], sh["sha256"], sh["size"], float(sh["fraction"])) if sh else None,
                   max_latency_ms=e.get("max_latency_ms"), rollout_id=e.get("rollout_id"), others=others)
    data, sig = sign(private_key, st)
    return {"statement": base64.b64encode(data).decode(), "signature": base64.b64encode(sig).decode()}
