"""The Python API: scan a corpus from a notebook or a script, with the same engine and the same
outputs as ``integrity scan`` (no Prefect: the scan runs in this process on threads).

    >>> import integrity
    >>> result = integrity.scan("data/shards/", checks=["dedup.exact", "privacy.secret"])
    >>> result.verdict, result.report_path
    ('warn', PosixPath('runs/20261203T041500Z-1a2b3c/report.html'))
    >>> result.findings.filter(pl.col("severity") == "critical")

``source`` may be a path, glob or fsspec URL (as on the command line), an
``hf://datasets/OWNER/NAME`` repository with ``split=``, a ``datasets.Dataset``,
``DatasetDict`` (with ``split=``), ``IterableDataset``, or a Polars or pandas
``DataFrame``. In-memory data is written as Parquet shards into the run directory
(``RUN_DIR/source/staged-SHA/part-00000.parquet``, 100,000 records per shard) and scanned
from there, so its findings are those of the same rows written to Parquet.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import polars as pl
import yaml

from connectors import inmemory
from integrity.engine.build import build_spec
from integrity.engine.spec import new_scan_id

__all__ = ["ScanResult", "scan"]

QuarantineMode = Literal["off", "mark", "move", "copy"]


@dataclass
class ScanResult:
    """What :func:`scan` returns: the verdict, the run directory and its tables.

    ``findings`` and ``shards`` are the run directory's ``findings.parquet`` and
    ``shards.parquet`` (columns as in the output contract, DESIGN.md); ``summary`` is
    ``summary.json`` (timings per stage and per check, counts, corpus, state directory).
    """

    verdict: Literal["pass", "warn", "fail"]
    run_dir: Path
    report_path: Path
    summary: dict[str, Any]
    findings: pl.DataFrame = field(repr=False)
    shards: pl.DataFrame = field(repr=False)

    @property
    def scan_id(self) -> str:
        return str(self.summary["scan_id"])

    @property
    def corpus(self) -> str:
        return str(self.summary.get("corpus", ""))

    @property
    def exit_code(self) -> int:
        """What ``integrity gate`` would exit with: 0 pass, 1 warn, 2 fail."""
        return {"pass": 0, "warn": 1, "fail": 2}[self.verdict]

    def __repr__(self) -> str:
        c = self.summary.get("counts", {})
        return (f"ScanResult(verdict={self.verdict!r}, shards={c.get('shards')}, records={c.get('rows')}, "
                f"findings={c.get('findings')}, run_dir={str(self.run_dir)!r})")


def scan(
    source: Any,
    *,
    checks: Sequence[str] | str | None = None,
    policy: str | os.PathLike | Mapping[str, Any] | None = None,
    columns: Mapping[str, str] | None = None,
    split: str | None = None,
    reference: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    corpus: str | None = None,
    shared_history: bool = False,
    quarantine: QuarantineMode = "off",
    state_dir: str | os.PathLike | None = None,
    image_root: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    workers: int = 2,
    progress: Callable[[Any], None] | None = None,
    on_progress: Callable[[Any], None] | None = None,
) -> ScanResult:
    """Scan ``source`` and return a :class:`ScanResult`; writes the same run directory as the CLI.

    Args:
        source: a file, directory, glob or fsspec URL; ``hf://datasets/OWNER/NAME`` (with
            ``split``); a ``datasets`` ``Dataset``, ``DatasetDict`` (with ``split``) or
            ``IterableDataset``; a Polars ``DataFrame``/``LazyFrame``, a pandas ``DataFrame``
            or a ``pyarrow.Table``.
        checks: the checks to run (names or "a,b"; default: all the policy enables).
        policy: a policy file, or a mapping with the keys a policy file would hold
            (e.g. ``{"checks": {"privacy.pii": {"enabled": False}}}``); default: the shipped one.
        columns: column mapping, e.g. ``{"text": "body", "id": "doc_id"}`` (keys: id, text,
            label, prompt, response, image, caption); a column named here must exist.
        split: the split of a ``DatasetDict`` or of a ``hf://datasets/...`` repository.
        reference: a reference profile directory (``integrity profile``) for drift checks.
        out: the run directory (default ``runs/SCAN_ID``).
        corpus: the corpus the scan belongs to (its history is kept apart from other
            corpora's); default: derived from the source (for in-memory data, from its rows).
        shared_history: match against the history shared by every corpus scanned with it.
        quarantine: ``"off"`` (default: report only, like ``integrity scan``), or ``"mark"``,
            ``"move"``, ``"copy"`` to act on shards the policy sends to quarantine (for path
            sources only: staged in-memory data has no files of yours to move).
        state_dir: the state directory (ledger, caches, history); overrides the policy's.
        image_root: where absolute image paths and URLs may point (``--image-root``).
        storage_options: fsspec options for object-store sources.
        workers: threads scanning shards in parallel.
        progress: called with each shard's result as it finishes.
        on_progress: called (at most twice a second) with an
            :class:`integrity.engine.progress.Snapshot` while shards are read: records done,
            the estimated total, the ETA (``format_snapshot`` words it as the CLI does).

    Raises:
        connectors.errors.SourceError: no such source, no shard, an empty dataset, a bad split.
        integrity.policy.PolicyError: the policy is invalid (the message names the key).
        integrity.engine.pipeline.ColumnMappingError: the column mapping fits no shard.
    """
    from integrity.engine import pipeline

    scan_id = new_scan_id()
    run_dir = Path(out) if out is not None else Path("runs") / scan_id
    run_dir.mkdir(parents=True, exist_ok=True)
    policy_path = _policy_file(policy, state_dir, run_dir)
    kind = inmemory.kind_of(source)
    if kind is not None:
        if quarantine in ("move", "copy"):
            raise ValueError(f"quarantine={quarantine!r}: a {type(source).__name__} is scanned from a staged copy, "
                             f"so there is no file of yours to move; use 'off' or 'mark'")
        staged = inmemory.stage(inmemory.select_split(source, split), run_dir / "source")
        path = str(staged)
        corpus = corpus or f"{_kind_label(kind)}-{staged.name.removeprefix('staged-')[:8]}"
    else:
        path = os.fspath(source)
        if split is not None:
            if not path.startswith("hf://"):
                raise ValueError(f"split={split!r} applies to DatasetDicts and hf://datasets/... sources, not {path!r}")
            if corpus is None:
                from integrity.engine.spec import default_corpus_name

                corpus = default_corpus_name(f"{path.rstrip('/')}/{split}")
            path = inmemory.hub_split_source(path, split, dict(storage_options or {}))
    spec = build_spec(path, out=run_dir, policy=policy_path, reference=None if reference is None else os.fspath(reference),
                      columns=dict(columns or {}), checks=list(checks) if isinstance(checks, (list, tuple)) else checks,
                      quarantine_mode=quarantine, image_root=image_root, corpus=corpus, shared_history=shared_history)
    spec.scan_id = scan_id
    spec.storage_options = dict(storage_options) if storage_options else None
    spec.runner = "api"
    from integrity.engine import progress as progress_mod

    if on_progress is not None:
        progress_mod.register(spec.scan_id, progress_mod.ScanProgress(on_update=on_progress))
    try:
        summary = pipeline.run_scan(spec, workers=workers, progress=progress)
    finally:
        progress_mod.unregister(spec.scan_id)
    summary["run_dir"] = str(spec.out)
    return ScanResult(
        verdict=summary["verdict"], run_dir=spec.out, report_path=spec.out / "report.html", summary=summary,
        findings=pl.read_parquet(spec.out / "findings.parquet"), shards=pl.read_parquet(spec.out / "shards.parquet"),
    )


def _kind_label(kind: str) -> str:
    return {"dataset": "dataset", "dataset_dict": "dataset", "iterable": "dataset", "iterable_dict": "dataset",
            "polars": "dataframe", "polars_lazy": "dataframe", "pandas": "dataframe", "arrow": "table"}[kind]


def _policy_file(policy: str | os.PathLike | Mapping[str, Any] | None, state_dir: str | os.PathLike | None,
                 run_dir: Path) -> str | None:
    """A policy file for the spec: the one given, or ``RUN_DIR/policy.yaml`` written from a
    mapping and/or ``state_dir`` (kept in the run directory as a record of what was used)."""
    if policy is not None and not isinstance(policy, Mapping):
        if state_dir is None:
            return os.fspath(policy)
        from integrity.policy import PolicyError

        try:
            data = yaml.safe_load(Path(policy).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise PolicyError(f"{policy}: cannot read the policy ({e})") from e
    else:
        data = json.loads(json.dumps(dict(policy or {}), default=str))  # a plain, YAML-safe copy
    if state_dir is None and not data:
        return None
    if state_dir is not None:
        data["state_dir"] = str(Path(state_dir).expanduser().absolute())
    path = run_dir / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(path)
