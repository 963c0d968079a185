"""The hub's signing key: every model it registers is signed with it.

By default the key pair lives in the hub's data folder (`keys/hub.key`, `keys/hub.pub`) and is
created on first use; `--key` points at one made by `edgeloop keys init` instead. Devices are
provisioned with `hub.pub`.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from edgeloop.shared.signing import generate_keypair, key_id, load_private_key

log = logging.getLogger("edgeloop.hub")


def default_key_path(data_dir: Path) -> Path:
    return Path(data_dir) / "keys" / "hub.key"


def load_or_create(path: Path):
    """-> the private key at `path`, creating a new pair (hub.key 0600 + hub.pub) if there is none.

    Safe when several hubs start at once on one shared data folder: each writes a complete pair
    under temporary names and links it into place; the first link wins and the others load it."""
    if path.exists():
        return load_private_key(path.read_bytes())
    private_pem, public_pem = generate_keypair()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private_pem)
            f.flush()
            os.fsync(f.fileno())
        # The public half first: whoever sees hub.key may rely on hub.pub beside it.
        pub_tmp = tmp.with_name(tmp.name + ".pub")  # (with_suffix would drop the random part)
        pub_tmp.write_bytes(public_pem)
        try:
            os.link(tmp, path)  # atomic, and fails if another hub got there first
        except FileExistsError:
            return load_private_key(path.read_bytes())
        os.replace(pub_tmp, path.with_suffix(".pub"))
    finally:
        for t in (tmp, tmp.with_name(tmp.name + ".pub")):
            t.unlink(missing_ok=True)
    key = load_private_key(private_pem)
    log.info("created the hub signing key %s (key id %s); provision devices with %s",
             path, key_id(key), path.with_suffix(".pub"))
    return key
