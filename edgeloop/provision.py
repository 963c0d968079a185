"""`edgeloop provision ...`: device and relay identities for a site broker (mosquitto), its ACL,
its config and a self-signed TLS path.

One folder holds a site broker's security; each command rewrites its part and keeps the rest consistent:

    DIR/identities.json      the registry: kind, id, site, revoked; the ACL is generated from it
    DIR/edgeloop.passwd      mosquitto's password file (hashed by mosquitto_passwd; mode 0600)
    DIR/edgeloop.acl         a `user` block per live identity, its site spelled out (never `+`)
    DIR/credentials/ID.env   what the device or relay needs: EDGELOOP_MQTT_PASSWORD=... (mode 0600)
    DIR/mosquitto.conf       `broker-config`: no anonymous clients, this password file and ACL
    DIR/tls/                 `tls`: ca.crt (give it to clients), ca.key, server.crt, server.key

mosquitto reads the password file and the ACL when it starts and on SIGHUP, so a new, rotated or
revoked identity takes effect when the broker reloads (`--reload-pid`, or `systemctl reload
mosquitto`). A reload also disconnects the clients whose password no longer verifies: a revoked
device is cut off, not only refused its next connection.

Errors: ProvisionError (a ConfigError: fix the input and run again) for a bad id, an unknown or
conflicting identity, a registry that does not parse, a missing mosquitto_passwd or a broker pid
that cannot be signalled. The CLI prints the message and a hint.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path


from edgeloop.atomic import write_atomic as _write_atomic
from edgeloop.shared import topics
from edgeloop.shared.errors import ConfigError
from edgeloop.shared.mqtt import BROKER_MAX_INFLIGHT


class ProvisionError(ConfigError):
    """An identity, the registry or a tool the provisioning needs is wrong or missing."""

    hint = "see deploy/README.md, section 'Provisioning devices and relays'"


KINDS = ("device", "relay")
REGISTRY, PASSWD, ACL, CONF = "identities.json", "edgeloop.passwd", "edgeloop.acl", "mosquitto.conf"
# A first character that is a letter or digit: an id is also an argv word (never an option) and a file name.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A device with one of these ids would write into edgeloop/{site}/campaigns or .../models/#, which
# every device of the site reads.
RESERVED_DEVICE_IDS = frozenset({"campaigns", "models"})
CA_DAYS, SERVER_DAYS = 3650, 825  # 825: the longest server certificate some TLS clients still accept


def check_name(value: str, what: str) -> str:
    """An id or a site: letters, digits, '-', '_', '.', starting with a letter or digit, at most 64."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ProvisionError(f"{what}: expected letters, digits, '-', '_' or '.' (starting with a letter or "
                             f"digit, at most 64), got {value!r}")
    return value


@dataclass(frozen=True)
class Identity:
    kind: str  # "device" | "relay"; the id is the MQTT username either way
    id: str
    site: str
    revoked: bool = False
    created: str = ""
    revoked_at: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ProvisionError(f"kind: expected one of {', '.join(KINDS)}, got {self.kind!r}")
        check_name(self.id, "id")
        check_name(self.site, "site")
        if self.kind == "device" and self.id in RESERVED_DEVICE_IDS:
            raise ProvisionError(f"id: {self.id!r} is reserved (edgeloop/SITE/{self.id} is a site-wide topic)")

    @classmethod
    def from_dict(cls, d: object, where: str) -> "Identity":
        if not isinstance(d, dict):
            raise ProvisionError(f"{where}: expected an object, got {type(d).__name__}")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ProvisionError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        try:
            ident = cls(**d)
        except TypeError as exc:  # a missing field
            raise ProvisionError(f"{where}: {exc}") from exc
        except ProvisionError as exc:
            raise ProvisionError(f"{where}.{exc}") from exc
        if not isinstance(ident.revoked, bool):
            raise ProvisionError(f"{where}.revoked: expected true or false, got {ident.revoked!r}")
        for name in ("created", "revoked_at"):
            if not isinstance(getattr(ident, name), str):
                raise ProvisionError(f"{where}.{name}: expected a time as text, got {getattr(ident, name)!r}")
        return ident


