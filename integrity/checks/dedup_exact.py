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

from typing import Iterator

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
    """xxh3-128 digest of each normalized text (None for nulls).

    Hashes each value's UTF-8 bytes in place in the Arrow buffer (no Python
    ``str`` and ``bytes`` copies of the column: two per value before).
    """
    if isinstance(texts, pa.ChunkedArray):
        return [h for chunk in texts.chunks for h in hash_texts(chunk)]
    digest = xxhash.xxh3_128_digest
    data, offsets = _value_bytes(texts)
    valid = texts.is_valid().to_numpy(zero_copy_only=False)
    return [digest(data[offsets[i]:offsets[i + 1]]) if valid[i] else None for i in range(len(texts))]


def _value_bytes(texts: pa.Array) -> tuple[memoryview, np.ndarray]:
    """The UTF-8 data of a string array as one memoryview, with each value's offsets into it."""
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        texts = texts.cast(pa.large_string())
    width = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    _, offsets_buf, data_buf = texts.buffers()
    offsets = np.frombuffer(offsets_buf, width)[texts.offset:texts.offset + len(texts) + 1]
    return memoryview(data_buf if data_buf is not None else b""), offsets


HUGE_TEXT_BYTES = 8 << 20  # a record text over this is normalized and hashed in pieces, not whole
_PIECE_BYTES = 4 << 20


def text_hashes(batch: pa.RecordBatch) -> tuple[list[bytes | None], np.ndarray] | None:
    """Per record: the xxh3-128 of its normalized text and that text's length in characters.

    The same values as ``hash_texts(normalized_text(batch))`` and its
    ``utf8_length``, but a record whose text holds more than
    :data:`HUGE_TEXT_BYTES` is normalized piece by piece (see
    :func:`_stream_hash`), so one huge record costs about one piece of extra
    memory rather than several whole copies (case folding, NFKC, whitespace
    folding, trimming each made one). None when the batch has no text.
    """
    cols = _text_columns(batch)
    if not cols:
        return None
    sizes = [_byte_lengths(batch.column(c)) for c in cols]
    huge = np.flatnonzero(np.maximum.reduce(sizes) > HUGE_TEXT_BYTES)
    if not huge.size:
        text = normalized_text(batch)
        return hash_texts(text), _lengths(text)
    # the other records column-wise (taken out: ``take`` copies only their bytes), the huge ones alone
    rest = np.setdiff1d(np.arange(batch.num_rows), huge)
    text = normalized_text(batch.select(cols).take(pa.array(rest, pa.int64())))
    hashes: list[bytes | None] = [None] * batch.num_rows
    lengths = np.full(batch.num_rows, -1, np.int64)
    for i, h in zip(rest, hash_texts(text)):
        hashes[i] = h
    lengths[rest] = _lengths(text)
    for i in huge:
        hashes[i], lengths[i] = _stream_hash([batch.column(c).slice(i, 1) for c in cols])
    return hashes, lengths


