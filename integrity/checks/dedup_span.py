"""``dedup.span``: long token spans repeated across documents that may differ
elsewhere (licenses, boilerplate, leaked text: the ExactSubstr idea of Lee et al.
2022), across all shards of a scan and against the history of earlier nights.

Per shard: every run of ``span_tokens`` consecutive word tokens inside one field
is hashed (a rolling 64-bit polynomial, :mod:`integrity.analysis.dedup.text`), and
winnowing keeps the smallest hash of every ``winnow`` consecutive windows
(Schleimer et al. 2003). Two records sharing a run of at least
``span_tokens + winnow - 1`` tokens therefore always share a fingerprint, and
shorter runs of at least ``span_tokens`` tokens usually do; runs shorter than
``span_tokens`` never do (a fingerprint *is* a whole ``span_tokens`` window), so
short shared phrases are not reported. Features per record: ``fps``, the
fingerprints with their token position, field (index into
``connectors.schema.TEXT_FIELDS``) and character offsets packed as one binary
value (:data:`FP_DTYPE`, :mod:`integrity.analysis.dedup.blobs`), and ``ntok``, the
record's token count.

Corpus pass: a fingerprint is *repeated* when two or more records of the scan
hold it, or a record approved on an earlier night does (history kind
``span``). Per record, the repeated windows are merged into spans:

* ``score`` / ``share``: the share of the record's tokens inside repeated spans;
* ``other_docs``: how many other records (history included) hold its most
  repeated span;
* ``matches``: the spans as ``{"field", "start", "end"}`` character offsets, for
  highlighting (at most ``max_matches``);
* ``cluster`` / ``representative``: records linked by shared spans form
  clusters (connected components); the oldest record is kept (history first,
  then content approved before, then shard order and row) and every other
  record with a share of at least ``min_share`` is a finding.
"""
from __future__ import annotations

import logging
from typing import Iterator

import numpy as np
import polars as pl
import pyarrow as pa
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import Field

from connectors.schema import RECORD_ID, ROW, TEXT_FIELDS
from integrity.analysis.dedup.blobs import pack, unpack
from integrity.analysis.dedup.graph import bucket_pairs, components, representatives
from integrity.analysis.dedup.kernel import merge_sorted_intervals
from integrity.analysis.dedup.partitioned import key_counts, partition_count
from integrity.analysis.dedup.text import Tokens, text_fields, tokenize, windows
from integrity.analysis.history import (HistoryIndex, approved_content, drop_rejected, excluded_content,
                                        node_identities, own_earlier_version, seen_order)
from integrity.checks.base import CheckOptions, Check, CheckOutput, CorpusContext
from integrity.checks.dedup_near import cluster_ids

log = logging.getLogger(__name__)

KIND = "span"
#: one fingerprint: window hash, first token's position in the record, field
#: (index into TEXT_FIELDS), character start and end of the window in that field
#: fingerprint occurrences per counting partition (16 bytes each, spilled to the run directory's
#: ``.work``; see :func:`integrity.analysis.dedup.partitioned.key_counts`); counting one holds about
#: 50 bytes an entry for a moment (~200 MB at this size)
PARTITION_ENTRIES = 4_000_000
#: findings built (details encoded) and handed to the engine at a time
PART_ROWS = 100_000
#: occurrences routed to the partitions at a time
PIECE = 1 << 20
FP_DTYPE = np.dtype([("fp", "<u8"), ("pos", "<i4"), ("cs", "<i4"), ("ce", "<i4"), ("fld", "i1")])


