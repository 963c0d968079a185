"""What `hub serve` checks before it starts: no template placeholder as a credential, --open on
loopback only."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import click

PLACEHOLDERS = ("replace-me", "change-me", "changeme")  # what templates such as deploy/k8s/secret.yaml ship


def refuse_placeholders(tokens, db: str | None, key_path: Path | None) -> None:
    """Fail loudly when a template's placeholder reached us as a token, a database URL or the key
    file: a hub must never come up with a credential everybody who read the template knows."""
    key_text = key_path.read_text(errors="replace") if key_path and key_path.is_file() else ""
    for what, value in [*(("--token (or EDGELOOP_HUB_TOKENS)", t) for t in tokens),
                        ("--db (or EDGELOOP_HUB_DB)", db or ""), (f"--key {key_path}", key_text)]:
        if any(p in value.lower() for p in PLACEHOLDERS):
            raise click.UsageError(f"{what} still holds a template's placeholder (REPLACE-ME / change-me): "
                                   "replace it with a generated value (see deploy/k8s/secret.yaml)")


def is_loopback(host: str) -> bool:
    """Whether `host` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
