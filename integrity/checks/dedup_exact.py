"""``dedup.exact``: exact duplicates after normalization, across every shard of a scan.

Normalization: Unicode NFKC, lower case, every run of whitespace folded to one
space, leading/trailing whitespace removed. The record's text is its ``text``
column, or ``prompt`` and ``response`` joined by a separator for instruction
data, or the ``caption``. The per-shard pass keeps only a 128-bit hash per
record (xxh3-128 of the normalized UTF-8, stable across versions, so it can be
stored in the history index); the corpus pass groups equal hashes over all
shards. The first record of a group (in shard order, then row order) is the
representative; every other record is a finding whose detail names the
cluster, its size and the representative.

With ``history`` (default), the hashes are also looked up in the dedup history
of earlier nights (``STATE_DIR/dedup_history``, kind ``exact``, see
:mod:`integrity.analysis.history`): a record whose text was approved before is a
finding even when it is alone in tonight's scan, and the oldest approved record
is its representative (``history: true``, ``representative_sha256`` and
``representative_scan`` in the detail). Content already in the history (a
shard scanned again) is kept in its place: a later copy is the duplicate, whichever night scans them.
After the verdicts, the hashes of approved shards enter the history.
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field
import xxhash

from connectors.schema import RECORD_ID, ROW, TEXT_FIELDS
from integrity.checks.base import CheckOptions, Check, CheckOutput, CorpusContext

HISTORY_KIND = "exact"
HISTORY_PARAMS = {"hash": "xxh3-128", "normalization": "nfkc-lower-ws-v1"}

_FIELD_SEP = "\u241e"  # joins prompt and response: never produced by normalization


def _normalize(raw: pa.Array) -> pa.Array:
    text = pc.utf8_normalize(raw.cast(pa.large_string()), form="NFKC")
    text = pc.utf8_lower(text)
    text = pc.replace_substring_regex(text, pattern=r"\s+", replacement=" ")
    return pc.utf8_trim_whitespace(text)


def normalized_text(batch: pa.RecordBatch) -> pa.Array | None:
    """The normalized text each record is compared by (None when the batch has no text)."""
    names = set(batch.schema.names)
    if "text" in names:
        return _normalize(batch.column("text"))
    if "prompt" in names or "response" in names:
        parts = [_normalize(batch.column(c)).fill_null("") for c in ("prompt", "response") if c in names]
        return pc.binary_join_element_wise(*parts, pa.scalar(_FIELD_SEP, pa.large_string())) if len(parts) > 1 else parts[0]
    if "caption" in names:
        return _normalize(batch.column("caption"))
    return None


def hash_texts(texts: pa.Array) -> list[bytes | None]:
    """xxh3-128 digest of each normalized text (None for nulls)."""
    digest = xxhash.xxh3_128_digest
    return [None if t is None else digest(t.encode("utf-8")) for t in texts.to_pylist()]


class ExactDedup(Check):
    name = "dedup.exact"
    report_section = "dedup"
    description = "Exact duplicates after NFKC, case and whitespace folding, across all shards."
    requires = TEXT_FIELDS
    class Options(CheckOptions):
        min_chars: int = Field(1, ge=0, description="normalized texts shorter than this are not grouped")
        history: bool = Field(True, description="also match the approved data of earlier scans (STATE_DIR/dedup_history)")
    default_severity = "warn"
    corpus_level = True

    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        text = normalized_text(batch)
        if text is None:
            return CheckOutput()
        keep = pc.greater_equal(pc.utf8_length(text), self.options["min_chars"])
        hashes = pa.array(hash_texts(text), type=pa.binary(16))
        table = pa.table({RECORD_ID: batch.column(RECORD_ID), ROW: batch.column(ROW), "h": hashes})
        table = table.filter(pc.fill_null(keep, False))
        return CheckOutput(features=pl.from_arrow(table))

    def corpus_pass(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame:
        hist = self._history_matches(features, ctx)
        if hist.height or self.options["history"]:
            features = self._with_seen_order(features, ctx)
        else:
            features = features.with_columns(_order=pl.lit(None, dtype=pl.Int64))
        features = features.join(hist.lazy(), on="h", how="left")
        groups = (
            features.filter((pl.len().over("h") > 1) | pl.col("h_record_id").is_not_null())
            # the kept record: the oldest approved one (history, or tonight's content that was
            # approved on an earlier night), else the first by shard order and row
            .sort(["h", "_order", "shard_index", ROW], nulls_last=True)
            .with_columns(_first_order=pl.col("_order").first().over("h"))
            .with_columns(history=pl.col("h_record_id").is_not_null()
                          & (pl.col("_first_order").is_null() | (pl.col("h_order") < pl.col("_first_order"))))
            .with_columns(
                representative=pl.when("history").then("h_record_id").otherwise(pl.col(RECORD_ID).first().over("h")),
                representative_shard=pl.when("history").then("h_shard").otherwise(pl.col("shard").first().over("h")),
                representative_row=pl.when("history").then(None).otherwise(pl.col(ROW).first().over("h")),
                representative_sha256=pl.when("history").then("h_sha256"),
                representative_scan=pl.when("history").then("h_scan_id"),
                group_size=pl.len().over("h") + pl.col("h_count").fill_null(0),
                rank=pl.int_range(pl.len()).over("h"),
                cluster=pl.lit("exact-") + pl.col("h").bin.encode("hex").str.slice(0, 16),
            )
            .filter((pl.col("rank") > 0) | pl.col("history"))
            # a record matching its own earlier version (a shard appended to since) is no duplicate;
            # only a history representative can be that: tonight's copies with a repeated id are not
            .filter(~(pl.col("history") & (pl.col("representative_shard") == pl.col("shard"))
                      & (pl.col("representative") == pl.col(RECORD_ID))).fill_null(False))
            .collect()
        )
        detail = groups.select(
            pl.struct(["cluster", "representative", "representative_shard", "representative_row", "group_size", "history",
                       "representative_sha256", "representative_scan"]).struct.json_encode()
        ).to_series()
        return pl.DataFrame(
            {
                "shard": groups["shard"],
                "record_id": groups[RECORD_ID],
                ROW: groups[ROW],  # ids may repeat in a shard; the engine moves it into detail.row
                "score": pl.Series([1.0] * groups.height, dtype=pl.Float64),
                "detail": detail,
                "severity": pl.Series([None] * groups.height, dtype=pl.Utf8),
            }
        )

    # -- history of earlier nights ------------------------------------------
    def _with_seen_order(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.LazyFrame:
        """Adds ``_order``: the history age of records whose shard content was approved
        on an earlier night (null for new content)."""
        from integrity.analysis.history import seen_order

        keys = features.select("shard", ROW, "shard_index").collect()
        order = seen_order(ctx, HISTORY_KIND, HISTORY_PARAMS, keys["shard"], keys[ROW])
        if (order < 0).all():
            return features.with_columns(_order=pl.lit(None, dtype=pl.Int64))
        known = keys.with_columns(_order=pl.Series(order)).filter(pl.col("_order") >= 0).select("shard", ROW, "_order")
        return features.join(known.lazy(), on=["shard", ROW], how="left")

    def _history_matches(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame:
        """Per hash of tonight found in the history: the oldest approved record and the count."""
        schema = {"h": pl.Binary, "h_record_id": pl.Utf8, "h_shard": pl.Utf8, "h_sha256": pl.Utf8,
                  "h_scan_id": pl.Utf8, "h_count": pl.Int64, "h_order": pl.Int64}
        if not self.options["history"]:
            return pl.DataFrame(schema=schema)
        from integrity.analysis.history import HistoryIndex, excluded_content

        index = HistoryIndex(ctx.state_dir)
        if not index.exists():
            return pl.DataFrame(schema=schema)
        hashes = features.select(pl.col("h").unique()).collect()["h"]
        full = _hash_matrix(hashes)
        hits = index.lookup(HISTORY_KIND, HISTORY_PARAMS, _key(full), exclude=excluded_content(ctx), max_hits=4)
        if len(hits) == 0:
            return pl.DataFrame(schema=schema)
        same = (index.gather(hits, "h") == full[hits.query]).all(axis=1)  # 64-bit keys, 128-bit check
        sel = np.flatnonzero(same)
        if len(sel) == 0:
            return pl.DataFrame(schema=schema)
        order = np.lexsort((hits.order[sel], hits.query[sel]))
        q = hits.query[sel][order]
        first = sel[order][np.concatenate(([True], q[1:] != q[:-1]))]
        info = index.describe(hits, first)
        qs = hits.query[first]
        return pl.DataFrame({
            "h": hashes.gather(qs),
            "h_record_id": info[RECORD_ID], "h_shard": info["shard"], "h_sha256": info["sha256"],
            "h_scan_id": info["scan_id"], "h_count": np.bincount(hits.query[sel], minlength=len(hashes))[qs],
            "h_order": hits.order[first],
        }, schema=schema)

    def after_verdicts(self, features: pl.LazyFrame, approved: list[str], ctx: CorpusContext) -> None:
        if not self.options["history"]:
            return
        from integrity.analysis.history import HistoryIndex, approved_content, drop_rejected

        index = HistoryIndex(ctx.state_dir)
        drop_rejected(index, approved, ctx)
        df = approved_content(features, approved, ctx, with_sha256=False).select("shard", RECORD_ID, ROW, "h").collect()
        if df.height == 0:
            return
        full = _hash_matrix(df["h"])
        index.add(HISTORY_KIND, HISTORY_PARAMS, df.select("shard", RECORD_ID, ROW), keys=_key(full),
                  key_rows=np.arange(df.height), payload={"h": full}, scan_id=ctx.scan_id,
                  shard_sha256=ctx.shard_sha256)


def _hash_matrix(hashes: pl.Series) -> np.ndarray:
    """(n, 16) uint8 matrix of 128-bit hashes."""
    return np.frombuffer(b"".join(hashes.to_list()), dtype=np.uint8).reshape(-1, 16)


def _key(full: np.ndarray) -> np.ndarray:
    """The first 64 bits of each hash, the history's lookup key."""
    return np.ascontiguousarray(full[:, :8]).view("<u8").ravel().astype(np.uint64)