def _lengths(text: pa.Array) -> np.ndarray:
    """Characters per normalized text; -1 for a null (never kept)."""
    return pc.fill_null(pc.utf8_length(text), -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _text_columns(batch: pa.RecordBatch) -> list[str]:
    names = set(batch.schema.names)
    if "text" in names:
        return ["text"]
    if "prompt" in names or "response" in names:
        return [c for c in ("prompt", "response") if c in names]
    return ["caption"] if "caption" in names else []


def _byte_lengths(col: pa.Array) -> np.ndarray:
    if pa.types.is_null(col.type):
        return np.zeros(len(col), np.int64)
    return pc.fill_null(pc.binary_length(col), 0).to_numpy(zero_copy_only=False)


def _stream_hash(parts: list[pa.Array]) -> tuple[bytes | None, int]:
    """Hash and length of one record's normalized text (``parts``: its text columns, one value each).

    Mirrors :func:`normalized_text`: a lone null column gives no hash; joined
    prompt/response parts read a null as "" and are separated by ``_FIELD_SEP``.
    """
    if len(parts) == 1 and parts[0].null_count:
        return None, -1
    hasher, chars = xxhash.xxh3_128(), 0
    for k, part in enumerate(parts):
        if k:
            hasher.update(_FIELD_SEP.encode())
            chars += 1
        if part.null_count:
            continue
        pieces = _pieces(part)
        for j in range(len(pieces)):
            norm = _normalize(pieces.slice(j, 1))
            data, offsets = _value_bytes(norm)
            hasher.update(data[offsets[0]:offsets[1]])
            chars += int(pc.sum(pc.utf8_length(norm)).as_py() or 0)
    return hasher.digest(), chars


def _pieces(value: pa.Array) -> pa.Array:
    """One string value cut into pieces of about :data:`_PIECE_BYTES` (zero-copy views).

    Cuts fall only between two ASCII letters or digits: normalization never
    joins or changes such a pair (NFKC composes no ASCII letter with what
    precedes it, case folding is per character, and no whitespace run or
    leading/trailing whitespace is split), so normalizing the pieces one by
    one and concatenating gives exactly the normalized whole. A text with no
    such pair (e.g. all CJK) stays one piece.
    """
    if not (pa.types.is_string(value.type) or pa.types.is_large_string(value.type)):
        value = value.cast(pa.large_string())
    data, offsets = _value_bytes(value)
    start, end = int(offsets[0]), int(offsets[1])
    raw = np.frombuffer(data, np.uint8)
    cuts, at = [start], start + _PIECE_BYTES
    while at < end - 1:
        window = raw[at:min(at + (1 << 20), end)]
        alnum = ((window >= 0x30) & (window <= 0x39)) | (((window | 0x20) >= 0x61) & ((window | 0x20) <= 0x7A))
        pair = np.flatnonzero(alnum[:-1] & alnum[1:])
        if pair.size:
            cuts.append(at + int(pair[0]) + 1)
            at = cuts[-1] + _PIECE_BYTES
        else:
            at += (1 << 20) - 1
    cuts.append(end)
    width = np.int64 if pa.types.is_large_string(value.type) else np.int32
    return pa.Array.from_buffers(value.type, len(cuts) - 1,
                                 [None, pa.py_buffer(np.array(cuts, width)), value.buffers()[2]])


#: records of the corpus pass at a time: the hashes are cut into this many records' worth of partitions
PART_RECORDS = 250_000


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
        hashed = text_hashes(batch)
        if hashed is None:
            return CheckOutput()
        digests, lengths = hashed
        keep = lengths >= self.options["min_chars"]  # a null text has length -1: never kept
        hashes = pa.array(digests, type=pa.binary(16))
        table = pa.table({RECORD_ID: batch.column(RECORD_ID), ROW: batch.column(ROW), "h": hashes})
        table = table.filter(pa.array(keep))
        return CheckOutput(features=pl.from_arrow(table))

    def corpus_parts(self, features: pl.LazyFrame, ctx: CorpusContext) -> Iterator[pl.DataFrame]:
        """:meth:`corpus_pass` on one partition of the hashes after the other (a group of copies
        shares its hash, so each partition is complete on its own): memory is bounded by
        :data:`PART_RECORDS`, not by the corpus."""
        records = features.select(pl.len()).collect().item()
        parts = max(1, -(-records // PART_RECORDS))
        if parts == 1:
            yield self.corpus_pass(features, ctx)
            return
        bucket = pl.col("h").bin.slice(0, 8).bin.reinterpret(dtype=pl.UInt64) % parts
        for i in range(parts):
            yield self.corpus_pass(features.filter(bucket == i), ctx)

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
    """(n, 16) uint8 matrix of 128-bit hashes, read column-wise as two 64-bit halves (not as a
    Python bytes object per record)."""
    halves = [hashes.bin.slice(start, 8).bin.reinterpret(dtype=pl.UInt64, endianness="little").to_numpy()
              for start in (0, 8)]
    return np.stack(halves, axis=1).astype("<u8", copy=False).view(np.uint8).reshape(-1, 16)


def _key(full: np.ndarray) -> np.ndarray:
    """The first 64 bits of each hash, the history's lookup key."""
    return np.ascontiguousarray(full[:, :8]).view("<u8").ravel().astype(np.uint64)
