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
def add(data_dir, db, name, role) -> None:
    """Make a token and print it (once: the hub keeps only its hash).

    \b
    Example:
      edgeloop hub token add --data /var/lib/edgeloop/hub --name alice --role labeler
    """
    from edgeloop.shared.errors import ProtocolError
    from edgeloop.shared.protocol import check_id

    from .store import HubStore

    try:
        check_id(name, "name")
    except ProtocolError as exc:
        raise click.BadParameter(str(exc), param_hint="--name") from exc
    tok = new_token()
    HubStore(data_dir, db).add_token(token_hash(tok), name, role)
    click.echo(tok)


@token.command("list")
@_store
def list_cmd(data_dir, db) -> None:
    """Every token: id (hash prefix), name, role, and whether it is revoked.

    \b
    Example:
      edgeloop hub token list --data /var/lib/edgeloop/hub
    """
    import time

    from .store import HubStore

    for t in HubStore(data_dir, db).tokens():
        made = time.strftime("%Y-%m-%d %H:%M", time.gmtime(t["created_at"]))
        state = "revoked " + time.strftime("%Y-%m-%d %H:%M", time.gmtime(t["revoked_at"])) if t["revoked_at"] else "live"
        click.echo(f"{t['token_hash']}  {t['name']:20} {t['role']:9} made {made}  {state}")


@token.command("revoke")
@_store
@click.argument("who")
def revoke(data_dir, db, who) -> None:
    """Revoke every live token of a name, or one token by its id (from `token list`). Effective at once.

    \b
    Example:
      edgeloop hub token revoke --data /var/lib/edgeloop/hub alice
    """
    from .store import HubStore

    n = HubStore(data_dir, db).revoke_tokens(who)
    if not n:
        raise click.ClickException(f"no live token of {who!r}")
    click.echo(f"revoked {n} token(s) of {who}")
