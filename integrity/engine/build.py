"""Turn command-line style arguments (or the Python API's) into a validated :class:`ScanSpec`."""
from __future__ import annotations

from pathlib import Path

from connectors.image_paths import check_image_root
from connectors.schema import ColumnMapping
from integrity.engine.spec import ScanSpec, new_scan_id
from integrity.policy import load_policy

DEFAULT_COLUMNS = {"id": "id", "text": "text", "label": "label", "prompt": "prompt", "response": "response",
                   "image": "image", "caption": "caption"}


def build_spec(source: str, out: str | Path | None = None, policy: str | Path | None = None,
               reference: str | None = None, columns: dict[str, str] | None = None,
               checks: str | list[str] | None = None, quarantine_mode: str | None = None,
               out_root: str | Path = "runs", image_root: str | None = None, corpus: str | None = None,
               shared_history: bool = False) -> ScanSpec:
    """A validated scan spec; columns differing from the defaults count as explicit
    (a missing explicit column is an error, a missing default one is just absent).
    ``image_root``: where absolute image paths and URLs may point (see ``--image-root``).
    ``corpus``: the name the scan's history and ledger entries belong to (default: derived
    from the source, see :func:`integrity.engine.spec.default_corpus_name`); ``shared_history``:
    match against the history every corpus scanned with that option shares. ``out`` may be
    an fsspec URL (``s3://bucket/run``): see :attr:`ScanSpec.out_url`."""
    cols = {**DEFAULT_COLUMNS, **(columns or {})}
    explicit = frozenset(k for k, v in cols.items() if v != DEFAULT_COLUMNS[k])
    if quarantine_mode is not None and quarantine_mode not in ("move", "copy", "mark", "off"):
        raise ValueError(f"quarantine mode must be move, copy, mark or off, not {quarantine_mode!r}")
    pol = load_policy(policy)
    if isinstance(checks, str):
        checks = [c.strip() for c in checks.split(",") if c.strip()]
    scan_id = new_scan_id()
    out_url = str(out).rstrip("/") if out is not None and "://" in str(out) else None
    if out_url:  # outputs are staged in the state directory, uploaded by the last stage
        out_dir = Path(pol.state_dir).expanduser() / "staging" / scan_id
    else:
        out_dir = Path(out) if out else Path(out_root) / scan_id
    if image_root and "://" not in image_root:  # scheduled runs may start in another directory
        image_root = str(Path(image_root).absolute())
    mapping = ColumnMapping(**cols, explicit=explicit, image_root=check_image_root(image_root))
    return ScanSpec(source=source, out=out_dir.absolute(), policy=pol, mapping=mapping,
                    checks=pol.enabled_checks(checks or None), reference=reference,
                    quarantine_mode=quarantine_mode, scan_id=scan_id, corpus=corpus or "",
                    shared_history=shared_history, out_url=out_url)
