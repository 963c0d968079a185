"""Signed model artifacts: a good one verifies; unsigned, tampered, truncated or foreign-key ones are refused."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeloop.shared import artifact, signing
from edgeloop.shared.errors import ConfigError, IntegrityError, ModelError
from edgeloop.shared.manifest import ModelManifest

MANIFEST = ModelManifest.from_dict({
    "version": "m-3",
    "task": "classification",
    "input": {"name": "input", "height": 32, "width": 32},
    "outputs": {"logits": "logits", "embedding": "embedding"},
    "labels": ["cat", "dog", "bird"],
    "parent": "m-2",
    "metrics": {"accuracy": 0.9},
    "created_at": "2024-05-01T12:00:00Z",
})
ONNX = b"\x08\x07\x12\x07pytorch" + bytes(range(256))  # opaque to the artifact code

PRIV_PEM, PUB_PEM = signing.generate_keypair()
PRIV, PUB = signing.load_private_key(PRIV_PEM), signing.load_public_key(PUB_PEM)
OTHER_PRIV = signing.load_private_key(signing.generate_keypair()[0])
SIGNED = artifact.sign_artifact(artifact.pack(MANIFEST, ONNX), PRIV)


def unpack_and_verify(data: bytes, pub=PUB) -> artifact.ModelArtifact:
    art = artifact.unpack(data)
    art.verify(pub)
    return art


# --- keys and signatures ------------------------------------------------------------------------

def test_keypair_pem_formats_and_key_id():
    assert PRIV_PEM.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert PUB_PEM.startswith(b"-----BEGIN PUBLIC KEY-----")
    kid = signing.key_id(PUB)
    assert len(kid) == 16 and int(kid, 16) >= 0
    assert kid == signing.key_id(PRIV.public_key()) != signing.key_id(OTHER_PRIV.public_key())


def test_sign_verify_digest_round_trip():
    digest = artifact.model_digest(b"m", b"o")
    sig = signing.sign_digest(PRIV, digest)
    assert len(sig) == 64
    signing.verify_digest(PUB, digest, sig)
    other = artifact.model_digest(b"m", b"p")
    with pytest.raises(IntegrityError, match="signature does not verify"):
        signing.verify_digest(PUB, other, sig)
    with pytest.raises(IntegrityError, match="signature does not verify"):
        signing.verify_digest(signing.load_public_key(signing.generate_keypair()[1]), digest, sig)
    with pytest.raises(IntegrityError):
        signing.verify_digest(PUB, digest, sig[:-1])


@pytest.mark.parametrize("pem", [
    b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", PUB_PEM,
], ids=["empty", "garbage", "bad-base64-body", "public-pem"])
def test_unreadable_private_key_is_a_config_error(pem):
    with pytest.raises(ConfigError, match="^private key: "):
        signing.load_private_key(pem)


@pytest.mark.parametrize("pem", [b"", b"garbage", PRIV_PEM], ids=["empty", "garbage", "private-pem"])
def test_unreadable_public_key_is_a_config_error(pem):
    with pytest.raises(ConfigError, match="^public key: "):
        signing.load_public_key(pem)


def test_a_key_of_another_type_is_a_config_error():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    k = ec.generate_private_key(ec.SECP256R1())
    priv = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pub = k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ConfigError, match="expected an Ed25519 key"):
        signing.load_private_key(priv)
    with pytest.raises(ConfigError, match="expected an Ed25519 key"):
        signing.load_public_key(pub)
    encrypted = PRIV.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.BestAvailableEncryption(b"pw"))
    with pytest.raises(ConfigError, match="encrypted"):
        signing.load_private_key(encrypted)


# --- signed artifacts ---------------------------------------------------------------------------

def test_signed_artifact_round_trip():
    art = unpack_and_verify(SIGNED)
    assert art.manifest == MANIFEST and art.onnx == ONNX and art.version == "m-3"
    assert art.key_id == signing.key_id(PUB) and len(art.signature) == 64
    # Signing keeps the digest: the manifest bytes are not re-serialised.
    assert art.digest == artifact.unpack(artifact.pack(MANIFEST, ONNX)).digest


def test_pack_with_signature_matches_sign_artifact_and_two_arg_pack_is_unchanged():
    digest = artifact.model_digest(MANIFEST.to_json(), ONNX)
    data = artifact.pack(MANIFEST, ONNX, signing.sign_digest(PRIV, digest), signing.key_id(PUB))
    assert data == SIGNED  # Ed25519 is deterministic
    plain = artifact.pack(MANIFEST, ONNX)
    assert msgpack.unpackb(plain) .keys() == {"v", "type", "manifest", "onnx", "digest_v"}
    assert artifact.unpack(plain).signature is None and artifact.unpack(plain).key_id is None


def test_sign_artifact_keeps_foreign_manifest_bytes():
    mb = b'{"version": "x-1", "task": "classification", "input": {"name": "i", "height": 8, "width": 8},\n' \
         b' "outputs": {"logits": "l"}, "labels": ["a", "b"]}'
    raw = msgpack.packb({"v": 1, "type": "model", "manifest": mb, "onnx": ONNX}, use_bin_type=True)
    art = unpack_and_verify(artifact.sign_artifact(raw, PRIV))
    assert art.manifest_bytes == mb and art.digest == artifact.model_digest(mb, ONNX) and art.digest_v == 2


def test_an_artifact_signed_before_framing_still_verifies_and_framing_cannot_be_stripped():
    # digest_v 1 (no key): signed over sha256(manifest ‖ onnx), as every artifact made before.
    mb = MANIFEST.to_json()
    legacy_sig = signing.sign_digest(PRIV, artifact.model_digest(mb, ONNX, framed=False))
    legacy = msgpack.packb({"v": 1, "type": "model", "manifest": mb, "onnx": ONNX, "signature": legacy_sig,
                            "key_id": signing.key_id(PUB)}, use_bin_type=True)
    assert unpack_and_verify(legacy).digest_v == 1
    # A framed signature does not pass for the legacy digest: dropping digest_v from SIGNED fails.
    raw = msgpack.unpackb(SIGNED, raw=False)
    del raw["digest_v"]
    with pytest.raises(IntegrityError):
        unpack_and_verify(msgpack.packb(raw, use_bin_type=True))


@given(st.binary(min_size=1, max_size=64), st.binary(min_size=1, max_size=64), st.integers(1, 63))
def test_the_framed_digest_cannot_be_re_split(manifest, onnx, cut):
    """The same bytes split elsewhere between manifest and ONNX make another framed digest (the legacy,
    plain concatenation did not tell them apart)."""
    joined = manifest + onnx
    cut = cut % len(joined)
    if cut == len(manifest) or cut == 0:
        return
    other = (joined[:cut], joined[cut:])
    assert artifact.model_digest(*other, framed=False) == artifact.model_digest(manifest, onnx, framed=False)
    assert artifact.model_digest(*other) != artifact.model_digest(manifest, onnx)


def test_resigning_replaces_the_signature():
    art = unpack_and_verify(artifact.sign_artifact(artifact.sign_artifact(SIGNED, OTHER_PRIV), PRIV))
    assert art.key_id == signing.key_id(PUB)


def test_unsigned_artifact_is_refused():
    with pytest.raises(IntegrityError, match="^artifact is unsigned$"):
        unpack_and_verify(artifact.pack(MANIFEST, ONNX))


def test_signed_by_another_key_names_that_key():
    data = artifact.sign_artifact(artifact.pack(MANIFEST, ONNX), OTHER_PRIV)
    other_id = signing.key_id(OTHER_PRIV.public_key())
    with pytest.raises(IntegrityError, match="signed by another key") as info:
        unpack_and_verify(data)
    assert other_id in str(info.value) and signing.key_id(PUB) in str(info.value)


def _repack(**changes) -> bytes:
    raw = msgpack.unpackb(SIGNED, raw=False)
    raw.update(changes)
    return msgpack.packb({k: v for k, v in raw.items() if v is not None}, use_bin_type=True)


@settings(max_examples=200)
@given(st.data())
def test_one_flipped_onnx_byte_is_refused(data):
    i = data.draw(st.integers(0, len(ONNX) - 1), label="index")
    flip = data.draw(st.integers(1, 255), label="xor")
    onnx = ONNX[:i] + bytes([ONNX[i] ^ flip]) + ONNX[i + 1:]
    with pytest.raises(IntegrityError, match="signature does not verify"):
        unpack_and_verify(_repack(onnx=onnx))


def test_a_changed_manifest_is_refused():
    mb = MANIFEST.to_json().replace(b'"m-3"', b'"m-4"')
    with pytest.raises(IntegrityError, match="signature does not verify"):
        unpack_and_verify(_repack(manifest=mb))


def test_a_tampered_key_id_is_refused():
    with pytest.raises(IntegrityError, match="key_id .* does not match"):
        unpack_and_verify(_repack(key_id="0123456789abcdef"))


@pytest.mark.parametrize("changes", [
    {"signature": b"\x00" * 63}, {"signature": b"\x00" * 65}, {"signature": "x" * 64}, {"signature": 7},
    {"key_id": "ABCDEF0123456789"}, {"key_id": "abc"}, {"key_id": 12},
    {"signature": None},  # key_id left without a signature
    {"extra": b"x"},
], ids=["sig-63", "sig-65", "sig-str", "sig-int", "kid-upper", "kid-short", "kid-int", "kid-no-sig", "unknown-key"])
def test_malformed_signature_fields_are_integrity_errors(changes):
    with pytest.raises(IntegrityError, match="^artifact: "):
        artifact.unpack(_repack(**changes))


def test_v_true_is_not_v1():
    with pytest.raises(IntegrityError, match="^artifact: "):
        artifact.unpack(_repack(v=True))


def _flip(data: bytes, i: int, xor: int) -> bytes:
    return data[:i] + bytes([data[i] ^ xor]) + data[i + 1:]


@pytest.mark.parametrize("xor", [0x01, 0x02, 0x10, 0x80, 0xC2, 0xFF])
def test_every_single_flipped_byte_of_the_file_is_refused(xor):
    for i in range(len(SIGNED)):
        with pytest.raises(ModelError):
            unpack_and_verify(_flip(SIGNED, i, xor))


@settings(max_examples=300)
@given(st.data())
def test_a_random_flipped_byte_of_the_file_is_refused(data):
    i = data.draw(st.integers(0, len(SIGNED) - 1), label="index")
    xor = data.draw(st.integers(1, 255), label="xor")
    with pytest.raises(ModelError):
        unpack_and_verify(_flip(SIGNED, i, xor))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_strict_prefix_is_refused(data):
    cut = data.draw(st.integers(0, len(SIGNED) - 1), label="cut")
    with pytest.raises(ModelError):
        unpack_and_verify(SIGNED[:cut])


def test_every_strict_prefix_is_refused():
    for cut in range(len(SIGNED)):
        with pytest.raises(IntegrityError):
            artifact.unpack(SIGNED[:cut])


# --- CLI ----------------------------------------------------------------------------------------

def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeloop", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """keys init + model pack of a real exported model: (folder, hub.key, hub.pub, artifact path, stdout)."""
    pytest.importorskip("torch")
    from edgeloop.hub.training.classifier import build_net, export_onnx

    d = tmp_path_factory.mktemp("signed")
    onnx, manifest = export_onnx(build_net(), version="v1", parent=None)
    (d / "model.onnx").write_bytes(onnx)
    (d / "manifest.json").write_bytes(manifest.to_json())
    proc = run("keys", "init", "--out", str(d / "keys"))
    assert proc.returncode == 0, proc.stderr
    key, pub = d / "keys" / "hub.key", d / "keys" / "hub.pub"
    proc = run("model", "pack", str(d / "model.onnx"), "--manifest", str(d / "manifest.json"),
               "--key", str(key), "--out", str(d / "v1.model"))
    assert proc.returncode == 0, proc.stderr
    return d, key, pub, d / "v1.model", proc.stdout


def assert_refused(proc: subprocess.CompletedProcess, reason: str, code: int = 1) -> None:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: "), proc.stderr
    assert reason in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_keys_init_writes_a_private_and_public_key(packed):
    d, key, pub, _, _ = packed
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    kid = signing.key_id(signing.load_public_key(pub.read_bytes()))
    assert kid == signing.key_id(signing.load_private_key(key.read_bytes()).public_key())


def test_cli_keys_init_refuses_to_overwrite_unless_forced(tmp_path):
    proc = run("keys", "init", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    first = (tmp_path / "hub.key").read_bytes()
    assert signing.key_id(signing.load_public_key((tmp_path / "hub.pub").read_bytes())) in proc.stdout
    assert_refused(run("keys", "init", "--out", str(tmp_path)), "already exist", code=2)
    assert (tmp_path / "hub.key").read_bytes() == first
    proc = run("keys", "init", "--out", str(tmp_path), "--force")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "hub.key").read_bytes() != first
    assert stat.S_IMODE(os.stat(tmp_path / "hub.key").st_mode) == 0o600


def test_cli_verify_a_good_artifact(packed):
    d, key, pub, model, pack_out = packed
    art = unpack_and_verify(model.read_bytes(), signing.load_public_key(pub.read_bytes()))
    proc = run("model", "verify", str(model), "--pubkey", str(pub))
    assert proc.returncode == 0, proc.stderr
    kid = signing.key_id(signing.load_public_key(pub.read_bytes()))
    for text in (art.version, art.digest, kid):
        assert text in proc.stdout and text in pack_out


def test_cli_verify_refusals(packed, tmp_path):
    d, key, pub, model, _ = packed
    data = model.read_bytes()
    art = artifact.unpack(data)
    cases = {
        "unsigned": (artifact.pack(art.manifest, art.onnx), "artifact is unsigned"),
        "onnx-byte": (artifact._pack(art.manifest_bytes, _flip(art.onnx, len(art.onnx) // 2, 0x01), art.signature,
                                     art.key_id), "signature does not verify"),
        "file-byte": (_flip(data, len(data) - 200, 0x40), "signature does not verify"),
        "truncated": (data[:len(data) // 2], "truncated or not an edgeloop model artifact"),
        "not-an-artifact": ((d / "model.onnx").read_bytes(), "not an edgeloop model artifact"),
        "empty": (b"", "truncated or not an edgeloop model artifact"),
    }
    for name, (blob, reason) in cases.items():
        path = tmp_path / f"{name}.model"
        path.write_bytes(blob)
        assert_refused(run("model", "verify", str(path), "--pubkey", str(pub)), reason)

    other = tmp_path / "other"
    assert run("keys", "init", "--out", str(other)).returncode == 0
    other_id = signing.key_id(signing.load_public_key((other / "hub.pub").read_bytes()))
    proc = run("model", "verify", str(model), "--pubkey", str(other / "hub.pub"))
    assert_refused(proc, "signed by another key")
    assert other_id in proc.stderr and art.key_id in proc.stderr


def test_cli_bad_key_files_are_config_errors(packed, tmp_path):
    d, key, pub, model, _ = packed
    assert_refused(run("model", "verify", str(model), "--pubkey", str(key)), "--pubkey", code=2)
    assert_refused(run("model", "pack", str(d / "model.onnx"), "--manifest", str(d / "manifest.json"),
                       "--key", str(pub), "--out", str(tmp_path / "x.model")), "--key", code=2)
    assert not (tmp_path / "x.model").exists()


def test_cli_pack_refuses_a_model_that_does_not_match_its_manifest(packed, tmp_path):
    d, key, pub, model, _ = packed
    wrong = ModelManifest.from_json((d / "manifest.json").read_bytes())
    bad = tmp_path / "manifest.json"
    bad.write_bytes(wrong.to_json().replace(b'"logits": "logits"', b'"logits": "nope"'))
    proc = run("model", "pack", str(d / "model.onnx"), "--manifest", str(bad), "--key", str(key),
               "--out", str(tmp_path / "x.model"))
    assert_refused(proc, "'nope' is not an output of the model")
    bad.write_bytes(b"{not json")
    proc = run("model", "pack", str(d / "model.onnx"), "--manifest", str(bad), "--key", str(key),
               "--out", str(tmp_path / "x.model"))
    assert_refused(proc, "manifest: not valid JSON")
    assert not (tmp_path / "x.model").exists()
