"""``dedup.near``: near duplicates by MinHash + LSH over word n-grams, across all
shards of a scan and against the history of earlier nights.

Per shard (vectorized per batch, see :mod:`integrity.dedup`): records are
tokenized (lower case, punctuation dropped), shingled into word ``ngram``-grams
(a record shorter than that is one shingle), and MinHashed with ``num_perm``
permutations. Features per record: ``bands`` (``bands`` uint64 LSH keys, each
the hash of ``rows`` minima) and ``sig`` (the 16-bit minima, for verification).

Corpus pass: records sharing a band key are candidates (star + chain per
bucket, so a bucket costs linear, never quadratic, pairs); a candidate pair is
kept when the Jaccard similarity estimated from the signatures reaches
``threshold``. The history index (``STATE_DIR/dedup_history``, kind ``near``)
is probed with the same band keys and verified the same way. Verified pairs
are clustered as connected components (``scipy.sparse.csgraph``). The record
kept per cluster is the oldest: a history record if the cluster has one, else
the first record of content already approved on an earlier night, else the
first by shard order then row. Every other record of the cluster is a finding:

* ``score``: the highest verified similarity of the record to any other;
* ``detail``: ``cluster``, ``cluster_size`` (records, history included),
  ``representative`` / ``representative_shard`` (and ``representative_sha256``,
  ``representative_scan`` when it comes from history), ``similarity`` (estimated
  Jaccard to the representative; below ``threshold`` when the record is only
  linked through others), ``history`` (the representative is from an earlier night).

After the verdicts, approved shards' keys and signatures enter the history;
shards of this scan that were not approved leave it.

With the defaults (20 bands of 5 rows), a pair at Jaccard 0.8 becomes a
candidate with probability 0.9997 and one at 0.5 with 0.47; the estimate's
standard error at 0.8 is about 0.035 with 128 permutations.
"""
from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pyarrow as pa
import xxhash

from integrity.checks.base import Check, CheckConfigError, CheckOutput, CorpusContext
from integrity.dedup.graph import bucket_pairs, components, first_of_pairs, representatives, unique_pairs
from integrity.dedup.minhash import MinHasher, estimate, estimate_pairs, low_bits
from integrity.dedup.text import shingles, text_fields, tokenize
from integrity.history import HistoryIndex, approved_content, drop_rejected, excluded_content
from integrity.schema import RECORD_ID, ROW

log = logging.getLogger(__name__)

KIND = "near"
#: history records considered per query band key (the oldest ones)
HISTORY_HITS_PER_KEY = 8


def cluster_ids(prefix: str, shards: list[str | None], record_ids: list[str | None]) -> list[str]:
    """Cluster ids named after the kept record: stable across runs, unique within a scan."""
    h = xxhash.xxh64_hexdigest
    return [prefix + "-" + h(f"{s}\x00{r}".encode()) for s, r in zip(shards, record_ids)]


