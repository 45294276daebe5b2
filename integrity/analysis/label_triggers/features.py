"""Per-record token features of the label-trigger checks, and reading them back.

A check's per-shard pass stores :func:`token_features` (token hashes and
character offsets per record, then the shard's vocabulary rows); its corpus pass
reads every shard's features with :func:`split_features`.
"""
from __future__ import annotations

from typing import Any

import polars as pl
import pyarrow as pa

from connectors.schema import RECORD_ID, ROW
from integrity.analysis.label_triggers import lexical as lx


def token_features(batch: pa.RecordBatch, fields: dict[str, str], max_tokens: int,
                   extra: dict[str, pa.Array] | None = None) -> pl.DataFrame:
    """Per-record token features of ``fields`` (output prefix -> batch column),
    followed by vocabulary rows (``record_id`` null, ``vh``/``vt``)."""
    cols: dict[str, Any] = {RECORD_ID: pl.Series(RECORD_ID, batch.column(RECORD_ID)).cast(pl.Utf8),
                            ROW: pl.Series(ROW, batch.column(ROW)).cast(pl.Int64)}
    for name, arr in (extra or {}).items():
        cols[name] = pl.Series(name, arr)
    vocabs = []
    for prefix, col in fields.items():
        toks, vocab = lx.tokenize(pl.Series(col, batch.column(col)).cast(pl.Utf8), max_tokens=max_tokens)
        cols[f"{prefix}_tok"] = toks["tok"]
        cols[f"{prefix}_start"] = toks["start"]
        cols[f"{prefix}_end"] = toks["end"]
        vocabs.append(vocab)
    recs = pl.DataFrame(cols)
    vocab = pl.concat(vocabs).unique("h").rename({"h": "vh", "token": "vt"})
    return pl.concat([recs, vocab], how="diagonal_relaxed")


def split_features(features: pl.LazyFrame, columns: list[str]) -> tuple[pl.DataFrame, dict[int, str], pl.LazyFrame]:
    """(record rows with ``columns``, vocabulary dict, record rows lazily)."""
    recs_lazy = features.filter(pl.col(RECORD_ID).is_not_null())
    recs = recs_lazy.select(["shard", "shard_index", RECORD_ID, ROW, *columns]).collect()
    recs = recs.sort(["shard_index", ROW])
    vocab = features.filter(pl.col(RECORD_ID).is_null()).select("vh", "vt").unique("vh").collect()
    return recs, dict(zip(vocab["vh"].to_list(), vocab["vt"].to_list())), recs_lazy
