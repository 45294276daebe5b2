"""The one interface every check implements.

A check has two passes:

* **per shard** – the engine creates a fresh instance for each shard and
  feeds it the shard's record batches (normalized schema, see
  :mod:`connectors.schema`) through :meth:`Check.process_batch`, then calls
  :meth:`Check.finish_shard`. Each call returns a :class:`CheckOutput`: per-record
  findings and *compact* per-record features (hashes, signatures, embeddings)
  that the corpus pass needs. Instance state is therefore per shard.
* **corpus** (optional, ``corpus_level = True``) – one instance sees the
  features of every shard of the scan as a Polars ``LazyFrame`` (with a
  ``shard`` column added) and returns findings that need the whole corpus
  (duplicate groups across shards, drift against a reference, ...).

Findings are Polars frames with the columns of :data:`FINDING_COLUMNS` (a corpus pass:
:data:`CORPUS_FINDING_COLUMNS`, with ``shard``; both in :mod:`connectors.schema`);
``severity`` is optional (the policy assigns it from ``score`` when it has
thresholds for the check, else the check's value or ``default_severity``).
``detail`` is a JSON string: it carries the evidence (kind, offsets, cluster,
...), never a full secret.
"""
from __future__ import annotations

import hashlib
import json
from abc import ABC
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence

import polars as pl
import pyarrow as pa

from connectors.schema import CORPUS_FINDING_COLUMNS, FINDING_COLUMNS  # noqa: F401  (part of the check API)
from integrity.checks.options import (  # noqa: F401  (part of the check API)
    CheckConfigError, CheckOptions, model_from_dict)


#: ``map_partitions(step, items)``: runs ``step`` on every item, where the orchestrator likes
#: (in process, threads, Dask workers), and returns the results in the order of ``items``;
#: ``step`` must be a picklable module-level function (or a ``functools.partial`` of one) and the
#: items and results small (paths, arrays of the partition's answer)
MapPartitions = Callable[[Callable[[Any], Any], list[Any]], list[Any]]


