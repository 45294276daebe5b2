"""Signed-off manifests of an approved corpus, for training jobs to verify before reading.

``integrity manifest export RUN_DIR --out corpus.manifest.json`` lists every
shard a scan approved (verdict ``pass``, and ``warn`` unless ``--only-pass``)
with its SHA-256 (the same content hash the scan and the quarantine use: the
file's bytes, or for a Hugging Face dataset directory the digest of its files),
its size and rows; who signed it off, when, the scan and the policy hash. The
whole document is hashed (``digest``: SHA-256 of its canonical JSON without
the ``digest`` and ``signature`` fields) and optionally signed:

* ``hmac-sha256`` with a shared secret (``--key-env VAR`` or ``--key-file``);
* ``ed25519`` with a PEM private key (``--private-key``; verify with the PEM
  public key), when the ``cryptography`` package is installed.

A training job runs ``integrity manifest verify corpus.manifest.json [--root
DIR]`` (exit 0: every shard present and unchanged and the signature valid;
2: a shard is missing, changed or extra, or the signature or digest is wrong;
3: the manifest cannot be read), or calls :func:`verify_manifest` and checks
``result.ok``. With ``--root`` shards are looked up by name under that
directory (a copied corpus), else at their recorded URI.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

MANIFEST_FORMAT = "integrity-manifest/1"


class ManifestError(ValueError):
    """The manifest cannot be exported or read (the message says why)."""


# --------------------------------------------------------------------------- canonical form, digest, signatures


def canonical(doc: dict[str, Any]) -> bytes:
    """The bytes that are hashed and signed: sorted-key compact JSON without digest and signature."""
    body = {k: v for k, v in doc.items() if k not in ("digest", "signature")}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def digest_of(doc: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(doc)).hexdigest()


def read_key(key_env: str | None = None, key_file: str | Path | None = None) -> bytes | None:
    """An HMAC secret from an environment variable or a file (None when neither is given)."""
    if key_env:
        v = os.environ.get(key_env)
        if not v:
            raise ManifestError(f"environment variable {key_env} holds no key")
        return v.encode("utf-8")
    if key_file:
        try:
            return Path(key_file).read_bytes().strip()
        except OSError as e:
            raise ManifestError(f"cannot read key file {key_file}: {e.strerror}") from e
    return None


def _sign(doc: dict, hmac_key: bytes | None, private_key: str | Path | None) -> dict | None:
    if private_key:
        try:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        except ImportError as e:  # pragma: no cover - cryptography ships with prefect
            raise ManifestError("ed25519 signatures need the 'cryptography' package") from e
        key = serialization.load_pem_private_key(Path(private_key).read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ManifestError(f"{private_key} is not an Ed25519 private key")
        pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"alg": "ed25519", "value": key.sign(canonical(doc)).hex(),
                "key_id": hashlib.sha256(pub).hexdigest()[:16]}
    if hmac_key:
        return {"alg": "hmac-sha256", "value": hmac.new(hmac_key, canonical(doc), hashlib.sha256).hexdigest(),
                "key_id": hashlib.sha256(b"key-id:" + hmac_key).hexdigest()[:16]}
    return None


def _check_signature(doc: dict, hmac_key: bytes | None, public_key: str | Path | None) -> tuple[bool | None, str]:
    """(valid?, message); valid is None when there is nothing to check against."""
    sig = doc.get("signature")
    if not sig:
        return (None, "the manifest is not signed") if not (hmac_key or public_key) else \
            (False, "the manifest is not signed, but a key was given to verify it with")
    alg = sig.get("alg")
    if alg == "hmac-sha256":
        if not hmac_key:
            return None, "signed with hmac-sha256; give the key (--key-env/--key-file) to check the signature"
        ok = hmac.compare_digest(hmac.new(hmac_key, canonical(doc), hashlib.sha256).hexdigest(), str(sig.get("value")))
        return ok, "hmac-sha256 signature " + ("valid" if ok else "INVALID (wrong key or altered manifest)")
    if alg == "ed25519":
        if not public_key:
            return None, "signed with ed25519; give the public key (--public-key) to check the signature"
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_public_key(Path(public_key).read_bytes())
        try:
            key.verify(bytes.fromhex(str(sig.get("value"))), canonical(doc))
            return True, "ed25519 signature valid"
        except (InvalidSignature, ValueError):
            return False, "ed25519 signature INVALID (wrong key or altered manifest)"
    return False, f"unknown signature algorithm {alg!r}"


# --------------------------------------------------------------------------- export


def export_manifest(run_dir: str | Path, out: str | Path, *, signed_off_by: str | None = None, note: str = "",
                    include_warn: bool = True, hmac_key: bytes | None = None,
                    private_key: str | Path | None = None) -> dict[str, Any]:
    """Write the manifest of the shards ``run_dir``'s scan approved; returns the document."""
    run_dir = Path(run_dir)
    shards_path = run_dir / "shards.parquet"
    if not shards_path.is_file():
        raise ManifestError(f"{run_dir} is not a scan run directory (no shards.parquet)")
    summary: dict[str, Any] = {}
    if (run_dir / "summary.json").is_file():
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    shards = pl.read_parquet(shards_path)
    ok = ["pass", "warn"] if include_warn else ["pass"]
    keep = shards.filter(pl.col("verdict").is_in(ok) & pl.col("sha256").is_not_null()).sort("shard")
    excluded = shards.filter(~pl.col("shard").is_in(keep["shard"].implode())).sort("shard")
    if keep.height == 0:
        raise ManifestError(f"{run_dir}: the scan approved no shard; nothing to sign off")
    if signed_off_by is None:
        from integrity.ledger import current_user

        signed_off_by = current_user()
    doc: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "signed_off_by": signed_off_by,
        "note": note,
        "scan_id": summary.get("scan_id"),
        "source": summary.get("source"),
        "policy_sha256": (summary.get("policy") or {}).get("sha256"),
        "scan_verdict": summary.get("verdict"),
        "verdicts_included": ok,
        "shards": [{"name": r["shard"], "uri": r["uri"], "sha256": r["sha256"], "bytes": r["bytes"],
                    "rows": r["rows"], "verdict": r["verdict"], "format": r.get("format")}
                   for r in keep.iter_rows(named=True)],
        "excluded": [{"name": r["shard"], "verdict": r["verdict"]} for r in excluded.iter_rows(named=True)],
    }
    doc["digest"] = digest_of(doc)
    sig = _sign(doc, hmac_key, private_key)
    if sig:
        doc["signature"] = sig
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return doc


