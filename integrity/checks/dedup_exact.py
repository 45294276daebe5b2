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
"""
from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from integrity.checks.base import Check, CheckOutput, CorpusContext
from integrity.schema import RECORD_ID, ROW

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
    description = "Exact duplicates after NFKC, case and whitespace folding, across all shards."
    requires = ("text", "prompt", "response", "caption")
    default_options = {"min_chars": 1}
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
        groups = (
            features.filter(pl.len().over("h") > 1)
            .sort(["h", "shard_index", ROW])
            .with_columns(
                representative=pl.col(RECORD_ID).first().over("h"),
                representative_shard=pl.col("shard").first().over("h"),
                group_size=pl.len().over("h"),
                rank=pl.int_range(pl.len()).over("h"),
                cluster=pl.lit("exact-") + pl.col("h").bin.encode("hex").str.slice(0, 16),
            )
            .filter(pl.col("rank") > 0)
            .collect()
        )
        detail = groups.select(
            pl.struct(["cluster", "representative", "representative_shard", "group_size"]).struct.json_encode()
        ).to_series()
        return pl.DataFrame(
            {
                "shard": groups["shard"],
                "record_id": groups[RECORD_ID],
                "score": pl.Series([1.0] * groups.height, dtype=pl.Float64),
                "detail": detail,
                "severity": pl.Series([None] * groups.height, dtype=pl.Utf8),
            }
        )