def acl_rules(ident: Identity) -> list[tuple[str, str]]:
    """(access, topic) pairs of one identity, its site explicit: what mosquitto's `topic` lines grant."""
    site, me = ident.site, ident.id
    if ident.kind == "relay":
        return [("readwrite", f"{topics.ROOT}/{site}/#")]
    return [("write", topics.samples(site, me)),
            ("write", topics.state(site, me)),  # also the last will: the broker checks it as a write
            ("readwrite", topics.feedback(site, me)),  # the application on the device flags predictions
            ("read", topics.desired(site, me)),
            ("read", topics.received(site, me)),  # the relay's receipts: what the device may delete
            ("read", topics.campaigns(site)),
            ("read", f"{topics.ROOT}/{site}/models/#")]


def render_acl(identities: list[Identity]) -> str:
    """The mosquitto ACL file for these identities; revoked ones get no block (so no access at all)."""
    out = ["# Generated by `edgeloop provision` from identities.json: edit with `edgeloop provision`,",
           "# not by hand (every provision and revoke rewrites it). mosquitto reads it at start and on SIGHUP.",
           "# No `topic` line before the first `user` block: a client without a block is granted nothing.",
           "# The username is the device or relay id; each block names its site, so a device cannot write",
           "# under another device or another site."]
    for ident in sorted(identities, key=lambda i: (i.site, i.kind, i.id)):
        if ident.revoked:
            out += ["", f"# {ident.kind} {ident.id} (site {ident.site}): revoked {ident.revoked_at}"]
            continue
        out += ["", f"# {ident.kind} {ident.id}, site {ident.site}", f"user {ident.id}"]
        out += [f"topic {access} {topic}" for access, topic in acl_rules(ident)]
    return "\n".join(out) + "\n"


def render_broker_conf(root: Path, port: int, tls_port: int | None, user: str, bind: str | None = None,
                       tls_bind: str | None = None, data: Path | None = None) -> str:
    """mosquitto.conf for the files in `root`; port 0: no plain listener; tls_port None: no TLS listener;
    bind / tls_bind: the address of each listener (None: every interface); data: the persistence
    folder (default root/data)."""
    root = root.resolve()
    data = (data or root / "data").resolve()
    out = ["# Generated by `edgeloop provision broker-config`; rerun it rather than editing this file.",
           "# mosquitto starts as root, then runs as this user, which must read the files below.",
           f"user {user}",
           "per_listener_settings false",
           "allow_anonymous false",
           f"password_file {root / PASSWD}",
           f"acl_file {root / ACL}",
           "# No autosave_on_changes: mosquitto acknowledges before it saves, so no setting makes a",
           "# PUBACK durable. Agents delete on the relay's receipt instead (it has them on disk).",
           "persistence true",
           f"persistence_location {data}/",
           "max_queued_messages 100000",
           "# The relay stores what is in flight to it in one commit: more than the default 20 at once.",
           f"max_inflight_messages {BROKER_MAX_INFLIGHT}"]
    # On every listener (mosquitto 2.0 takes it per listener; written before the first one it would
    # open a default listener on 1883, every interface): a client's id is its username, so another
    # identity connecting under the relay's client id (predictable, with a persistent session) can
    # neither wipe what is queued for it nor kick it off.
    same_id = ["use_username_as_clientid true"]
    if port:
        out += ["", "# Plain MQTT: for the relay on the gateway (bound to 127.0.0.1) or a trusted network only.",
                f"listener {port}{' ' + bind if bind else ''}", *same_id]
    if tls_port is not None:
        tls = root / "tls"
        out += ["", "# MQTT over TLS: clients connect to mqtts://HOST:PORT and verify with ca.crt.",
                f"listener {tls_port}{' ' + tls_bind if tls_bind else ''}", *same_id,
                f"cafile {tls / 'ca.crt'}", f"certfile {tls / 'server.crt'}", f"keyfile {tls / 'server.key'}",
                "tls_version tlsv1.2"]
    return "\n".join(out) + "\n"


