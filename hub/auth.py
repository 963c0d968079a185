"""Who may do what at the hub: tokens with roles, and the routes each role may call.

    labeler   reads; labels, marks ambiguous, changes or undoes its *own* labels
    engineer  what a labeler may, plus selection, training, registering models, campaigns (more like a sample)
    operator  reads; rollouts and the fleet's desired model
    relay     what a site's relay needs: post samples and reports, read desired models and campaigns,
              as the one relay id and for the site(s) its token was made for (`token add --site`)
    admin     everything (the tokens given to `edgeloop hub serve --token`, or made at first start)

Tokens are random 256-bit strings shown once when created; the hub keeps only their SHA-256 (no salt
or slow hash needed: nobody can guess 256 random bits, so a leaked table reveals nothing usable).

    token = new_token()                           # "elt_..." for the person or relay
    allowed("labeler", "POST", "/api/v1/rollouts") -> False
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

ROLES = ("labeler", "engineer", "operator", "relay", "admin")
PREFIX = "elt_"

# (method, route template); GET routes under /api/v1 are reads, open to every person's role.
_LABELER = {("POST", "/api/v1/labels"), ("DELETE", "/api/v1/labels/{sample_id}")}
# Campaigns send frames past every budget of the fleet: an engineer's call, not a labeler's.
_ENGINEER = _LABELER | {("POST", "/api/v1/selection"), ("POST", "/api/v1/train"), ("POST", "/api/v1/models"),
                        ("POST", "/api/v1/jobs/{job_id}/cancel"), ("POST", "/api/v1/campaigns"),
                        ("DELETE", "/api/v1/campaigns/{campaign_id}")}
_OPERATOR = {("POST", "/api/v1/rollouts"), ("POST", "/api/v1/rollouts/{rollout_id}/{action}"),
             ("POST", "/api/v1/desired"), ("POST", "/api/v1/policy")}
_RELAY = {("POST", "/api/v1/samples"), ("POST", "/api/v1/reports"), ("GET", "/api/v1/desired"),
          ("GET", "/api/v1/models"), ("GET", "/api/v1/models/{version}/artifact"), ("GET", "/api/v1/campaigns")}
WRITES = {"labeler": _LABELER, "engineer": _ENGINEER, "operator": _OPERATOR}


@dataclass(frozen=True)
class Caller:
    name: str  # who: a person's or relay's name, recorded with every write
    role: str
    relay_id: str | None = None  # a relay token's: the only relay id its bodies may name
    sites: tuple[str, ...] = ()  # a relay token's: the only sites its bodies may name


ANONYMOUS = Caller("anonymous", "admin")  # only on a hub started with --open (loopback only)


def speaks_for(caller: Caller, site: str, relay_id: str | None = None) -> str | None:
    """Why `caller` may not post for this site (and relay id), or None when it may. Only relay tokens
    are bound: a person's role never posts samples or reports, and an admin may post for anyone."""
    if caller.role != "relay":
        return None
    if caller.relay_id is None or not caller.sites:
        return (f"the token of {caller.name} is bound to no relay id and site; make it again with "
                f"`edgeloop hub token add --role relay --relay-id ID --site SITE`")
    if site not in caller.sites:
        return f"the token of relay {caller.relay_id} is for site {', '.join(caller.sites)}, not {site!r}"
    if relay_id is not None and relay_id != caller.relay_id:
        return f"the token of relay {caller.relay_id} is not relay {relay_id!r}'s"
    return None


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def allowed(role: str, method: str, route: str) -> bool:
    """May a caller of this role call this route (its template, e.g. /api/v1/labels/{sample_id})?"""
    if role == "admin":
        return True
    if role == "relay":
        return (method, route) in _RELAY
    if method in ("GET", "HEAD"):
        return True
    return (method, route) in WRITES.get(role, set())
