"""`edgeloop keys ...` and `edgeloop model ...`: the hub's signing key pair, and signed model artifacts.

Exit codes: 0 ok; 1 the model or artifact is refused (unsigned, tampered, truncated, wrong key, does not
match its manifest); 2 an option or key file is wrong (unreadable key, files that already exist).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgeloop.atomic import write_atomic as _write_atomic
from edgeloop.shared.errors import ConfigError, ModelError

PRIVATE_NAME = "hub.key"
PUBLIC_NAME = "hub.pub"


def _fail(reason: str, code: int = 1) -> None:
    click.echo(f"error: {reason}", err=True)
    sys.exit(code)


def _read_key(path: Path, loader, what: str):
    try:
        return loader(path.read_bytes())
    except ConfigError as exc:
        _fail(f"{what} {path}: {exc}", 2)
    except OSError as exc:
        _fail(f"{what} {path}: cannot read ({exc.strerror})", 2)


# --- keys ---------------------------------------------------------------------------------------

@click.group()
def keys() -> None:
    """The hub's Ed25519 signing key pair: the hub signs models with hub.key, devices verify with hub.pub."""


@keys.command("init")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help=f"Folder to write {PRIVATE_NAME} (private, mode 0600) and {PUBLIC_NAME} (public) into.")
@click.option("--force", is_flag=True, help="Replace existing key files (models signed with the old key stop verifying).")
def init(out_dir: Path, force: bool) -> None:
    """Create a new signing key pair and print its key id.

    Keep hub.key on the hub only; give hub.pub to every device.

    \b
    Example:
      edgeloop keys init --out /etc/edgeloop/keys
    """
    from edgeloop.shared.signing import generate_keypair, key_id, load_public_key

    private_path, public_path = out_dir / PRIVATE_NAME, out_dir / PUBLIC_NAME
    existing = [str(p) for p in (private_path, public_path) if p.exists()]
    if existing and not force:
        _fail(f"{' and '.join(existing)} already {'exists' if len(existing) == 1 else 'exist'}; pass --force to replace "
              "(models signed with the old key will no longer verify)", 2)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        private_pem, public_pem = generate_keypair()
        _write_atomic(private_path, private_pem, 0o600)
        _write_atomic(public_path, public_pem, 0o644)
    except OSError as exc:
        _fail(f"cannot write keys to {out_dir}: {exc.strerror or exc}", 2)
    kid = key_id(load_public_key(public_pem))
    click.echo(f"key id   {kid}")
    click.echo(f"private  {private_path}  (keep on the hub; mode 0600)")
    click.echo(f"public   {public_path}  (give to devices)")


# --- model --------------------------------------------------------------------------------------

@click.group()
def model() -> None:
    """Signed model artifacts: pack an ONNX model and its manifest into one signed file, or verify one."""


@model.command("pack")
@click.argument("onnx_path", metavar="MODEL.onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--manifest", "manifest_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="The model's manifest (JSON).")
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help=f"The hub's private key ({PRIVATE_NAME} from `edgeloop keys init`).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Artifact file to write.")
def pack(onnx_path: Path, manifest_path: Path, key_path: Path, out_path: Path) -> None:
    """Check an ONNX model against its manifest, sign it and write the artifact.

    The model is loaded with onnxruntime and run once, as a device would, before it is signed.

    \b
    Example:
      edgeloop model pack model.onnx --manifest manifest.json --key keys/hub.key --out v7.model
    """
    from edgeloop.shared import artifact
    from edgeloop.shared.manifest import ModelManifest
    from edgeloop.shared.runtime import ModelRuntime
    from edgeloop.shared.signing import load_private_key

    private_key = _read_key(key_path, load_private_key, "--key")
    try:
        manifest = ModelManifest.from_json(manifest_path.read_bytes())
    except ModelError as exc:
        _fail(f"{manifest_path}: {exc}")
    onnx = onnx_path.read_bytes()
    try:
        ModelRuntime.load(onnx, manifest)
    except ModelError as exc:
        _fail(f"{onnx_path}: {exc}")
    data = artifact.sign_artifact(artifact.pack(manifest, onnx), private_key)
    art = artifact.unpack(data)
    art.verify(private_key.public_key())  # what a device will do; cheap next to the runtime check
    try:
        _write_atomic(out_path, data)
    except OSError as exc:
        _fail(f"cannot write {out_path}: {exc.strerror or exc}", 2)
    click.echo(f"packed   {out_path}")
    click.echo(f"version  {art.version}")
    click.echo(f"digest   {art.digest}")
    click.echo(f"key id   {art.key_id}")


@model.command("verify")
@click.argument("artifact_path", metavar="ARTIFACT", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--pubkey", "pubkey_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help=f"The hub's public key ({PUBLIC_NAME}).")
def verify(artifact_path: Path, pubkey_path: Path) -> None:
    """Check an artifact is whole, well formed and signed by the given key; exit 1 with the reason if not.

    \b
    Example:
      edgeloop model verify v7.model --pubkey /etc/edgeloop/keys/hub.pub
    """
    from edgeloop.shared import artifact
    from edgeloop.shared.signing import key_id, load_public_key

    public_key = _read_key(pubkey_path, load_public_key, "--pubkey")
    size = artifact_path.stat().st_size
    if size > artifact.MAX_ARTIFACT_BYTES:
        _fail(f"{artifact_path}: artifact: {size} bytes exceeds the limit of {artifact.MAX_ARTIFACT_BYTES}")
    try:
        art = artifact.unpack(artifact_path.read_bytes())
        art.verify(public_key)
    except ModelError as exc:
        _fail(f"{artifact_path}: {exc}")
    click.echo(f"verified {artifact_path}")
    click.echo(f"version  {art.version}")
    click.echo(f"digest   {art.digest}")
    click.echo(f"key id   {key_id(public_key)}")