# --- files ----------------------------------------------------------------------------------------

def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _broker_owner(root: Path) -> tuple[int, int] | None:
    """(uid, gid) of the `user` in DIR/mosquitto.conf when we run as root and it is someone else:
    mosquitto reads the password file and the ACL after dropping to that user."""
    if os.geteuid() != 0 or not (root / CONF).exists():
        return None
    for line in (root / CONF).read_text().splitlines():
        word, _, name = line.strip().partition(" ")
        if word == "user" and name.strip():
            try:
                pw = pwd.getpwnam(name.strip())
            except KeyError:
                raise ProvisionError(f"{root / CONF}: user {name.strip()!r} does not exist") from None
            return None if pw.pw_uid == 0 else (pw.pw_uid, pw.pw_gid)
    return None


def _give_to_broker(root: Path, *paths: Path) -> None:
    if owner := _broker_owner(root):
        for p in paths:
            os.chown(p, *owner)


@contextlib.contextmanager
def _locked(root: Path):
    """One provisioning command at a time per folder: each reads, changes and rewrites the registry."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".provision.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def load_registry(root: Path) -> dict[str, Identity]:
    path = root / REGISTRY
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ProvisionError(f"{path}: {exc}") from exc
    items = doc.get("identities") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ProvisionError(f"{path}: expected {{\"identities\": [...]}}")
    out: dict[str, Identity] = {}
    for i, d in enumerate(items):
        ident = Identity.from_dict(d, f"{path.name}: identities[{i}]")
        if ident.id in out:
            raise ProvisionError(f"{path.name}: identities[{i}].id: {ident.id!r} appears twice")
        out[ident.id] = ident
    return out


def _save(root: Path, identities: dict[str, Identity]) -> None:
    """The registry, then the ACL generated from it."""
    doc = {"identities": [asdict(i) for i in sorted(identities.values(), key=lambda i: i.id)]}
    _write_atomic(root / REGISTRY, (json.dumps(doc, indent=2) + "\n").encode(), 0o600)
    _write_atomic(root / ACL, render_acl(list(identities.values())).encode(), 0o600)
    _give_to_broker(root, root / ACL)


def _passwd_users(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {line.split(":", 1)[0] for line in path.read_text().splitlines() if ":" in line}


def _mosquitto_passwd(args: list[str], stdin: str = "") -> None:
    exe = shutil.which("mosquitto_passwd")
    if exe is None:
        raise ProvisionError("mosquitto_passwd is not installed; it hashes the passwords mosquitto checks "
                             "(Debian: apt-get install mosquitto)")
    try:
        proc = subprocess.run([exe, *args], input=stdin, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise ProvisionError(f"mosquitto_passwd {' '.join(args)} did not finish") from exc
    if proc.returncode != 0:
        raise ProvisionError(f"mosquitto_passwd {' '.join(args)} failed: "
                             f"{(proc.stderr or proc.stdout).strip() or f'exit code {proc.returncode}'}")


def _ensure_passwd(root: Path) -> Path:
    path = root / PASSWD
    if not path.exists():
        _write_atomic(path, b"", 0o600)  # mosquitto refuses to start without its password file
        _give_to_broker(root, path)
    return path


def _set_password(root: Path, user: str, password: str) -> None:
    path = _ensure_passwd(root)
    # On stdin (prompt, then confirmation), not `-b USER PASSWORD`: argv is visible to every local user.
    _mosquitto_passwd([str(path), user], stdin=f"{password}\n{password}\n")
    os.chmod(path, 0o600)


# --- operations -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Issued:
    identity: Identity
    credentials: Path  # DIR/credentials/ID.env
    rotated: bool


def issue(root: Path, kind: str, ident_id: str, site: str, rotate: bool = False) -> Issued:
    """Create (or with rotate=True, re-issue) the credentials of a device or relay, and regenerate
    the ACL. A revoked id may be provisioned again: it gets a new password."""
    new = Identity(kind, check_name(ident_id, "--id"), check_name(site, "--site"), created=_now())
    with _locked(root):
        identities = load_registry(root)
        old = identities.get(new.id)
        if old and not old.revoked:
            if (old.kind, old.site) != (new.kind, new.site):
                raise ProvisionError(f"{old.id} is already the {old.kind} of site {old.site}; revoke it first")
            if not rotate:
                raise ProvisionError(f"{kind} {new.id} (site {site}) is already provisioned; --rotate issues a "
                                     "new password (the old one stops working at the broker's next reload)")
        password = secrets.token_urlsafe(32)
        # Password first, registry and ACL after: a crash between them leaves a user with no ACL
        # block, whom mosquitto grants nothing.
        _set_password(root, new.id, password)
        creds = root / "credentials"
        creds.mkdir(mode=0o700, exist_ok=True)
        path = creds / f"{new.id}.env"
        id_var = "DEVICE" if kind == "device" else "RELAY_ID"
        # Also a systemd EnvironmentFile: DEVICE/RELAY_ID and SITE are what deploy/systemd's units read.
        text = (f"# edgeloop {kind} {new.id}, site {site}: the MQTT username is the id. Secret: mode 0600.\n"
                f"{id_var}={new.id}\nSITE={site}\nEDGELOOP_MQTT_PASSWORD={password}\n")
        _write_atomic(path, text.encode(), 0o600)
        if old and not old.revoked:  # a rotation: the identity is as old as it was
            new = Identity(new.kind, new.id, new.site, created=old.created)
        identities[new.id] = new
        _save(root, identities)
    return Issued(new, path, rotated=bool(old and not old.revoked))


def revoke(root: Path, ident_id: str) -> Identity:
    """Remove the id's password, mark it revoked and regenerate the ACL. Idempotent."""
    check_name(ident_id, "--id")
    with _locked(root):
        identities = load_registry(root)
        if ident_id not in identities:
            raise ProvisionError(f"{ident_id}: no such device or relay in {root / REGISTRY}")
        if ident_id in _passwd_users(root / PASSWD):
            _mosquitto_passwd(["-D", str(root / PASSWD), ident_id])
            os.chmod(root / PASSWD, 0o600)
        ident = identities[ident_id]
        if not ident.revoked:
            ident = Identity(ident.kind, ident.id, ident.site, True, ident.created, _now())
            identities[ident_id] = ident
        _save(root, identities)
        (root / "credentials" / f"{ident_id}.env").unlink(missing_ok=True)  # a dead secret, if still here
    return ident