def winnow(h: np.ndarray, group: np.ndarray, w: int, chunk: int = 1 << 20) -> np.ndarray:
    """Indices selected by winnowing ``h`` with window ``w`` inside each run of equal
    ``group`` (sorted): the leftmost minimum of every window of ``w`` consecutive
    values, and the minimum of a run shorter than ``w``."""
    m = len(h)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    sel = []
    if m >= w:
        for s in range(0, m - w + 1, chunk):
            e = min(m - w + 1, s + chunk)
            valid = np.flatnonzero(group[s + w - 1:e + w - 1] == group[s:e]) + s
            if len(valid):
                sw = sliding_window_view(h[s:e + w - 1], w)
                sel.append(valid + sw[valid - s].argmin(axis=1))
    run_start = np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))
    run_len = np.diff(np.append(run_start, m))
    short = run_len < w
    if short.any():
        rmin = np.minimum.reduceat(h, run_start)
        run_of = np.repeat(np.arange(len(run_start)), run_len)
        cand = np.flatnonzero(short[run_of] & (h == rmin[run_of]))
        first = cand[np.concatenate(([True], run_of[cand][1:] != run_of[cand][:-1]))]
        sel.append(first)
    return np.unique(np.concatenate(sel)) if sel else np.zeros(0, dtype=np.int64)


def merge_intervals(owner: np.ndarray, start: np.ndarray, end: np.ndarray):
    """Union of intervals per owner: (owner, start, end) of the merged intervals,
    sorted by owner then start."""
    if len(owner) == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e, e
    merged = merge_sorted_intervals(owner, start, end)
    if merged is not None:  # the usual case: fingerprints come by record, then position
        return merged
    order = np.lexsort((start, owner))
    o, s, e = owner[order], start[order].astype(np.int64), end[order].astype(np.int64)
    new_owner = np.concatenate(([True], o[1:] != o[:-1]))
    # running maximum of ends, restarted per owner by offsetting owners apart
    span = int(max(e.max(), 1)) + 1
    off = (np.cumsum(new_owner) - 1).astype(np.int64) * span
    run_end = np.maximum.accumulate(e + off) - off
    brk = new_owner.copy()
    brk[1:] |= s[1:] > run_end[:-1]
    idx = np.flatnonzero(brk)
    last = np.append(idx[1:], len(o)) - 1
    return o[idx], s[idx], run_end[last]