# --------------------------------------------------------------------------- verify


@dataclass
class VerifyResult:
    ok: bool
    digest_ok: bool
    signature_ok: bool | None
    signature_message: str
    shards: list[dict[str, Any]] = field(default_factory=list)  # name, status, expected, actual, where
    extra: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[dict[str, Any]]:
        return [s for s in self.shards if s["status"] != "ok"]


def _hash_location(where: str, fmt: str | None) -> str:
    import fsspec

    from connectors.streams import hash_file, hash_hf_dir

    fs, path = fsspec.core.url_to_fs(where)
    if fmt == "hf_dataset" or fs.isdir(path):
        return hash_hf_dir(fs, path)[0]
    return hash_file(fs, path)[0]


def verify_manifest(path: str | Path, root: str | Path | None = None, *, hmac_key: bytes | None = None,
                    public_key: str | Path | None = None, require_signature: bool = False,
                    check_extra: bool = False) -> VerifyResult:
    """Check a manifest's digest and signature, then every shard's SHA-256.

    With ``root`` shards are found by name under it (and, with ``check_extra``,
    files under it that the manifest does not list are reported), else at
    their URI. Never raises for a bad shard: it is reported in the result.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ManifestError(f"cannot read manifest {path}: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{path} is not an integrity manifest (format {MANIFEST_FORMAT})")
    digest_ok = hmac.compare_digest(digest_of(doc), str(doc.get("digest", "")))
    sig_ok, sig_msg = _check_signature(doc, hmac_key, public_key)
    if require_signature and sig_ok is None:
        sig_ok, sig_msg = False, sig_msg + " (a valid signature is required)"
    results = []
    for s in doc.get("shards", []):
        where = str(Path(root) / s["name"]) if root is not None else s["uri"]
        entry = {"name": s["name"], "where": where, "expected": s["sha256"], "actual": None}
        try:
            entry["actual"] = _hash_location(where, s.get("format"))
            entry["status"] = "ok" if entry["actual"] == s["sha256"] else "changed"
        except FileNotFoundError:
            entry["status"] = "missing"
        except OSError as e:
            entry["status"] = "unreadable"
            entry["error"] = str(e)
        results.append(entry)
    extra: list[str] = []
    if check_extra and root is not None:
        listed = {s["name"] for s in doc.get("shards", [])}
        from connectors import list_shards

        try:
            extra = sorted(r.name for r in list_shards(str(root)) if r.name not in listed)
        except Exception:  # no readable shards under root: nothing extra
            extra = []
    ok = digest_ok and sig_ok is not False and all(r["status"] == "ok" for r in results) and not extra
    return VerifyResult(ok=ok, digest_ok=digest_ok, signature_ok=sig_ok, signature_message=sig_msg,
                        shards=results, extra=extra)