def reload_broker(pid: int) -> None:
    """SIGHUP: mosquitto rereads its password file and ACL, and drops clients that no longer verify."""
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as exc:
        raise ProvisionError(f"--reload-pid {pid}: no such process") from exc
    except PermissionError as exc:
        raise ProvisionError(f"--reload-pid {pid}: not allowed to signal it (run as its user or root)") from exc


def tls_files(root: Path) -> dict[str, Path]:
    tls = root / "tls"
    return {name: tls / name for name in ("ca.crt", "ca.key", "server.crt", "server.key")}


def write_broker_config(root: Path, port: int = 1883, tls_port: int = 8883, user: str | None = None,
                        bind: str | None = None, tls_bind: str | None = None,
                        data: Path | None = None) -> tuple[Path, bool]:
    """DIR/mosquitto.conf (-> its path, whether it has a TLS listener); also creates an empty password
    file and the ACL if missing, and the persistence folder, all readable by the broker's user."""
    user = user or default_broker_user()
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise ProvisionError(f"--user {user}: no such user") from None
    files = tls_files(root)
    has_tls = all(files[n].exists() for n in ("ca.crt", "server.crt", "server.key"))
    if not port and not has_tls:
        raise ProvisionError("--port 0 (no plain listener) needs the TLS listener: run `edgeloop provision tls` first")
    with _locked(root):
        data = data or root / "data"
        text = render_broker_conf(root, port, tls_port if has_tls else None, user, bind, tls_bind, data)
        _write_atomic(root / CONF, text.encode(), 0o644)
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        _ensure_passwd(root)
        _save(root, load_registry(root))
        if os.geteuid() == 0 and pw.pw_uid != 0:
            owned = [data, root / PASSWD, root / ACL] + ([files["server.key"]] if has_tls else [])
            for p in owned:
                os.chown(p, pw.pw_uid, pw.pw_gid)
            # The broker's user must be able to reach the files: no secret is readable through this bit.
            for d in (root, root / "tls"):
                if d.exists():
                    d.chmod(d.stat().st_mode | 0o711)
    return root / CONF, has_tls