class SpanDedup(Check):
    name = "dedup.span"
    report_section = "dedup"
    description = "Long token spans (default 50 tokens) repeated across documents, across shards and earlier nights."
    requires = TEXT_FIELDS
    class Options(CheckOptions):
        span_tokens: int = Field(50, ge=2, description="shortest repeated run reported (words); shorter never is")
        winnow: int = Field(8, ge=1, description="runs of span_tokens + winnow - 1 words are always found, shorter ones "
                            "usually; spans' ends may miss winnow - 1 words")
        min_share: float = Field(0.0, ge=0, le=1, description="records with a smaller repeated share are not reported")
        max_matches: int = Field(20, ge=0, description="spans listed per finding")
        history: bool = Field(True, description="also match the approved data of earlier scans")
    default_severity = "warn"
    corpus_level = True
    version = 1

    def __init__(self, options=None, shard=None):
        super().__init__(options, shard)

    @property
    def params(self) -> dict:
        return {"span_tokens": int(self.options["span_tokens"]), "winnow": int(self.options["winnow"]),
                "tokens": "words-lower-v1", "hash": "poly64-v1"}

    # -- per shard ---------------------------------------------------------
    def fingerprints(self, tokens: Tokens) -> tuple[np.ndarray, np.ndarray]:
        """(fingerprint hash, index of the window's first token) after winnowing."""
        W = int(self.options["span_tokens"])
        h, first = windows(tokens, W)
        if len(h) == 0:
            return h, first
        group = tokens.doc[first] * 128 + tokens.field[first]
        sel = winnow(h, group, int(self.options["winnow"]))
        return h[sel], first[sel]

    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        fields = text_fields(batch)
        if not fields:
            return CheckOutput()
        tokens = tokenize(fields)
        fp, first = self.fingerprints(tokens)
        if len(fp) == 0:
            return CheckOutput()
        W = int(self.options["span_tokens"])
        counts = tokens.counts
        doc_first = np.zeros(tokens.n_docs, dtype=np.int64)
        doc_first[1:] = np.cumsum(counts[:-1])
        doc = tokens.doc[first]
        docs, starts = np.unique(doc, return_index=True)
        items = np.empty(len(fp), dtype=FP_DTYPE)
        items["fp"] = fp
        items["pos"] = first - doc_first[doc]
        items["fld"] = np.array([TEXT_FIELDS.index(f) for f in tokens.fields], dtype=np.int8)[tokens.field[first]]
        items["cs"] = tokens.start[first]
        items["ce"] = tokens.end[first + W - 1]
        take = pa.array(docs)
        table = pa.table({
            RECORD_ID: batch.column(RECORD_ID).take(take).cast(pa.string()),
            ROW: batch.column(ROW).take(take).cast(pa.int64()),
            "ntok": pa.array(counts[docs].astype(np.int32)),
            "fps": pack(items, np.append(starts, len(doc))),
        })
        return CheckOutput(features=pl.from_arrow(table))

    # -- corpus --------------------------------------------------------------
    def corpus_pass(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame:
        parts = list(self.corpus_parts(features, ctx))
        return pl.concat(parts) if parts else _no_findings()

    def corpus_parts(self, features: pl.LazyFrame, ctx: CorpusContext) -> Iterator[pl.DataFrame]:
        """The findings :data:`PART_ROWS` at a time (the engine spills each part as it comes): the
        fingerprints, windows and graph of the corpus are let go before the first part is built."""
        W = int(self.options["span_tokens"])
        recs = features.select(RECORD_ID, ROW, "shard", "shard_index", "ntok").collect()
        n = recs.height
        if n == 0:
            return
        items, offsets = unpack(features.select("fps").collect()["fps"], FP_DTYPE)
        doc = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
        fp = np.ascontiguousarray(items["fp"])
        # distinct records per fingerprint inside the scan
        # counted per hash partition of the fingerprints, as tasks on the scan's runner (Dask
        # workers under --runner dask): no process sorts every fingerprint of the corpus at once
        ufp, n_docs = key_counts(_pieces(fp, doc), partition_count(len(fp), PARTITION_ENTRIES),
                                 spill_dir=ctx.work_dir or None, run=ctx.map_partitions)
        fp_id = np.searchsorted(ufp, fp)
        del fp  # (the arrays of every fingerprint are let go as soon as they are used: ~20 bytes each)
        # ... and in the history
        hist_count = np.zeros(len(ufp), dtype=np.int64)
        h_nodes = None
        index = HistoryIndex(ctx.state_dir) if self.options["history"] else None
        if index is not None and index.exists():
            hits = index.lookup(KIND, self.params, ufp, exclude=excluded_content(ctx), max_hits=1)
            hist_count = hits.count
            if len(hits):
                # the oldest history record per fingerprint is the history side of its edges
                order = np.lexsort((hits.order, hits.query))
                q = hits.query[order]
                keep = order[np.concatenate(([True], q[1:] != q[:-1]))]
                uniq, first_hit, node = np.unique(hits.order[keep], return_index=True, return_inverse=True)
                info = index.describe(hits, keep[first_hit]).with_columns(order=pl.Series(uniq))
                h_nodes = (hits.query[keep], node, info)
        sharing = (n_docs - 1) + hist_count  # other records holding each fingerprint
        rep_fp = sharing[fp_id] > 0
        if not rep_fp.any():
            return
        fid = fp_id[rep_fp]
        del fp_id, ufp, n_docs

        # coverage: repeated windows merged per record, in tokens and in characters
        d = doc[rep_fp]
        del doc
        pos = items["pos"][rep_fp].astype(np.int64)
        ntok = recs["ntok"].to_numpy().astype(np.int64)
        o, s, e = merge_intervals(d, pos, pos + W)
        covered = np.bincount(o, weights=e - s, minlength=n)
        del o, s, e, pos
        share = np.minimum(covered / np.maximum(ntok, 1), 1.0)
        other = np.zeros(n, dtype=np.int64)
        np.maximum.at(other, d, sharing[fid])
        del sharing
        fld = items["fld"][rep_fp].astype(np.int64)
        cs = items["cs"][rep_fp].astype(np.int64)
        ce = items["ce"][rep_fp].astype(np.int64)
        del items, rep_fp
        co, cst, cen = merge_intervals(d * 128 + fld, cs, ce)
        del fld, cs, ce

        # clusters: records sharing a repeated fingerprint, plus the history records
        ea, eb = bucket_pairs(fid, d, chain=False)
        h_n = 0
        if h_nodes is not None:
            q_fp, node, info = h_nodes
            h_n = info.height
            qa, qb = bucket_pairs(np.concatenate([fid, q_fp]), np.concatenate([d, n + node]), chain=False)
            ea, eb = qa, qb
        del fid, d
        total = n + h_n
        labels = components(total, ea, eb)
        size = np.bincount(labels)[labels]
        seen = seen_order(ctx, KIND, self.params, recs["shard"], recs[ROW]) if index is not None else \
            np.full(n, -1, dtype=np.int64)
        group = np.zeros(total, dtype=np.int8)
        group[:n] = np.where(seen >= 0, 0, 1)
        k1 = np.zeros(total, dtype=np.int64)
        k2 = np.zeros(total, dtype=np.int64)
        k1[:n] = np.where(seen >= 0, seen, recs["shard_index"].to_numpy())
        k2[:n] = np.where(seen >= 0, 0, recs[ROW].to_numpy())
        if h_n:
            k1[n:] = h_nodes[2]["order"].to_numpy()
        rep = representatives(labels, group, k1, k2)

        found = np.flatnonzero((size[:n] > 1) & (rep[:n] != np.arange(n)) & (covered > 0)
                               & (share >= float(self.options["min_share"])))
        found = found[~own_earlier_version(found, rep[found], n, recs["shard"], recs[RECORD_ID],
                                           None if h_nodes is None else h_nodes[2])]
        if len(found) == 0:
            return
        # what the parts need; the fingerprints, windows and the graph's arrays (~500 MB at a
        # million records) are let go before the parts are built and written
        m_doc = co // 128
        keep = np.isin(m_doc, found)
        matches = (m_doc[keep], co[keep] % 128, cst[keep], cen[keep])
        del co, cst, cen, m_doc, keep, ea, eb, labels, group, k1, k2, seen
        # the records' identities gathered by index (scan records, then history nodes): no Python
        # list of the corpus's ids
        h_info = None if h_nodes is None else h_nodes[2]
        nodes = node_identities(recs, h_info)
        for start in range(0, len(found), PART_ROWS):
            yield self._findings(found[start:start + PART_ROWS], rep, size, share, covered, ntok, other, n,
                                 matches, nodes, recs)

    def _findings(self, found: np.ndarray, rep: np.ndarray, size: np.ndarray, share: np.ndarray,
                  covered: np.ndarray, ntok: np.ndarray, other: np.ndarray, n: int,
                  matches: tuple[np.ndarray, ...], nodes: pl.DataFrame, recs: pl.DataFrame) -> pl.DataFrame:
        """The findings of the records ``found`` (ascending indices into ``recs``)."""
        # character spans of the found records, as JSON-ready lists
        m_doc, m_fld, m_start, m_end = matches
        keep_m = np.isin(m_doc, found)
        spans = pl.DataFrame({"doc": m_doc[keep_m], "field": np.array(TEXT_FIELDS, dtype=object)[m_fld[keep_m]],
                              "start": m_start[keep_m], "end": m_end[keep_m]}, schema_overrides={"field": pl.Utf8})
        spans = spans.group_by("doc", maintain_order=True).agg(
            pl.struct("field", "start", "end").head(int(self.options["max_matches"])).alias("matches"))
        reps = nodes[rep[found]]
        # a cluster's id is hashed once per kept record, then spread to its members
        uniq, inv = np.unique(rep[found], return_inverse=True)
        clusters = pl.Series(cluster_ids("span", nodes["shard"].gather(uniq).to_list(),
                                         nodes[RECORD_ID].gather(uniq).to_list()), dtype=pl.Utf8).gather(inv.ravel())
        detail = pl.DataFrame({
            "doc": found,
            "cluster": clusters,
            "cluster_size": size[found],
            "representative": reps[RECORD_ID],
            "representative_shard": reps["shard"],
            # ids may repeat in a shard: the row tells an in-scan representative apart
            "representative_row": reps[ROW],
            "representative_sha256": reps["sha256"],
            "representative_scan": reps["scan"],
            "share": np.round(share[found], 4),
            "repeated_tokens": covered[found].astype(np.int64),
            "tokens": ntok[found],
            "other_docs": other[found],
            "history": rep[found] >= n,
        }, schema_overrides={"representative_sha256": pl.Utf8, "representative_scan": pl.Utf8,
                             "representative_row": pl.Int64, "doc": pl.UInt32}).join(spans.with_columns(pl.col("doc").cast(pl.UInt32)),
                                                     on="doc", how="left", maintain_order="left")
        return pl.DataFrame({
            "shard": nodes["shard"].gather(found),
            RECORD_ID: nodes[RECORD_ID].gather(found),
            ROW: recs[ROW].gather(found),  # ids may repeat in a shard; the engine moves it into detail.row
            "score": np.round(share[found], 4),
            "detail": detail.drop("doc").select(pl.struct(pl.all()).struct.json_encode()).to_series(),
            "severity": pl.Series([None] * len(found), dtype=pl.Utf8),
        })

    # -- after the verdicts: remember what was approved ------------------------
    def after_verdicts(self, features: pl.LazyFrame, approved: list[str], ctx: CorpusContext) -> None:
        if not self.options["history"]:
            return
        index = HistoryIndex(ctx.state_dir)
        drop_rejected(index, approved, ctx)
        approved_feats = approved_content(features, approved, ctx, with_sha256=False)
        df = approved_feats.select("shard", RECORD_ID, ROW).collect()
        if df.height == 0:
            return
        keys, key_rows = approved_keys(approved_feats.select("fps"))
        index.add(KIND, self.params, df, keys=keys, key_rows=key_rows, scan_id=ctx.scan_id,
                  shard_sha256=ctx.shard_sha256)


def approved_keys(fps: pl.LazyFrame) -> tuple[np.ndarray, np.ndarray]:
    """(fingerprint hash, row in ``fps``) of every fingerprint of the ``fps`` column, read a batch
    at a time: only the hashes (8 bytes each) accumulate, never the packed fingerprints of the
    whole corpus (25 bytes each, twice over while unpacked)."""
    keys, rows, base = [], [], 0
    for batch in fps.collect_batches():
        items, offsets = unpack(batch["fps"], FP_DTYPE)
        keys.append(np.ascontiguousarray(items["fp"]))
        rows.append(np.repeat(np.arange(base, base + batch.height, dtype=np.uint32), np.diff(offsets)))
        base += batch.height
        del items, batch
    if not keys:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint32)
    return np.concatenate(keys), np.concatenate(rows)


def _pieces(fp: np.ndarray, doc: np.ndarray):
    """(fingerprints, records) in slices of :data:`PIECE` occurrences."""
    for i in range(0, len(fp), PIECE):
        yield fp[i:i + PIECE], doc[i:i + PIECE]


def _no_findings() -> pl.DataFrame:
    return pl.DataFrame(schema={"shard": pl.Utf8, RECORD_ID: pl.Utf8, "score": pl.Float64, "detail": pl.Utf8,
                                "severity": pl.Utf8})
