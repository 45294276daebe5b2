"""``dedup.near``: near duplicates by MinHash + LSH over word n-grams, across all
shards of a scan and against the history of earlier nights.

Per shard (one compiled pass per record over the batch's Arrow buffers,
:mod:`integrity.analysis.dedup.kernel`; the NumPy path, vectorized per batch,
gives the same values where numba is missing): records are
tokenized (lower case, punctuation dropped), shingled into word ``ngram``-grams
(a record shorter than that is one shingle), and MinHashed with ``num_perm``
(``bands * rows``) permutations. Features per record: ``bands`` (``bands``
uint64 LSH keys, each the hash of ``rows`` minima), ``sketch`` (the
``sketch_size`` smallest distinct 32-bit shingle hashes: a bottom-k sketch) and
``nsh`` (distinct shingles); ``bands`` and ``sketch`` are little-endian binary
values (:mod:`integrity.analysis.dedup.blobs`).

Corpus pass: records sharing a band key are candidates (star + chain per
bucket, so a bucket costs linear, never quadratic, pairs). The join is
partitioned (:mod:`integrity.analysis.dedup.partitioned`): shard by shard, every
(band, key) entry is spilled to one of ``n * bands / partition_entries``
partitions, and each partition is joined alone, so memory holds one shard's
bands or one partition, never all band keys; the candidate pairs are then
verified on the sketches of only the records that have one, gathered shard by
shard. A candidate pair is kept when its Jaccard similarity computed from the bottom-k sketches reaches
``threshold`` -- exact for records of at most ``sketch_size`` distinct
shingles, an estimate over the union's smallest values for longer ones. (The
benchmark measured the alternative, the k-permutation MinHash estimate, at
precision 0.90 / recall 0.93 on the Debian corpus against 0.99+ for sketches,
because real corpora hold many pairs just around 0.8.) The history index
(``STATE_DIR/dedup_history``, kind ``near``) is probed with the same band keys
and verified the same way. Verified pairs
are clustered as connected components (``scipy.sparse.csgraph``). The record
kept per cluster is the oldest: a history record if the cluster has one, else
the first record of content already approved on an earlier night, else the
first by shard order then row. Every other record of the cluster is a finding:

* ``score``: the highest verified similarity of the record to any other;
* ``detail``: ``cluster``, ``cluster_size`` (records, history included),
  ``representative`` / ``representative_shard`` (and ``representative_sha256``,
  ``representative_scan`` when it comes from history), ``similarity`` (Jaccard
  to the representative; below ``threshold`` when the record is only linked
  through others), ``history`` (the representative is from an earlier night).

After the verdicts, approved shards' band keys and sketches enter the history;
shards of this scan that were not approved leave it.

Secrets: the check reads the records as they are, not with secrets masked as
every check that can write record text does (``reads_raw_secrets``). It keeps
only hashes of the text (band keys, 32-bit shingle hashes) and writes record
ids, so nothing of a secret reaches its outputs; masking its input would cost a
regular-expression pass over every record (about 1.9 s of a 19 s scan of a
million records) and only change the shingles of the records that hold one.

With the defaults (20 bands of 5 rows), a pair at Jaccard 0.8 becomes a
candidate with probability 0.9997, one at 0.5 with 0.47.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field
import xxhash

from connectors.schema import RECORD_ID, ROW, TEXT_FIELDS
from integrity.analysis.dedup.blobs import pack, pack_fixed, unpack, unpack_fixed
from integrity.analysis.dedup.graph import components, representatives
from integrity.analysis.dedup.minhash import MinHasher, bottom_k, sketch_pairs
from integrity.analysis.dedup.partitioned import SketchSubset, band_join, pair_members, partition_count
from integrity.analysis.dedup.kernel import band_keys, near_features
from integrity.analysis.dedup.text import shingles, text_field_names, text_fields, tokenize
from integrity.analysis.history import HistoryIndex, drop_rejected, node_identities, own_earlier_version, seen_order
from integrity.checks._near_history import KIND, approved_frames, history_edges, remember_approved
from integrity.checks.base import CheckOptions, Check, CheckConfigError, CheckOutput, CorpusContext

log = logging.getLogger(__name__)

#: findings built and handed to the engine at a time (their details are JSON text)
PART_ROWS = 100_000


def cluster_ids(prefix: str, shards: list[str | None], record_ids: list[str | None]) -> list[str]:
    """Cluster ids named after the kept record: stable across runs, unique within a scan."""
    h = xxhash.xxh64_hexdigest
    return [prefix + "-" + h(f"{s}\x00{r}".encode()) for s, r in zip(shards, record_ids)]


class NearDedup(Check):
    name = "dedup.near"
    report_section = "dedup"
    description = "Near duplicates: MinHash + LSH over word n-grams, across all shards and earlier nights."
    requires = TEXT_FIELDS
    class Options(CheckOptions):
        ngram: int = Field(5, ge=1, description="words per shingle (Lee et al. 2022 / Gopher use 5)")
        threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity of the shingle sets to count as a duplicate")
        bands: int = Field(20, ge=1, description="LSH bands of `rows` MinHash values each (bands * rows permutations)")
        rows: int = Field(5, ge=1, description="MinHash values per band; P(candidate | J=0.8) = 0.9997, | J=0.5) = 0.47")
        seed: int = Field(1, description="permutation seed (changing it, ngram, bands or rows starts a new history)")
        sketch_size: int = Field(128, ge=1, description="bottom-k sketch size used to verify candidates")
        min_tokens: int = Field(1, ge=0, description="records with fewer words are not compared")
        history: bool = Field(True, description="also match the approved data of earlier scans")
        partition_entries: int = Field(8_000_000, ge=1, description="band entries per band-join partition (16 bytes each, "
                                       "spilled to the run directory): bounds the join's memory at any size")
    default_severity = "warn"
    corpus_level = True
    masks_own_details = True
    # keeps only hashes of the text and writes record ids (see the module's docstring)
    reads_raw_secrets = True
    version = 2  # 2: reads the raw text (the features of a record holding a secret changed)

    def __init__(self, options=None, shard=None):
        super().__init__(options, shard)
        o = self.options
        try:
            self.hasher = MinHasher(bands=int(o["bands"]), rows=int(o["rows"]), seed=int(o["seed"]))
        except ValueError as e:
            raise CheckConfigError(f"check {self.name!r}: options 'bands' and 'rows': {e}", check=self.name,
                                   problems=[("bands", str(e))]) from None

    @property
    def params(self) -> dict:
        return {**self.hasher.fingerprint(), "ngram": int(self.options["ngram"]), "tokens": "words-lower-v1",
                "sketch": int(self.options["sketch_size"])}

    # -- per shard ---------------------------------------------------------
    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        names = text_field_names(batch.schema)
        if not names:
            return CheckOutput()
        o = self.options
        # one compiled pass per record over the Arrow buffers; the NumPy path (same values)
        # where numba is missing or a text field is not a string column
        got = near_features(batch, names, int(o["ngram"]), int(o["min_tokens"]), self.hasher.params,
                            int(o["sketch_size"]))
        docs, sig, values, offsets, nsh = got if got is not None else self._numpy_features(batch)
        if len(docs) == 0:
            return CheckOutput()
        take = pa.array(docs)
        table = pa.table({
            RECORD_ID: batch.column(RECORD_ID).take(take).cast(pa.string()),
            ROW: batch.column(ROW).take(take).cast(pa.int64()),
            "bands": pack_fixed(self._band_keys(sig).astype("<u8", copy=False)),
            "sketch": pack(values.astype("<u4", copy=False), offsets),
            "nsh": pa.array(nsh),
        })
        return CheckOutput(features=pl.from_arrow(table))

    def _band_keys(self, sig: np.ndarray) -> np.ndarray:
        """The signature's LSH band keys: compiled, or NumPy's (the same values) without numba."""
        got = band_keys(sig, self.hasher.bands, self.hasher.rows)
        return got if got is not None else self.hasher.band_keys(sig)

    def _numpy_features(self, batch: pa.RecordBatch) -> tuple[np.ndarray, ...]:
        """(docs, signatures, sketch values, sketch offsets, distinct shingles), vectorized
        over the batch with NumPy: the reference the compiled kernel is tested against."""
        tokens = tokenize(text_fields(batch))
        sh, doc = shingles(tokens, int(self.options["ngram"]))
        if int(self.options["min_tokens"]) > 1 and len(doc):
            keep = tokens.counts[doc] >= int(self.options["min_tokens"])
            sh, doc = sh[keep], doc[keep]
        docs, sig = self.hasher.signatures(sh, doc, tokens.n_docs)
        return (docs, sig) + bottom_k(sh, doc, docs, int(self.options["sketch_size"]))

    # -- corpus --------------------------------------------------------------
    def corpus_pass(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame:
        parts = list(self.corpus_parts(features, ctx))
        return pl.concat(parts) if parts else _no_findings()

    def corpus_parts(self, features: pl.LazyFrame, ctx: CorpusContext) -> Iterator[pl.DataFrame]:
        """The findings :data:`PART_ROWS` at a time (the engine spills each part as it comes)."""
        # the records' places are read once the candidates are verified, their ids once the
        # sketches are let go: neither is held beside the candidates (60 MB at a million records)
        n = features.select(pl.len()).collect().item()
        if n == 0:
            return
        k = int(self.options["sketch_size"])
        threshold = float(self.options["threshold"])
        nb = self.hasher.bands
        chunks = self._shard_frames(features, ctx)

        # candidates inside the scan: the band join, partitioned (one shard's bands or one
        # partition's entries in memory at a time), then verified on the sketches of only the
        # records that have a candidate
        parts = partition_count(n * nb, int(self.options["partition_entries"]))
        spill = ctx.work_dir or (str(ctx.run_dir) if Path(ctx.run_dir).is_dir() else None)
        codes, m, _ = band_join(((first, self._bands(lf)) for first, lf in chunks), parts, spill_dir=spill,
                                run=ctx.map_partitions, n_records=n)

        # candidates in the history of earlier nights, shard by shard
        hist = history_edges(((first, self._bands(lf), self._sketches(lf)) for first, lf in chunks),
                             ctx, self.params, k, threshold) if self.options["history"] else None
        q_doc = hist[0] if hist is not None else np.zeros(0, np.int64)
        wanted = pair_members(codes, m, n, also=q_doc)
        subset = SketchSubset(wanted, self._wanted_sketches(chunks, wanted, n), max_len=k)
        ea, eb, es = _verified(subset, codes, m, k, threshold)
        log.info("dedup.near: %d records, %d band-join partitions, %d candidate pairs verified, "
                 "%d duplicate pairs", n, parts, len(codes), len(ea))
        del codes  # the candidates are verified: only the duplicate pairs go on

        h_n, h_info = 0, None
        sk_vals, sk_offs, sk_nsh = subset.arrays
        if hist is not None:
            q_doc, h_node, h_sim, h_sk, h_info = hist
            h_n = h_info.height
            ea = np.concatenate([ea, q_doc])
            eb = np.concatenate([eb, n + h_node])
            es = np.concatenate([es, h_sim])
            sk_vals = np.concatenate([sk_vals, h_sk[0]])
            sk_offs = np.concatenate([sk_offs[:-1], sk_offs[-1] + h_sk[1]])
            sk_nsh = np.concatenate([sk_nsh, h_sk[2]])
            del h_node, h_sim, h_sk
        del hist, q_doc
        total = n + h_n
        labels = components(total, ea, eb)
        best = np.zeros(total, dtype=np.float64)
        np.maximum.at(best, ea, es)
        np.maximum.at(best, eb, es)
        # the pairs are done with (24 bytes a pair): let go before the records' ids are read, as
        # is each array of the graph below once used; the sketches stay for the representatives'
        # similarities, the largest part (~220 MB at a million records)
        del ea, eb, es
        size = np.bincount(labels)[labels]

        def read(*columns: str) -> pl.DataFrame:  # the records' columns, as many as were counted
            got = features.select(*columns).collect()
            if got.height != n:
                raise RuntimeError(f"dedup.near: the features changed while the pass ran ({n} then {got.height} records)")
            return got

        # the records' places now, their ids once the sketches are let go (~25 MB at a million records)
        df = read(ROW, "shard", "shard_index")

        # who is kept: the oldest approved record (history, or content of tonight approved
        # on an earlier night), else the first by shard order and row
        seen = seen_order(ctx, KIND, self.params, df["shard"], df[ROW]) if self.options["history"] else \
            np.full(n, -1, dtype=np.int64)
        group = np.zeros(total, dtype=np.int8)
        group[:n] = np.where(seen >= 0, 0, 1)
        k1 = np.zeros(total, dtype=np.int64)
        k2 = np.zeros(total, dtype=np.int64)
        k1[:n] = np.where(seen >= 0, seen, df["shard_index"].to_numpy())
        k2[:n] = np.where(seen >= 0, 0, df[ROW].to_numpy())
        if h_n:
            k1[n:] = h_info["order"].to_numpy()
        rep = representatives(labels, group, k1, k2)
        del group, k1, k2, seen

        found = np.flatnonzero((size[:n] > 1) & (rep[:n] != np.arange(n)))
        ids = read(RECORD_ID)[RECORD_ID] if h_info is not None else None
        found = found[~own_earlier_version(found, rep[found], n, df["shard"], ids, h_info)]
        if len(found) == 0:
            return
        rep_f, size_f, best_f = rep[found], size[found], best[found]
        del labels, rep, size, best

        def node_row(nodes: np.ndarray) -> np.ndarray:  # node -> row of the gathered sketches
            return np.where(nodes < n, subset.index(np.minimum(nodes, n - 1)), len(subset.wanted) + nodes - n)

        sim_rep = sketch_pairs(sk_vals, sk_offs, sk_nsh, node_row(found), node_row(rep_f), k)
        # the parts are yielded (and written) while this frame lives: the sketches are let go before
        del subset, sk_vals, sk_offs, sk_nsh, wanted
        df = df.with_columns(ids if ids is not None else read(RECORD_ID)[RECORD_ID])
        del ids
        nodes = node_identities(df, h_info)
        for start in range(0, len(found), PART_ROWS):
            part = slice(start, start + PART_ROWS)
            yield _findings("near", df, found[part], rep_f[part], size_f[part], h_info, {
                "similarity": np.round(sim_rep[part], 4)}, np.round(best_f[part], 4), nodes=nodes,
                mask=ctx.mask_details)

    def _shard_frames(self, features: pl.LazyFrame, ctx: CorpusContext) -> list[tuple[int, pl.LazyFrame]]:
        """(first record index, lazy features) per shard, in the order of ``features``; the
        whole frame as one piece when the engine did not list the shards' files."""
        files = ctx.feature_files.get(self.name)
        if not files:
            return [(0, features)]
        out, first = [], 0
        for shard, index, path in files:
            lf = pl.scan_parquet(path)
            out.append((first, lf))
            first += lf.select(pl.len()).collect().item()
        return out

    def _wanted_sketches(self, chunks: list[tuple[int, pl.LazyFrame]], wanted: np.ndarray, n: int):
        """(first, (values, offsets), nsh) of the shards holding a wanted record; the sketches of
        a shard without one (no candidate, no history match) are not read at all."""
        for i, (first, lf) in enumerate(chunks):
            stop = chunks[i + 1][0] if i + 1 < len(chunks) else n
            lo, hi = np.searchsorted(wanted, [first, stop])
            if hi > lo:
                values, offsets, nsh = self._sketches(lf)
                yield first, (values, offsets), nsh

    def _bands(self, lf: pl.LazyFrame) -> np.ndarray:
        return unpack_fixed(lf.select("bands").collect()["bands"], "<u8", self.hasher.bands)

    @staticmethod
    def _sketches(lf: pl.LazyFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        got = lf.select("sketch", "nsh").collect()
        return unpack(got["sketch"], "<u4") + (got["nsh"].to_numpy(),)

    # -- after the verdicts: remember what was approved ------------------------
    def after_verdicts(self, features: pl.LazyFrame, approved: list[str], ctx: CorpusContext) -> None:
        if not self.options["history"]:
            return
        drop_rejected(HistoryIndex(ctx.state_dir), approved, ctx)
        # one approved shard's features at a time (its own file): a query over every shard's
        # file held ~200 MB of Polars' buffers at a million records
        frames = approved_frames(self.name, features, approved, ctx)
        if frames:
            remember_approved(frames, ctx, self.params, self.hasher.bands)


#: candidate pairs verified at a time (their rows in the subset and similarities: 24 bytes a pair)
VERIFY_PAIRS = 1 << 20


def _verified(subset: SketchSubset, codes: np.ndarray, m: int, k: int, threshold: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidate pairs (``codes``: ``a * m + b``) whose sketches' Jaccard reaches
    ``threshold``, as (a, b, similarity), :data:`VERIFY_PAIRS` at a time: the ends, subset rows
    and similarities of every candidate (millions of pairs at a million records) are never held
    at once, only the pairs that verify."""
    keep_a, keep_b, keep_s = [], [], []
    for lo in range(0, len(codes), VERIFY_PAIRS):
        c = codes[lo:lo + VERIFY_PAIRS]
        ca, cb = c // m, c % m
        sim = sketch_pairs(*subset.arrays, subset.index(ca), subset.index(cb), k)
        ok = sim >= threshold
        keep_a.append(ca[ok])
        keep_b.append(cb[ok])
        keep_s.append(sim[ok])
    if not keep_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    return np.concatenate(keep_a), np.concatenate(keep_b), np.concatenate(keep_s)


def _findings(prefix: str, df: pl.DataFrame, found: np.ndarray, rep_f: np.ndarray, sizes: np.ndarray,
              h_info: pl.DataFrame | None, extra: dict, score: np.ndarray,
              nodes: pl.DataFrame | None = None,
              mask: Callable[[pl.DataFrame], pl.DataFrame] | None = None) -> pl.DataFrame:
    """Findings of the records ``found`` (indices into ``df``) kept as ``rep_f``, in clusters of ``sizes``
    (node indices: ``df`` rows, then ``h_info`` rows for history records; ``nodes``: their
    :func:`integrity.analysis.history.node_identities`, built here when not given).
    Column-wise: the records' ids and shards are gathered by index, never turned into Python
    lists of the corpus.

    The details are masked here with ``mask`` (the engine's ``CorpusContext.mask_details``; see
    ``masks_own_details``): the only text in them that comes from the data, the representative's
    id, shard and scan, is JSON-encoded and masked once per representative, then spread to its
    findings; the rest is the cluster id (a hash) and numbers."""
    n = df.height
    nodes = node_identities(df, h_info) if nodes is None else nodes
    # what describes a representative is computed once per cluster, then spread to its members
    uniq, inv = np.unique(rep_f, return_inverse=True)
    inv = inv.ravel()
    rep = nodes[uniq]
    about_rep = pl.DataFrame({
        "representative": rep[RECORD_ID],
        "representative_shard": rep["shard"],
        # ids may repeat in a shard: the row tells an in-scan representative apart
        "representative_row": rep[ROW],
        "representative_sha256": rep["sha256"],
        "representative_scan": rep["scan"],
    }, schema={"representative": pl.Utf8, "representative_shard": pl.Utf8, "representative_row": pl.Int64,
               "representative_sha256": pl.Utf8, "representative_scan": pl.Utf8})
    # a JSON object per representative, masked as a whole detail would be; its fields without braces
    rep_json = about_rep.select(json=pl.struct(pl.all()).struct.json_encode())
    rep_json = (mask(rep_json) if mask is not None else rep_json)["json"]
    per_rep = pl.DataFrame({
        "cluster": cluster_ids(prefix, rep["shard"].to_list(), rep[RECORD_ID].to_list()),
        "fields": rep_json.str.slice(1).str.head(-1),
    })
    spread = per_rep[inv]
    # the per-finding fields: numbers and flags only
    tail = pl.DataFrame({**extra, "history": rep_f >= n}).select(pl.struct(pl.all()).struct.json_encode()).to_series()
    detail = pl.concat_str(
        pl.lit('{"cluster":"'), spread["cluster"], pl.lit('","cluster_size":'),
        pl.Series(sizes, dtype=pl.Int64).cast(pl.Utf8), pl.lit(","), spread["fields"], pl.lit(","),
        tail.str.slice(1))
    return pl.DataFrame({
        "shard": nodes["shard"].gather(found),
        RECORD_ID: nodes[RECORD_ID].gather(found),
        ROW: df[ROW].gather(found),  # ids may repeat in a shard; the engine moves it into detail.row
        "score": pl.Series(score, dtype=pl.Float64),
        "detail": pl.select(detail).to_series().alias("detail"),
        "severity": pl.Series([None] * len(found), dtype=pl.Utf8),
    })


def _no_findings() -> pl.DataFrame:
    return pl.DataFrame(schema={"shard": pl.Utf8, RECORD_ID: pl.Utf8, "score": pl.Float64, "detail": pl.Utf8,
                                "severity": pl.Utf8})
