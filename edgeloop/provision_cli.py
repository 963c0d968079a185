"""`edgeloop provision`: the command line over edgeloop/provision.py (credentials, ACL, revocation,
broker config, TLS for a site broker)."""

from __future__ import annotations

from pathlib import Path

import click

from edgeloop.provision import (issue, load_registry, make_tls, reload_broker,
                                revoke, write_broker_config)


# --- CLI ------------------------------------------------------------------------------------------

_DIR = click.option("--dir", "root", type=click.Path(file_okay=False, path_type=Path), required=True,
                    help="The site broker's security folder (registry, password file, ACL, credentials, TLS).")
_RELOAD = click.option("--reload-pid", type=int, default=None,
                       help="Send SIGHUP to this mosquitto so it rereads the password file and ACL now.")


def _after_change(root: Path, reload_pid: int | None) -> None:
    if reload_pid is not None:
        reload_broker(reload_pid)
        click.echo(f"broker {reload_pid} reloaded (SIGHUP)")
    else:
        click.echo("the broker applies this when it reloads: systemctl reload mosquitto, or kill -HUP <its pid> "
                   "(or --reload-pid PID)")


@click.group()
def provision() -> None:
    """Device and relay identities for a site broker: passwords, ACL, broker config, TLS.

    \b
    Example, a site from scratch (see deploy/README.md):
      edgeloop provision tls --dir /etc/mosquitto/edgeloop --host gw-site-0.local --host 192.168.1.10
      edgeloop provision relay --dir /etc/mosquitto/edgeloop --site site-0 --id relay-0
      edgeloop provision device --dir /etc/mosquitto/edgeloop --site site-0 --id dev-001
      edgeloop provision broker-config --dir /etc/mosquitto/edgeloop
    """


def _issue(kind: str, root: Path, site: str, ident_id: str, rotate: bool, reload_pid: int | None) -> None:
    issued = issue(root, kind, ident_id, site, rotate)
    verb = "new password for" if issued.rotated else "provisioned"
    click.echo(f"{verb} {kind} {ident_id} (site {site}); its credentials: {issued.credentials} (mode 0600)")
    _after_change(root, reload_pid)


@provision.command("device")
@_DIR
@click.option("--site", required=True, help="The device's site: it may publish only under edgeloop/SITE/ID/.")
@click.option("--id", "ident_id", required=True, help="Device id, also its MQTT username (letters, digits, - _ .).")
@click.option("--rotate", is_flag=True, help="Re-issue the password of a device already provisioned.")
@_RELOAD
def device(root, site, ident_id, rotate, reload_pid) -> None:
    """Create a device's MQTT password and ACL block; write its credentials file.

    The device may write only its own samples and state, read and write its feedback, and read its
    desired model and its site's campaigns and models. Copy DIR/credentials/ID.env to the device
    (e.g. /etc/edgeloop/credentials.env) and delete it here.

    \b
    Example:
      edgeloop provision device --dir /etc/mosquitto/edgeloop --site site-0 --id dev-001 \\
          --reload-pid $(pidof mosquitto)
    """
    _issue("device", root, site, ident_id, rotate, reload_pid)


@provision.command("relay")
@_DIR
@click.option("--site", required=True, help="The relay's site: it may read and write edgeloop/SITE/#.")
@click.option("--id", "ident_id", required=True, help="Relay id, also its MQTT username (letters, digits, - _ .).")
@click.option("--rotate", is_flag=True, help="Re-issue the password of a relay already provisioned.")
@_RELOAD
def relay(root, site, ident_id, rotate, reload_pid) -> None:
    """Create a relay's MQTT password and ACL block (its whole site); write its credentials file.

    \b
    Example:
      edgeloop provision relay --dir /etc/mosquitto/edgeloop --site site-0 --id relay-0
    """
    _issue("relay", root, site, ident_id, rotate, reload_pid)