def default_broker_user() -> str:
    """The user mosquitto drops to: ourselves, or Debian's `mosquitto` when we are root."""
    me = pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() != 0:
        return me
    try:
        return pwd.getpwnam("mosquitto").pw_name
    except KeyError:
        return me


def make_tls(root: Path, hosts: list[str]) -> tuple[dict[str, Path], bool]:
    """A self-signed CA (reused if DIR/tls has one) and a broker certificate for `hosts`
    (DNS names or IP addresses) -> (the files, whether the CA is new). ECDSA P-256: every TLS
    stack in use (OpenSSL, mbedTLS, BearSSL) speaks it, unlike Ed25519."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not hosts:
        raise ProvisionError("--host: give at least one name or address clients use to reach the broker")
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            if not re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9][A-Za-z0-9-]{0,62})*", h):
                raise ProvisionError(f"--host {h!r}: expected a DNS name or an IP address") from None
            sans.append(x509.DNSName(h))
    files = tls_files(root)
    now = dt.datetime.now(dt.timezone.utc)
    pem = serialization.Encoding.PEM
    plain_key = dict(encoding=pem, format=serialization.PrivateFormat.PKCS8,
                     encryption_algorithm=serialization.NoEncryption())
    with _locked(root):
        files["ca.crt"].parent.mkdir(mode=0o755, exist_ok=True)
        new_ca = not (files["ca.crt"].exists() and files["ca.key"].exists())
        if new_ca:
            ca_key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgeloop site CA"),
                              x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgeloop")])
            ca_cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                       .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
                       .not_valid_before(now - dt.timedelta(minutes=5))
                       .not_valid_after(now + dt.timedelta(days=CA_DAYS))
                       .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                       .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                                    key_encipherment=False, data_encipherment=False,
                                                    key_agreement=False, key_cert_sign=True, crl_sign=True,
                                                    encipher_only=False, decipher_only=False), critical=True)
                       .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
                       .sign(ca_key, hashes.SHA256()))
            _write_atomic(files["ca.key"], ca_key.private_bytes(**plain_key), 0o600)
            _write_atomic(files["ca.crt"], ca_cert.public_bytes(pem), 0o644)
        else:
            try:
                ca_key = serialization.load_pem_private_key(files["ca.key"].read_bytes(), password=None)
                ca_cert = x509.load_pem_x509_certificate(files["ca.crt"].read_bytes())
            except ValueError as exc:
                raise ProvisionError(f"{files['ca.key'].parent}: the CA does not load ({exc}); "
                                     "move ca.crt and ca.key away to create a new CA") from exc
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=False, crl_sign=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        _write_atomic(files["server.key"], key.private_bytes(**plain_key), 0o600)
        _write_atomic(files["server.crt"], cert.public_bytes(pem), 0o644)
        _give_to_broker(root, files["server.key"])
    return files, new_ca
