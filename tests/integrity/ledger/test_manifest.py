"""integrity manifest export / verify: a signed-off manifest of an approved corpus."""
import json
import shutil

import polars as pl
import pytest
from typer.testing import CliRunner

from flows.build import build_spec
from flows.cli import app
from integrity.engine import pipeline
from integrity.ledger.manifest import ManifestError, export_manifest, verify_manifest


@pytest.fixture
def scanned(small_corpus, tmp_path, state_policy):
    """small_corpus scanned with quarantine off: a.jsonl warn, b.parquet warn/pass, c.jsonl.gz quarantine."""
    spec = build_spec(str(small_corpus), out=tmp_path / "run", policy=state_policy,
                      checks=["dedup.exact", "privacy.secret"], quarantine_mode="off")
    pipeline.run_scan(spec, workers=1)
    return small_corpus, spec.out


def test_export_lists_the_approved_shards_and_verify_passes(scanned, tmp_path):
    src, run = scanned
    doc = export_manifest(run, tmp_path / "m.json", signed_off_by="alice", hmac_key=b"s3cret")
    names = [s["name"] for s in doc["shards"]]
    assert names == ["a.jsonl", "b.parquet"] and doc["excluded"] == [{"name": "c.jsonl.gz", "verdict": "quarantine"}]
    shards = pl.read_parquet(run / "shards.parquet")
    assert {s["sha256"] for s in doc["shards"]} == set(shards.filter(pl.col("shard") != "c.jsonl.gz")["sha256"])
    assert doc["signature"]["alg"] == "hmac-sha256" and doc["signed_off_by"] == "alice"
    res = verify_manifest(tmp_path / "m.json", hmac_key=b"s3cret")
    assert res.ok and res.digest_ok and res.signature_ok
    # a copy of the corpus elsewhere verifies by name under --root
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    assert verify_manifest(tmp_path / "m.json", copy, hmac_key=b"s3cret").ok


def test_a_tampered_shard_fails_verification(scanned, tmp_path):
    src, run = scanned
    export_manifest(run, tmp_path / "m.json")
    with open(src / "a.jsonl", "a") as f:
        f.write('{"id": "x", "text": "injected after sign-off"}\n')
    (src / "b.parquet").unlink()
    res = verify_manifest(tmp_path / "m.json")
    assert not res.ok
    status = {s["name"]: s["status"] for s in res.shards}
    assert status == {"a.jsonl": "changed", "b.parquet": "missing"}
    changed = next(s for s in res.shards if s["name"] == "a.jsonl")
    assert changed["actual"] != changed["expected"]


def test_signature_and_digest_are_checked(scanned, tmp_path):
    _, run = scanned
    export_manifest(run, tmp_path / "m.json", hmac_key=b"right")
    assert verify_manifest(tmp_path / "m.json", hmac_key=b"wrong").signature_ok is False
    doc = json.loads((tmp_path / "m.json").read_text())
    doc["shards"][0]["sha256"] = "0" * 64  # someone edits the manifest to match a tampered shard
    (tmp_path / "m2.json").write_text(json.dumps(doc))
    res = verify_manifest(tmp_path / "m2.json", hmac_key=b"right")
    assert not res.ok and not res.digest_ok and res.signature_ok is False
    unsigned = tmp_path / "u.json"
    export_manifest(run, unsigned)
    assert verify_manifest(unsigned).ok  # nothing to check the signature against
    assert not verify_manifest(unsigned, require_signature=True).ok


def test_ed25519_signature(scanned, tmp_path):
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    _, run = scanned
    key = Ed25519PrivateKey.generate()
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    (tmp_path / "k.pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    export_manifest(run, tmp_path / "m.json", private_key=tmp_path / "k.pem")
    assert verify_manifest(tmp_path / "m.json", public_key=tmp_path / "k.pub").signature_ok is True
    other = Ed25519PrivateKey.generate().public_key()
    (tmp_path / "o.pub").write_bytes(other.public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo))
    assert verify_manifest(tmp_path / "m.json", public_key=tmp_path / "o.pub").signature_ok is False


def test_cli_export_and_verify_exit_codes(scanned, tmp_path, monkeypatch):
    src, run = scanned
    monkeypatch.setenv("MANIFEST_KEY", "k3y")
    runner = CliRunner()
    r = runner.invoke(app, ["manifest", "export", str(run), "--out", str(tmp_path / "m.json"),
                            "--key-env", "MANIFEST_KEY", "--signed-off-by", "ops"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["manifest", "verify", str(tmp_path / "m.json"), "--key-env", "MANIFEST_KEY",
                            "--require-signature"])
    assert r.exit_code == 0, r.output
    (src / "extra.jsonl").write_text('{"id": "e", "text": "not signed off"}\n')
    r = runner.invoke(app, ["manifest", "verify", str(tmp_path / "m.json"), "--root", str(src), "--strict"])
    assert r.exit_code == 2 and "extra.jsonl" in r.output
    with open(src / "b.parquet", "ab") as f:
        f.write(b"\0")
    r = runner.invoke(app, ["manifest", "verify", str(tmp_path / "m.json")])
    assert r.exit_code == 2 and "changed" in r.output
    r = runner.invoke(app, ["manifest", "verify", str(tmp_path / "missing.json")])
    assert r.exit_code == 3
    with pytest.raises(ManifestError):
        export_manifest(tmp_path, tmp_path / "x.json")