@provision.command("revoke")
@_DIR
@click.option("--id", "ident_id", required=True, help="The device or relay to cut off.")
@_RELOAD
def revoke_cmd(root, ident_id, reload_pid) -> None:
    """Revoke a device or relay: delete its password, drop its ACL block, mark it revoked.

    The broker refuses it, and disconnects it if connected, once it reloads (SIGHUP).

    \b
    Example:
      edgeloop provision revoke --dir /etc/mosquitto/edgeloop --id dev-001 --reload-pid $(pidof mosquitto)
    """
    ident = revoke(root, ident_id)
    click.echo(f"revoked {ident.kind} {ident.id} (site {ident.site})")
    _after_change(root, reload_pid)


@provision.command("list")
@_DIR
def list_cmd(root) -> None:
    """List the devices and relays of the registry and whether they are revoked.

    \b
    Example:
      edgeloop provision list --dir /etc/mosquitto/edgeloop
    """
    for ident in sorted(load_registry(root).values(), key=lambda i: (i.site, i.kind, i.id)):
        status = f"revoked {ident.revoked_at}" if ident.revoked else "active"
        click.echo(f"{ident.site}\t{ident.kind}\t{ident.id}\t{status}")


@provision.command("broker-config")
@_DIR
@click.option("--port", default=1883, show_default=True, help="Plain MQTT listener (0: none, TLS only).")
@click.option("--tls-port", default=8883, show_default=True,
              help="TLS listener, present when DIR/tls has the certificates (`edgeloop provision tls`).")
@click.option("--bind", default=None,
              help="The plain listener's address (default: every interface; 127.0.0.1 when only the relay "
                   "on the gateway speaks plain MQTT).")
@click.option("--tls-bind", default=None, help="The TLS listener's address (default: every interface).")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="mosquitto's persistence folder (default DIR/data; e.g. /var/lib/mosquitto).")
@click.option("--user", default=None,
              help="The user mosquitto runs as (default: you; as root, Debian's `mosquitto`). It gets the "
                   "password file, ACL, server key and persistence folder.")
def broker_config(root, port, tls_port, bind, tls_bind, data, user) -> None:
    """Write DIR/mosquitto.conf: no anonymous clients, DIR's password file and ACL, persistence,
    and a TLS listener when DIR/tls has certificates.

    \b
    Example:
      edgeloop provision broker-config --dir /etc/mosquitto/edgeloop --bind 127.0.0.1 --tls-port 8883 \\
          --data /var/lib/mosquitto
      mosquitto -c /etc/mosquitto/edgeloop/mosquitto.conf
    """
    path, has_tls = write_broker_config(root, port, tls_port, user, bind, tls_bind, data)
    click.echo(f"wrote {path}")
    if has_tls:
        click.echo(f"TLS listener on port {tls_port}: clients use mqtts://HOST:{tls_port} "
                   f"and --ca {root / 'tls' / 'ca.crt'}")
    else:
        click.echo(f"no TLS listener: {root / 'tls'} has no certificates (edgeloop provision tls)")


@provision.command("tls")
@_DIR
@click.option("--host", "hosts", multiple=True, default=("127.0.0.1", "localhost"), show_default=True,
              help="A name or IP address clients use to reach the broker (repeat it); each goes into the "
                   "certificate, and clients check it.")
def tls(root, hosts) -> None:
    """Create a self-signed CA (once) and the broker's TLS certificate in DIR/tls.

    ca.crt goes to every device and relay (--ca, or EDGELOOP_MQTT_CA); ca.key signs the next server
    certificate (rerun this command to renew it or change the hosts) and should then leave the
    gateway. server.key stays with the broker (mode 0600).

    \b
    Example:
      edgeloop provision tls --dir /etc/mosquitto/edgeloop --host gw-site-0.local --host 192.168.1.10
    """
    files, new_ca = make_tls(root, list(hosts))
    click.echo(("created a CA: " if new_ca else "reused the CA: ") + f"{files['ca.crt']} (give it to clients), "
               f"{files['ca.key']} (private, mode 0600)")
    click.echo(f"broker certificate for {', '.join(hosts)}: {files['server.crt']}, {files['server.key']} (mode 0600)")
    click.echo("rerun `edgeloop provision broker-config` if the broker has no TLS listener yet, then restart it")