def serial_map(step: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """The :data:`MapPartitions` of a scan without an orchestrator: one item after the other,
    in this process."""
    return [step(item) for item in items]


@dataclass
class CheckOutput:
    """What one pass returns: findings and compact features (either may be None)."""

    findings: pl.DataFrame | None = None
    features: pl.DataFrame | None = None


@dataclass
class ShardInfo:
    """What a check may know about the shard it is scanning."""

    shard: str
    uri: str
    #: the scan's state directory (caches such as benchmark n-gram indexes live there)
    state_dir: Path | None = None


@dataclass
class CorpusContext:
    """Everything a corpus-level pass may read besides its own features.

    ``shard_findings`` holds the per-shard findings of every check of this scan
    (columns of ``findings.parquet``); ``earlier_findings`` the corpus-level
    findings of checks that ran before this one (see ``Check.after``), as lazy frames over the
    Parquet files the engine spilled them to (collect only the columns and rows needed: they
    hold a record's worth of findings per duplicate, which grows with the corpus).
    """

    run_dir: Path
    #: what checks remember between scans of this corpus (history indexes): ``STATE_DIR/corpora/NAME``,
    #: or the state directory itself when the scan shares its history (``--shared-history``)
    state_dir: Path
    shards: list[str]
    shard_findings: pl.LazyFrame
    earlier_findings: dict[str, pl.LazyFrame] = field(default_factory=dict)
    reference: Path | None = None
    #: SHA-256 per shard name (content identity, e.g. for history indexes)
    shard_sha256: dict[str, str] = field(default_factory=dict)
    #: URI per shard name (to re-read a shard's records, e.g. a sample kept by id and row)
    shard_uri: dict[str, str] = field(default_factory=dict)
    scan_id: str = ""
    #: the scan's column mapping (:class:`connectors.schema.ColumnMapping`), to re-read records
    mapping: Any = None
    #: check name -> (shard, shard_index, features file) of every shard that wrote features
    feature_files: dict[str, list[tuple[str, int, Path]]] = field(default_factory=dict)
    #: fsspec options of the scan's source, to re-read records from remote shards
    storage_options: dict[str, Any] | None = None
    #: how a pass runs its partitioned steps: on the scan's runner (Dask workers under ``--runner dask``)
    map_partitions: MapPartitions = serial_map
    #: where a partitioned pass writes the files its partition tasks read: a local directory or
    #: an fsspec URL (the run directory's ``.work`` on object storage) that every worker reaches
    work_dir: str = ""
    #: the engine's masking of the text columns of a frame of finding text
    #: (:func:`integrity.engine.redact.mask_frame`), for the checks that mask their details
    #: themselves (``Check.masks_own_details``); None outside a scan (nothing is written then)
    mask_details: Callable[[pl.DataFrame], pl.DataFrame] | None = None

    def shard_frame(self, check: str, shard: str, features: pl.LazyFrame) -> pl.LazyFrame:
        """``check``'s features of one shard, read from that shard's own file when the engine
        listed it: a per-shard loop filtering the corpus-wide ``features`` by shard would scan
        every shard's file once per shard (quadratic in the number of shards)."""
        for name, index, path in self.feature_files.get(check, ()):
            if name == shard:
                return pl.scan_parquet(path).with_columns(shard=pl.lit(shard),
                                                          shard_index=pl.lit(index, dtype=pl.Int32))
        return features.filter(pl.col("shard") == shard)


class Check(ABC):
    """Base class of all checks. Subclasses set the class attributes and override
    the passes they need; every method has a do-nothing default."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: normalized columns the check reads; it runs on a shard holding any of them
    requires: ClassVar[tuple[str, ...]] = ("text",)
    #: the check's options: a nested ``class Options(CheckOptions)`` declares each one's default,
    #: allowed values and description (see :mod:`integrity.checks.options`)
    Options: ClassVar[type[CheckOptions]] = CheckOptions
    #: every option's default (read-only, derived from ``Options``); a plug-in may still declare
    #: a plain dict here instead of ``Options``, and gets a model accepting any value per key
    default_options: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    default_severity: ClassVar[str] = "warn"
    corpus_level: ClassVar[bool] = False
    #: corpus checks whose findings this one reads (run order)
    after: ClassVar[tuple[str, ...]] = ()
    #: bump when the check's logic changes so cached shard results are recomputed
    version: ClassVar[int] = 1
    #: whether the engine hands this check the raw text: only a check that must see secrets
    #: (``privacy.secret``, which writes previews) or that keeps nothing of the text but hashes
    #: and writes none of it (``dedup.near``). Every other check gets its batches with secrets
    #: masked (integrity.engine.redact.mask_batch), so none can write one in full
    reads_raw_secrets: ClassVar[bool] = False
    #: feature columns that hold single tokens taken from record text (a vocabulary): the
    #: engine masks random-looking ones where it caches them, as it masks tokens in prose
    token_columns: ClassVar[tuple[str, ...]] = ()
    #: the check masks the secrets of its corpus findings' details itself with
    #: ``CorpusContext.mask_details``, each value once (a representative's id is repeated in
    #: every finding of its cluster): the engine does not scan those details again
    masks_own_details: ClassVar[bool] = False
    #: the report section that shows this check's findings (a name registered in
    #: :mod:`integrity.report.sections`); the generic findings section by default
    report_section: ClassVar[str] = "findings"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "Options" in own:
            if not (isinstance(own["Options"], type) and issubclass(own["Options"], CheckOptions)):
                raise TypeError(f"{cls.__qualname__}.Options must subclass CheckOptions")
            cls.default_options = MappingProxyType(cls.Options.defaults())
        elif "default_options" in own:  # a plain dict (plug-ins written before options models)
            cls.Options = model_from_dict(cls.__name__, own["default_options"])

    def __init__(self, options: Mapping[str, Any] | None = None, shard: ShardInfo | None = None):
        #: the validated options, typed; ``self.options`` holds the same values as a plain dict
        self.settings: CheckOptions = self.Options.parse(self.name or type(self).__name__, options)
        self.options: dict[str, Any] = self.settings.as_dict()
        self.shard = shard

    # -- per-shard pass -------------------------------------------------
    def applies_to(self, columns: Iterable[str]) -> bool:
        """Whether the check can run on a shard with these normalized columns."""
        cols = set(columns)
        return any(c in cols for c in self.requires)

    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        """Scan one batch of a shard."""
        return CheckOutput()

    def finish_shard(self) -> CheckOutput:
        """Called once after the last batch; shard-level findings use record_id None."""
        return CheckOutput()

    # -- corpus pass ------------------------------------------------------
    def corpus_pass(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame | None:
        """Findings that need every shard's features; must include a ``shard`` column."""
        return None

    def corpus_parts(self, features: pl.LazyFrame, ctx: CorpusContext) -> Iterable[pl.DataFrame]:
        """:meth:`corpus_pass`'s findings in parts, which the engine spills one after the other: a
        check whose findings grow with the corpus overrides this so that they are never all held
        at once (and its ``corpus_pass`` concatenates them). By default the one frame of
        ``corpus_pass``."""
        found = self.corpus_pass(features, ctx)
        return [] if found is None else [found]

    #: what the corpus pass adds to this check's ``counts.coverage`` entry (e.g. how many candidates
    #: a model re-scored); set by :meth:`corpus_pass`, None when it has nothing to add
    corpus_coverage: dict[str, Any] | None = None

    def coverage(self, features: pl.LazyFrame) -> dict[str, Any] | None:
        """How many of the records this check should have embedded it did embed, from its features:
        ``{"records": N, "embedded": M, ...}`` (``summary.json``'s ``counts.coverage`` and the
        report show it); None for a check that does not sample."""
        return None

    def after_verdicts(self, features: pl.LazyFrame, approved: list[str], ctx: CorpusContext) -> None:
        """Called once the shard verdicts are known, with this check's features and
        the names of the shards that were not quarantined (nor unreadable): the place
        to add approved content to a persistent history index in ``ctx.state_dir``."""
        return None

    # -- identity ------------------------------------------------------
    def fingerprint(self) -> str:
        """Hash of name, version and options: part of the per-shard cache key."""
        blob = json.dumps({"n": self.name, "v": self.version, "o": self.options}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def findings_frame(
    record_ids: Sequence[str | None] | pl.Series,
    scores: Sequence[float] | pl.Series,
    details: Sequence[Mapping[str, Any] | str] | pl.Series,
    severity: Sequence[str | None] | str | None = None,
) -> pl.DataFrame:
    """Build a findings frame; ``details`` may be dicts (serialized here) or JSON strings."""
    if not isinstance(details, pl.Series):
        details = [d if isinstance(d, str) else json.dumps(d, sort_keys=True, default=str) for d in details]
    n = len(details)
    if severity is None or isinstance(severity, str):
        sev = pl.Series("severity", [severity] * n, dtype=pl.Utf8)
    else:
        sev = pl.Series("severity", list(severity), dtype=pl.Utf8)
    return pl.DataFrame(
        {
            "record_id": pl.Series("record_id", record_ids, dtype=pl.Utf8),
            "score": pl.Series("score", scores, dtype=pl.Float64),
            "detail": pl.Series("detail", details, dtype=pl.Utf8),
            "severity": sev,
        }
    )


def empty_findings() -> pl.DataFrame:
    """A findings frame with no rows and the right columns."""
    return pl.DataFrame(schema=FINDING_COLUMNS)
