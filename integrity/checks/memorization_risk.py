"""``memorization.risk``: how likely a model trained on this corpus is to memorize
(and regurgitate) each record, from how often its content is duplicated and
whether that content is private.

Why duplication: memorization grows super-linearly with the number of copies
of a sequence in the training data -- a sequence present 10 times is
regenerated about 1000 times more often than one present once (Kandpal et al.
2022, "Deduplicating Training Data Mitigates Privacy Risks in Language
Models"); deduplicating C4 cut memorized output about tenfold (Lee et al.
2022, "Deduplicating Training Data Makes Language Models Better"); the
training images extracted from Stable Diffusion were mostly heavily duplicated
ones (Carlini et al. 2023, "Extracting Training Data from Diffusion Models").
Duplicated personal data or credentials are the worst case.

The check reads the findings of the other checks (any of them may be disabled;
what is missing counts as "no evidence"):

* ``x``, the number of copies of the record's content, history of earlier
  nights included: the largest cluster size the record belongs to in
  ``dedup.exact`` (``group_size``) or ``dedup.near`` (``cluster_size``), as a
  member *or* as the kept representative (the kept copy is memorized just
  as well); a ``dedup.semantic`` cluster of ``k`` records counts as
  ``1 + semantic_weight * (k - 1)`` copies (paraphrases are not verbatim
  repeats); ``x = 1`` for unique content;
* ``dedup.span``: the share ``s`` of the record's tokens inside spans repeated
  elsewhere and ``m``, the number of other records holding its most repeated
  span (``other_docs``);
* ``p``: the highest score of a ``privacy.pii`` or ``privacy.secret`` finding
  of the record (0 when none; 0.5 for an e-mail, ~0.9-1.0 for payment cards,
  national ids and credentials).

Formula (``N`` = ``saturation_copies``, ``c`` = ``clean_weight``)::

    dup(x)  = min(1, ln(x) / ln(N))                    # 0 for unique content
    D       = max(dup(x), s * dup(1 + m))               # whole record or its repeated spans
    risk    = D * (c + (1 - c) * p)

``dup`` is the log of the relative regeneration rate ``x**a`` normalized by
that of ``N`` copies; the exponent ``a`` of any super-linear power law cancels,
so the score only needs ``N``, the number of copies at which memorization is
taken as certain (10 by default: Kandpal et al.'s 1000x). With the defaults
(``N = 10``, ``c = 0.5``): 2 copies of clean text score 0.15, 4 copies 0.30,
10 or more 0.5 -- clean text never exceeds ``c``; 3 copies of a record with an
e-mail address (p = 0.5) score 0.36 and 7 copies 0.63; 5 copies of one with a
payment card (p = 0.95) 0.68. Unique records score 0 whatever they contain
(``privacy.*`` reports those). A finding is emitted for every record scoring
at least ``min_score``; the policy's severity thresholds turn the score into
info / warn / critical (defaults: warn 0.3, critical 0.6, i.e. only duplicated
private data becomes critical).

``detail``: ``copies`` (x), ``exact_copies``, ``near_copies``,
``semantic_copies``, ``history`` (a copy was approved on an earlier night),
``span_share``, ``span_docs``, ``dup_score`` (D), ``privacy_score`` (p),
``privacy_kinds`` and ``matches`` (the private spans, marked ``redact`` so the
report masks them).
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Iterator, Mapping

import polars as pl
import pyarrow as pa
from pydantic import Field

from connectors.schema import RECORD_ID, ROW, TEXT_FIELDS
from integrity.analysis.details import iter_detail_fields
from integrity.checks.base import CheckOptions, Check, CheckOutput, CorpusContext

DEDUP_SIZE_KEYS = {"dedup.exact": "exact", "dedup.near": "near", "dedup.semantic": "semantic"}
FINDINGS_SCHEMA = {"shard": pl.Utf8, RECORD_ID: pl.Utf8, "score": pl.Float64, "detail": pl.Utf8,
                   "severity": pl.Utf8}
MAX_PRIVATE_MATCHES = 10


class MemorizationRisk(Check):
    name = "memorization.risk"
    report_section = "memorization"
    description = "Per-record memorization risk: duplicate count (exact, near, semantic, history), " \
                  "repeated spans, and private data in duplicated content."
    requires = TEXT_FIELDS
    class Options(CheckOptions):
        saturation_copies: float = Field(10, gt=1, description="copies at which the duplication term reaches 1")
        clean_weight: float = Field(0.5, ge=0, le=1, description="score ceiling of duplicated content without private data")
        semantic_weight: float = Field(0.5, ge=0, le=1, description="a paraphrase (dedup.semantic) counts as this much of a copy")
        min_score: float = Field(0.1, ge=0, le=1, description="records scoring below are not reported")
        privacy_checks: list[str] = Field(default_factory=lambda: ["privacy.pii", "privacy.secret"],
                                          description="checks whose score says the record holds private data")
    default_severity = "warn"
    corpus_level = True
    after = ("dedup.exact", "dedup.near", "dedup.span", "dedup.semantic")
    version = 1

    def __init__(self, options=None, shard=None):
        super().__init__(options, shard)

    # -- per shard: only the record ids (so every record can be scored) ----------
    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        return CheckOutput(features=pl.DataFrame({
            RECORD_ID: pl.Series(RECORD_ID, batch.column(RECORD_ID).to_pylist(), dtype=pl.Utf8),
            ROW: pl.Series(ROW, batch.column(ROW).to_numpy(), dtype=pl.Int64),
        }))

    # -- corpus ----------------------------------------------------------------
    def corpus_pass(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame:
        parts = list(self.corpus_parts(features, ctx))
        return pl.concat(parts) if parts else pl.DataFrame(schema=FINDINGS_SCHEMA)

    def corpus_parts(self, features: pl.LazyFrame, ctx: CorpusContext) -> Iterator[pl.DataFrame]:
        """The findings :data:`PART_ROWS` at a time (the engine spills each part as it comes):
        the scores are computed column-wise for every record, the details part by part."""
        scored = self._scored(features, ctx)
        # in shard and row order, a part gathered at a time: a sort of the whole frame held it
        # twice (+150 MB at a million records)
        order = scored.select(pl.arg_sort_by("shard_index", ROW)).to_series()
        for start in range(0, len(order), PART_ROWS):
            part = scored[order[start:start + PART_ROWS]]
            yield pl.DataFrame({
                "shard": part["shard"], RECORD_ID: part[RECORD_ID],
                ROW: part[ROW],  # ids may repeat in a shard; the engine moves it into detail.row
                "score": part["score"].round(4),
                "detail": detail_json(part),
                "severity": pl.Series("severity", [None] * part.height, dtype=pl.Utf8),
            })

    def _scored(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame:
        """Every record scoring at least ``min_score`` (in no particular order), with the columns
        of its detail."""
        # keyed by row, not id: a shard may repeat an id (provenance.duplicate_id)
        key = ["shard", ROW]
        lf = features.select("shard", RECORD_ID, ROW, "shard_index")
        ids = lf.select("shard", RECORD_ID, ROW)
        for check, short in DEDUP_SIZE_KEYS.items():
            sizes = _cluster_sizes(ctx.earlier_findings.get(check), ids)
            if sizes is not None:
                lf = lf.join(sizes.rename({"size": f"{short}_copies", "history": f"{short}_history"}).lazy(),
                             on=key, how="left")
            else:
                lf = lf.with_columns(pl.lit(None, dtype=pl.Int64).alias(f"{short}_copies"),
                                     pl.lit(None, dtype=pl.Boolean).alias(f"{short}_history"))
        span = _span_info(ctx.earlier_findings.get("dedup.span"), ids)
        if span is not None:
            lf = lf.join(span.lazy(), on=key, how="left")
        else:
            lf = lf.with_columns(span_share=pl.lit(None, dtype=pl.Float64), span_docs=pl.lit(None, dtype=pl.Int64))
        priv = _privacy(ctx.shard_findings, list(self.options["privacy_checks"]), ids)
        lf = lf.join(priv.lazy(), on=key, how="left")

        o = self.options
        ln_n = math.log(float(o["saturation_copies"]))
        w_sem, c = float(o["semantic_weight"]), float(o["clean_weight"])
        sem_x = 1.0 + w_sem * (pl.col("semantic_copies").cast(pl.Float64) - 1.0)
        x = pl.max_horizontal(pl.col("exact_copies").cast(pl.Float64), pl.col("near_copies").cast(pl.Float64),
                              sem_x, pl.lit(1.0)).fill_null(1.0)

        def dup(v: pl.Expr) -> pl.Expr:
            return pl.min_horizontal(v.log() / ln_n, pl.lit(1.0)).clip(lower_bound=0.0)

        span_term = pl.col("span_share").fill_null(0.0) * dup(1.0 + pl.col("span_docs").fill_null(0).cast(pl.Float64))
        return (lf.with_columns(copies=x)
                .with_columns(dup_score=pl.max_horizontal(dup(pl.col("copies")), span_term))
                .with_columns(privacy_score=pl.col("privacy_score").fill_null(0.0).clip(0.0, 1.0))
                .with_columns(score=pl.col("dup_score") * (c + (1.0 - c) * pl.col("privacy_score")))
                .filter((pl.col("score") >= float(o["min_score"])) & (pl.col("score") > 0))
                .collect())


#: findings built and handed to the engine at a time
PART_ROWS = 100_000


def detail_json(scored: pl.DataFrame) -> pl.Series:
    """Each finding's ``detail``, column-wise, byte for byte what ``json.dumps(d, sort_keys=True)``
    gives for the dict of its non-null fields (``matches``: the private spans, parsed from
    ``privacy_matches``). Floats, kinds and matches take few distinct values: each distinct
    value is written by :mod:`json` once and mapped back."""
    fields = scored.select(
        copies=_dumped(pl.col("copies").round(2)),
        dup_score=_dumped(pl.col("dup_score").round(4)),
        exact_copies=pl.col("exact_copies").cast(pl.Utf8),
        history=pl.when(pl.any_horizontal(pl.col("exact_history"), pl.col("near_history")).fill_null(False))
        .then(pl.lit("true")).otherwise(pl.lit("false")),
        matches=pl.col("privacy_matches").map_batches(
            lambda s: _map_distinct(s, lambda m: json.dumps(json.loads(m), sort_keys=True)), return_dtype=pl.Utf8),
        near_copies=pl.col("near_copies").cast(pl.Utf8),
        # kinds are never empty strings (see _privacy): joined on NUL, split back
        privacy_kinds=pl.col("privacy_kinds").list.join("\x00").map_batches(
            lambda s: _map_distinct(s, lambda k: json.dumps(k.split("\x00") if k else [])), return_dtype=pl.Utf8),
        privacy_score=_dumped(pl.col("privacy_score").round(4)),
        semantic_copies=pl.col("semantic_copies").cast(pl.Utf8),
        span_docs=pl.col("span_docs").cast(pl.Utf8),
        span_share=_dumped(pl.col("span_share")),
    )
    # sort_keys: the fields in name order; a null value leaves its pair out
    pairs = [pl.concat_str(pl.lit(json.dumps(name) + ": "), pl.col(name)) for name in sorted(fields.columns)]
    return fields.select(detail=pl.concat_str(
        pl.lit("{"), pl.concat_str(pairs, separator=", ", ignore_nulls=True), pl.lit("}")))["detail"]


def _dumped(expr: pl.Expr) -> pl.Expr:
    """A float column as :func:`json.dumps` writes each value (Python's shortest repr)."""
    return expr.map_batches(lambda s: _map_distinct(s, json.dumps), return_dtype=pl.Utf8)


def _map_distinct(s: pl.Series, fn) -> pl.Series:
    """``fn`` applied once per distinct non-null value of ``s`` (null stays null), as strings."""
    uniq = s.drop_nulls().unique()
    return s.replace_strict(uniq, pl.Series([fn(v) for v in uniq.to_list()], dtype=pl.Utf8),
                            default=None, return_dtype=pl.Utf8)


def _json(col: str, path: str) -> pl.Expr:
    return pl.col(col).str.json_path_match(path)


def _detail_row() -> pl.Expr:
    """A finding's row index in its shard (``detail.row``; null when it names none)."""
    return _json("detail", "$.row").cast(pl.Int64, strict=False).alias(ROW)


def _by_row(evidence: pl.DataFrame, ids: pl.LazyFrame) -> pl.DataFrame:
    """``evidence`` (``shard``, ``record_id``, ``row`` and values) keyed by (shard, row):
    what names its row keeps it; what names only an id (a cluster's representative, or a
    finding whose batch repeated the id) counts for every row with that id in the shard."""
    known = evidence.filter(pl.col(ROW).is_not_null()).drop(RECORD_ID)
    unknown = evidence.filter(pl.col(ROW).is_null()).drop(ROW)
    if unknown.height:
        unknown = unknown.join(ids.collect(), on=["shard", RECORD_ID], how="inner").drop(RECORD_ID)
        known = pl.concat([known, unknown.select(known.columns)])
    return known


def _narrow(found: pl.DataFrame | pl.LazyFrame | None, fields: tuple[str, ...], keep: tuple[str, ...],
            reduce: Callable[[pl.DataFrame], pl.DataFrame] | None = None, **named: pl.Expr) -> pl.DataFrame | None:
    """``keep`` columns of a check's findings (lazy: spilled by the engine) and ``named`` columns
    computed from the ``d_<field>`` strings of their details' ``fields`` and ``d_row``; None when
    it has none. The details are read and parsed a slice at a time
    (:func:`integrity.analysis.details.iter_detail_fields`), and each slice is narrowed to its
    typed columns (then reduced by ``reduce``, when given) as it comes: the parsed strings of
    every finding are never held at once."""
    if found is None:
        return None
    parts = []
    for piece in iter_detail_fields(found.lazy(), ("row", *fields), keep=keep):
        part = piece.select(*keep, pl.col("d_row").cast(pl.Int64, strict=False).alias(ROW), **named)
        parts.append(reduce(part) if reduce is not None else part)
    if not parts:
        return None
    out = pl.concat(parts, rechunk=True)
    return out if out.height else None


def _d(field: str) -> pl.Expr:
    return pl.col(f"d_{field}")


def _cluster_sizes(found: pl.DataFrame | pl.LazyFrame | None, ids: pl.LazyFrame) -> pl.DataFrame | None:
    """(shard, row, size, history) for every member and every in-scan
    representative of a dedup check's clusters (largest cluster per record)."""
    def members_and_reps(f: pl.DataFrame) -> pl.DataFrame:
        # per slice: the members as they are, their representatives once per slice (a cluster's
        # members name the same representative: one row per cluster, not per finding)
        f = f.filter(pl.col("size").is_not_null())
        members = f.select("shard", RECORD_ID, ROW, "size", "history")
        reps = (f.filter(~pl.col("history") & pl.col("rep").is_not_null())
                .select(pl.coalesce("rep_shard", "shard").alias("shard"), pl.col("rep").alias(RECORD_ID),
                        pl.col("rep_row").alias(ROW), "size", "history")
                .unique(maintain_order=True))
        return pl.concat([members, reps])

    f = _narrow(found, ("group_size", "cluster_size", "history", "representative", "representative_shard",
                        "representative_row"), ("shard", RECORD_ID), reduce=members_and_reps,
        size=pl.coalesce(_d("group_size").cast(pl.Int64, strict=False), _d("cluster_size").cast(pl.Int64, strict=False)),
        history=(_d("history") == "true").fill_null(False),
        rep=_d("representative"),
        rep_shard=_d("representative_shard"),
        rep_row=_d("representative_row").cast(pl.Int64, strict=False),
    )
    if f is None:
        return None
    return _by_row(f, ids).group_by("shard", ROW).agg(pl.col("size").max(), pl.col("history").any())


def _span_info(found: pl.DataFrame | pl.LazyFrame | None, ids: pl.LazyFrame) -> pl.DataFrame | None:
    """(shard, row, span_share, span_docs) of every record with a ``dedup.span`` finding."""
    f = _narrow(found, ("share", "other_docs"), ("shard", RECORD_ID, "score"),
                span_share=pl.coalesce(_d("share").cast(pl.Float64, strict=False), pl.col("score")),
                span_docs=_d("other_docs").cast(pl.Int64, strict=False).fill_null(1))
    if f is None:
        return None
    return _by_row(f.drop("score"), ids).group_by("shard", ROW).agg(pl.col("span_share").max(), pl.col("span_docs").max())


def _privacy(shard_findings: pl.LazyFrame, checks: list[str], ids: pl.LazyFrame) -> pl.DataFrame:
    """Per record: the highest privacy score, the kinds found, and the private
    spans (``field``/``start``/``end``/``kind``, ``redact``) as a JSON list."""
    f = (shard_findings.filter(pl.col("check").is_in(checks) & pl.col(RECORD_ID).is_not_null())
         .select("shard", RECORD_ID, _detail_row(), "score", "detail").collect())
    f = _by_row(f, ids)
    schema = {"shard": pl.Utf8, ROW: pl.Int64, "privacy_score": pl.Float64,
              "privacy_kinds": pl.List(pl.Utf8), "privacy_matches": pl.Utf8}
    if f.height == 0:
        return pl.DataFrame(schema=schema)
    rows: dict[tuple[str, int], dict] = {}
    for shard, row, score, detail in f.select("shard", ROW, "score", "detail").iter_rows():
        r = rows.setdefault((shard, row), {"score": 0.0, "kinds": set(), "matches": []})
        r["score"] = max(r["score"], float(score or 0.0))
        try:
            d = json.loads(detail or "{}")
        except ValueError:
            d = {}
        for k in d.get("kinds") or []:
            r["kinds"].add(str(k))
        for m in d.get("matches") or []:
            if isinstance(m, dict) and "start" in m and "end" in m:
                r["kinds"].add(str(m.get("kind", "")) or "private")
                if len(r["matches"]) < MAX_PRIVATE_MATCHES:
                    r["matches"].append({"field": m.get("field"), "start": m["start"], "end": m["end"],
                                         "kind": m.get("kind"), "redact": True})
    return pl.DataFrame({
        "shard": [k[0] for k in rows], ROW: [k[1] for k in rows],
        "privacy_score": [v["score"] for v in rows.values()],
        "privacy_kinds": [sorted(k for k in v["kinds"] if k) for v in rows.values()],
        "privacy_matches": [json.dumps(v["matches"]) if v["matches"] else None for v in rows.values()],
    }, schema=schema)
