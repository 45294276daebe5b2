"""CLI commands ``integrity profile`` and ``integrity manifest export|verify``.

Registered on the main typer app by :func:`register` (see ``flows/cli.py``).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
COULD_NOT_RUN = 3

manifest_app = typer.Typer(help="Export a signed-off manifest of an approved corpus, or verify one.",
                           no_args_is_help=True)


def profile(
    reference: Annotated[str, typer.Argument(help="The trusted corpus: a file, directory, glob or fsspec URL.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Profile directory (a new version is added).")],
    id_column: Annotated[str, typer.Option("--id-column", help="Column holding record ids.")] = "id",
    text_column: Annotated[str, typer.Option("--text-column", help="Column holding the text.")] = "text",
    label_column: Annotated[str, typer.Option("--label-column", help="Column holding a class label.")] = "label",
    prompt_column: Annotated[str, typer.Option("--prompt-column", help="Column holding a prompt.")] = "prompt",
    response_column: Annotated[str, typer.Option("--response-column", help="Column holding a response.")] = "response",
    caption_column: Annotated[str, typer.Option("--caption-column", help="Column holding a caption.")] = "caption",
    synthetic_sample: Annotated[Optional[str], typer.Option(
        "--synthetic-sample", help="Known machine-generated text (same columns): trains the synthetic.text classifier.")] = None,
    max_sample: Annotated[int, typer.Option("--max-sample", min=100, help="Records kept for feature distributions.")] = 10_000,
    embed_sample: Annotated[int, typer.Option("--embed-sample", min=0, help="Records embedded with MiniLM (0: none).")] = 1000,
    topics: Annotated[int, typer.Option("--topics", min=2, help="k-means topic centroids.")] = 16,
    embed_model: Annotated[str, typer.Option("--embed-model", help="Sentence-transformers model (name or local dir).")] = "all-MiniLM-L6-v2",
    note: Annotated[str, typer.Option("--note", help="Free text stored in the profile.")] = "",
) -> None:
    """Build a reference profile of a trusted corpus, for `integrity scan --reference OUT`.

    Example: integrity profile data/trusted/ --out refs/web-2026q1 --synthetic-sample data/known-llm.jsonl
    """
    from connectors.errors import ConnectorError
    from connectors.schema import ColumnMapping
    from connectors.schema import ColumnMapping
    from flows.build import DEFAULT_COLUMNS
    from flows.progress_view import progress_view
    from integrity.analysis.profile import ProfileError, build_profile

    cols = {**DEFAULT_COLUMNS, "id": id_column, "text": text_column, "label": label_column, "prompt": prompt_column,
            "response": response_column, "caption": caption_column}
    explicit = frozenset(k for k, v in cols.items() if v != DEFAULT_COLUMNS[k])
    mapping = ColumnMapping(**cols, explicit=explicit)
    try:
        with progress_view(err, "profiling") as view:
            prof = build_profile(reference, out_dir, mapping=mapping, max_sample=max_sample, embed_sample=embed_sample,
                                 topics=topics, embed_model=embed_model, synthetic_sample=synthetic_sample, note=note,
                                 progress=view.tracker, on_phase=view.phase)
    except (ProfileError, ConnectorError, ValueError, OSError) as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(COULD_NOT_RUN)
    out.print(prof.describe())
    out.print(f"written to {prof.path} (LATEST in {out_dir})")


@manifest_app.command("export")
def manifest_export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of the scan that approved the corpus.")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="Manifest file to write.")],
    signed_off_by: Annotated[Optional[str], typer.Option("--signed-off-by", help="Who signs it off (default: your user).")] = None,
    note: Annotated[str, typer.Option("--note", help="Free text stored in the manifest.")] = "",
    only_pass: Annotated[bool, typer.Option("--only-pass", help="Leave out shards with verdict warn.")] = False,
    key_env: Annotated[Optional[str], typer.Option("--key-env", help="Sign with HMAC-SHA256, secret in this environment variable.")] = None,
    key_file: Annotated[Optional[Path], typer.Option("--key-file", help="Sign with HMAC-SHA256, secret in this file.")] = None,
    private_key: Annotated[Optional[Path], typer.Option("--private-key", help="Sign with this Ed25519 PEM private key.")] = None,
) -> None:
    """Export the signed-off manifest (SHA-256 per shard) of the shards a scan approved."""
    from integrity.ledger.manifest import ManifestError, export_manifest, read_key

    try:
        doc = export_manifest(run_dir, out_file, signed_off_by=signed_off_by, note=note, include_warn=not only_pass,
                              hmac_key=read_key(key_env, key_file), private_key=private_key)
    except (ManifestError, OSError, ValueError) as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(COULD_NOT_RUN)
    sig = doc.get("signature", {}).get("alg", "unsigned")
    out.print(f"{out_file}: {len(doc['shards'])} shards signed off by {doc['signed_off_by']} ({sig}), "
              f"{len(doc['excluded'])} excluded; digest {doc['digest'][:16]}")


@manifest_app.command("verify")
def manifest_verify(
    manifest: Annotated[Path, typer.Argument(help="Manifest file written by `integrity manifest export`.")],
    root: Annotated[Optional[str], typer.Option("--root", help="Look shards up by name under this directory (default: their URI).")] = None,
    key_env: Annotated[Optional[str], typer.Option("--key-env", help="HMAC secret in this environment variable.")] = None,
    key_file: Annotated[Optional[Path], typer.Option("--key-file", help="HMAC secret in this file.")] = None,
    public_key: Annotated[Optional[Path], typer.Option("--public-key", help="Ed25519 PEM public key.")] = None,
    require_signature: Annotated[bool, typer.Option("--require-signature", help="Fail unless a signature is checked and valid.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="With --root: fail on shards the manifest does not list.")] = False,
) -> None:
    """Verify a corpus against its manifest before training: exit 0 ok, 2 changed/missing/bad signature, 3 unreadable."""
    from integrity.ledger.manifest import ManifestError, read_key, verify_manifest

    try:
        res = verify_manifest(manifest, root, hmac_key=read_key(key_env, key_file), public_key=public_key,
                              require_signature=require_signature, check_extra=strict)
    except (ManifestError, OSError, ValueError) as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(COULD_NOT_RUN)
    if not res.digest_ok:
        err.print("[red]digest mismatch:[/] the manifest was altered after it was written")
    colour = "green" if res.signature_ok else ("red" if res.signature_ok is False else "yellow")
    out.print(f"[{colour}]{res.signature_message}[/]")
    for s in res.problems:
        err.print(f"[red]{s['status']}[/] {s['name']} ({s['where']}): expected {s['expected'][:16]}…"
                  + (f", found {s['actual'][:16]}…" if s.get("actual") else "") + (f" {s.get('error')}" if s.get("error") else ""))
    for name in res.extra:
        err.print(f"[red]not in manifest[/] {name}")
    n_ok = sum(1 for s in res.shards if s["status"] == "ok")
    out.print(f"{'[green]OK[/]' if res.ok else '[red]FAIL[/]'}: {n_ok}/{len(res.shards)} shards verified")
    raise typer.Exit(0 if res.ok else 2)


def register(app: typer.Typer) -> None:
    """Add ``profile`` and ``manifest`` to the main CLI."""
    app.command("profile")(profile)
    app.add_typer(manifest_app, name="manifest")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)
