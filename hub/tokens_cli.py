"""`edgeloop hub token add|list|revoke`: people's and relays' tokens, on the hub's own box."""

from __future__ import annotations

from pathlib import Path

import click

from ._options import db_option
from .auth import ROLES, new_token, token_hash

_DATA = click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
                     required=True, help="Hub data folder.")


def _store(fn):
    return _DATA(db_option(fn))


@click.group("token")
def token() -> None:
    """Tokens for people (labeler, engineer, operator), relays and admins. Only a hash is stored."""


@token.command("add")
@_store
@click.option("--name", required=True, help="Who: a person's or a relay's name, shown in the audit log.")
@click.option("--role", type=click.Choice(ROLES), required=True,
              help="labeler: label; engineer: + select, train, register models; operator: rollouts; "
                   "relay: post samples and reports; admin: everything.")
@click.option("--site", "sites", multiple=True,
              help="relay: a site it may post samples and reports for; repeat for several (required for a relay).")
@click.option("--relay-id", default=None,
              help="relay: the relay id its batches and reports must name [default: --name].")
def add(data_dir, db, name, role, sites, relay_id) -> None:
    """Make a token and print it (once: the hub keeps only its hash). A relay's token is bound to its
    relay id and site(s): the hub refuses (403) samples or reports it sends for any other.

    \b
    Examples:
      edgeloop hub token add --data /var/lib/edgeloop/hub --name alice --role labeler
      edgeloop hub token add --data /var/lib/edgeloop/hub --name relay-0 --role relay --site site-a
    """
    from edgeloop.shared.errors import ProtocolError
    from edgeloop.shared.protocol import check_id

    from .store import HubStore

    for value, hint in [(name, "--name"), *((s, "--site") for s in sites), ((relay_id or name), "--relay-id")]:
        try:
            check_id(value, hint.strip("-"))
        except ProtocolError as exc:
            raise click.BadParameter(str(exc), param_hint=hint) from exc
    if role == "relay" and not sites:
        raise click.UsageError("a relay's token needs --site (the site or sites it posts for)")
    if role != "relay" and (sites or relay_id):
        raise click.UsageError("--site and --relay-id bind a relay's token; give them with --role relay only")
    tok = new_token()
    HubStore(data_dir, db).add_token(token_hash(tok), name, role, (relay_id or name) if role == "relay" else None,
                                     sites)
    click.echo(tok)


@token.command("list")
@_store
def list_cmd(data_dir, db) -> None:
    """Every token: id (hash prefix), name, role, and whether it is revoked.

    \b
    Example:
      edgeloop hub token list --data /var/lib/edgeloop/hub
    """
    import json
    import time

    from .store import HubStore

    for t in HubStore(data_dir, db).tokens():
        made = time.strftime("%Y-%m-%d %H:%M", time.gmtime(t["created_at"]))
        state = "revoked " + time.strftime("%Y-%m-%d %H:%M", time.gmtime(t["revoked_at"])) if t["revoked_at"] else "live"
        bound = f"  relay {t['relay_id']} for {','.join(json.loads(t['sites'] or '[]'))}" if t["relay_id"] else ""
        click.echo(f"{t['token_hash']}  {t['name']:20} {t['role']:9} made {made}  {state}{bound}")


@token.command("revoke")
@_store
@click.argument("who")
def revoke(data_dir, db, who) -> None:
    """Revoke every live token of exactly this name, or one token by its id (from `token list`, 8
    characters or more). Effective at once; revoking the last token does not open the hub.

    \b
    Example:
      edgeloop hub token revoke --data /var/lib/edgeloop/hub alice
    """
    from .store import HubStore

    n = HubStore(data_dir, db).revoke_tokens(who)
    if not n:
        raise click.ClickException(f"no live token of {who!r}")
    click.echo(f"revoked {n} token(s) of {who}")