class NearDedup(Check):
    name = "dedup.near"
    description = "Near duplicates: MinHash + LSH over word n-grams, across all shards and earlier nights."
    requires = ("text", "prompt", "response", "caption")
    default_options = {
        "ngram": 5,
        "threshold": 0.8,
        "num_perm": 128,
        "bands": 20,
        "rows": 5,
        "seed": 1,
        "min_tokens": 1,
        "history": True,
    }
    default_severity = "warn"
    corpus_level = True
    version = 1

    def __init__(self, options=None, shard=None):
        super().__init__(options, shard)
        o = self.options
        try:
            self.hasher = MinHasher(num_perm=int(o["num_perm"]), bands=int(o["bands"]), rows=int(o["rows"]),
                                    seed=int(o["seed"]))
        except ValueError as e:
            raise CheckConfigError(f"check {self.name!r}: {e}") from None
        if not 0.0 < float(o["threshold"]) <= 1.0:
            raise CheckConfigError(f"check {self.name!r}: threshold must be in (0, 1], not {o['threshold']!r}")
        if int(o["ngram"]) < 1:
            raise CheckConfigError(f"check {self.name!r}: ngram must be at least 1")

    @property
    def params(self) -> dict:
        return {**self.hasher.fingerprint(), "ngram": int(self.options["ngram"]), "tokens": "words-lower-v1"}

    # -- per shard ---------------------------------------------------------
    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        fields = text_fields(batch)
        if not fields:
            return CheckOutput()
        tokens = tokenize(fields)
        sh, doc = shingles(tokens, int(self.options["ngram"]))
        docs, sig = self.hasher.signatures(sh, doc, tokens.n_docs)
        if int(self.options["min_tokens"]) > 1 and len(docs):
            keep = tokens.counts[docs] >= int(self.options["min_tokens"])
            docs, sig = docs[keep], sig[keep]
        if len(docs) == 0:
            return CheckOutput()
        take = pa.array(docs)
        return CheckOutput(features=pl.DataFrame({
            RECORD_ID: pl.Series(RECORD_ID, batch.column(RECORD_ID).take(take).to_pylist(), dtype=pl.Utf8),
            ROW: pl.Series(ROW, batch.column(ROW).take(take).to_numpy(), dtype=pl.Int64),
            "bands": pl.Series("bands", self.hasher.band_keys(sig)),
            "sig": pl.Series("sig", low_bits(sig)),
        }))

    # -- corpus --------------------------------------------------------------
    def corpus_pass(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame:
        df = features.select(RECORD_ID, ROW, "shard", "shard_index", "bands", "sig").collect()
        n = df.height
        if n == 0:
            return _no_findings()
        bands = df["bands"].to_numpy()
        sig = np.ascontiguousarray(df["sig"].to_numpy())
        threshold = float(self.options["threshold"])

        # candidates inside the scan, band by band (memory: one band at a time)
        cand_a, cand_b = [], []
        items = np.arange(n, dtype=np.int64)
        for j in range(bands.shape[1]):
            a, b = bucket_pairs(np.ascontiguousarray(bands[:, j]), items)
            cand_a.append(a)
            cand_b.append(b)
        a, b = unique_pairs(np.concatenate(cand_a), np.concatenate(cand_b))
        sim = estimate_pairs(sig, a, b)
        ok = sim >= threshold
        ea, eb, es = a[ok], b[ok], sim[ok]
        log.info("dedup.near: %d records, %d candidate pairs, %d verified", n, len(a), int(ok.sum()))

        # candidates in the history of earlier nights
        hist = self._history_edges(bands, sig, ctx, threshold)
        h_n = 0
        h_info = None
        if hist is not None:
            q_doc, h_node, h_sim, h_sig, h_info = hist
            h_n = len(h_sig)
            ea = np.concatenate([ea, q_doc])
            eb = np.concatenate([eb, n + h_node])
            es = np.concatenate([es, h_sim])
        total = n + h_n
        labels = components(total, ea, eb)
        size = np.bincount(labels, minlength=labels.max() + 1 if total else 0)[labels]

        # who is kept: history (oldest first), then content approved before, then shard order and row
        live_before = self._live_sha256(ctx)
        shard_sha = pl.Series([ctx.shard_sha256.get(s) for s in df["shard"].to_list()], dtype=pl.Utf8)
        seen_before = shard_sha.is_in(list(live_before)).fill_null(False).to_numpy()
        group = np.zeros(total, dtype=np.int8)
        group[:n] = np.where(seen_before, 1, 2)
        k1 = np.zeros(total, dtype=np.int64)
        k2 = np.zeros(total, dtype=np.int64)
        k1[:n] = df["shard_index"].to_numpy()
        k2[:n] = df[ROW].to_numpy()
        if h_n:
            k1[n:] = h_info["order"].to_numpy()
        rep = representatives(labels, group, k1, k2)

        best = np.zeros(total, dtype=np.float64)
        np.maximum.at(best, ea, es)
        np.maximum.at(best, eb, es)
        found = np.flatnonzero((size[:n] > 1) & (rep[:n] != np.arange(n)))
        if len(found) == 0:
            return _no_findings()
        rep_f = rep[found]
        all_sig = sig if h_n == 0 else np.concatenate([sig, h_sig])
        sim_rep = estimate(sig[found], all_sig[rep_f])

        ids = df[RECORD_ID].to_list()
        shards = df["shard"].to_list()
        node_id = ids + ([] if h_info is None else h_info["record_id"].to_list())
        node_shard = shards + ([] if h_info is None else h_info["shard"].to_list())
        node_sha = [None] * n + ([] if h_info is None else h_info["sha256"].to_list())
        node_scan = [None] * n + ([] if h_info is None else h_info["scan_id"].to_list())
        reps = rep_f.tolist()
        rep_ids = [node_id[r] for r in reps]
        rep_shards = [node_shard[r] for r in reps]
        detail = pl.DataFrame({
            "cluster": cluster_ids("near", rep_shards, rep_ids),
            "cluster_size": size[found],
            "representative": rep_ids,
            "representative_shard": rep_shards,
            "representative_sha256": [node_sha[r] for r in reps],
            "representative_scan": [node_scan[r] for r in reps],
            "similarity": np.round(sim_rep, 4),
            "history": rep_f >= n,
        }, schema_overrides={"representative_sha256": pl.Utf8, "representative_scan": pl.Utf8})
        return pl.DataFrame({
            "shard": [shards[i] for i in found],
            RECORD_ID: [ids[i] for i in found],
            "score": np.round(best[found], 4),
            "detail": detail.select(pl.struct(pl.all()).struct.json_encode()).to_series(),
            "severity": pl.Series([None] * len(found), dtype=pl.Utf8),
        })

    def _live_sha256(self, ctx: CorpusContext) -> set[str]:
        if not self.options["history"]:
            return set()
        return HistoryIndex(ctx.state_dir).live_sha256(KIND, self.params)

    def _history_edges(self, bands: np.ndarray, sig: np.ndarray, ctx: CorpusContext, threshold: float):
        """Verified pairs (record, history node) and the history nodes' signatures and identity."""
        if not self.options["history"]:
            return None
        index = HistoryIndex(ctx.state_dir)
        if not index.exists():
            return None
        nb = bands.shape[1]
        hits = index.lookup(KIND, self.params, bands.ravel(), exclude=excluded_content(ctx),
                            max_hits=HISTORY_HITS_PER_KEY)
        if len(hits) == 0:
            return None
        q_doc = hits.query // nb
        # one candidate per (record, history record)
        h_idx = first_of_pairs(q_doc, hits.order)
        q_doc = q_doc[h_idx]
        h_sig = index.gather(hits, "sig", h_idx)
        sim = estimate(sig[q_doc], h_sig)
        ok = sim >= threshold
        if not ok.any():
            return None
        q_doc, h_idx, sim, h_sig = q_doc[ok], h_idx[ok], sim[ok], h_sig[ok]
        # history nodes: one per distinct history record
        uniq, first, node = np.unique(hits.order[h_idx], return_index=True, return_inverse=True)
        info = index.describe(hits, h_idx[first]).with_columns(order=pl.Series(uniq))
        log.info("dedup.near: %d records match %d history records", len(np.unique(q_doc)), len(uniq))
        return q_doc, node, sim, h_sig[first], info

    # -- after the verdicts: remember what was approved ------------------------
    def after_verdicts(self, features: pl.LazyFrame, approved: list[str], ctx: CorpusContext) -> None:
        if not self.options["history"]:
            return
        index = HistoryIndex(ctx.state_dir)
        drop_rejected(index, approved, ctx)
        df = approved_content(features, approved, ctx).select("sha256", "shard", RECORD_ID, ROW, "bands", "sig").collect()
        if df.height == 0:
            return
        bands = df["bands"].to_numpy()
        nb = bands.shape[1]
        index.add(KIND, self.params, df.select("sha256", "shard", RECORD_ID, ROW), keys=bands.ravel(),
                  key_rows=np.repeat(np.arange(df.height), nb), payload={"sig": df["sig"].to_numpy()},
                  scan_id=ctx.scan_id)


def _no_findings() -> pl.DataFrame:
    return pl.DataFrame(schema={"shard": pl.Utf8, RECORD_ID: pl.Utf8, "score": pl.Float64, "detail": pl.Utf8,
                                "severity": pl.Utf8})
