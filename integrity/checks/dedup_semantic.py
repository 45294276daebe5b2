"""``dedup.semantic``: semantic duplicates (paraphrases, light rewrites, templated
variants) by sentence embeddings and nearest-neighbour search, SemDeDup style
(Abbas et al. 2023), across all shards of a scan.

Per shard: each record's text (``text``; else ``prompt`` and ``response``
joined by a newline; else ``caption``) is embedded with a sentence-transformers
model through the project's :class:`integrity.analysis.embeddings.TextEmbedder`
(default ``all-MiniLM-L6-v2``, shipped with the package and loaded offline;
``model`` may name any sentence-transformers model or a local directory),
truncated to ``max_seq_length`` tokens, batched by token budget, on CUDA when
present. Content is embedded once: records whose normalized text is equal
(the normalization of ``dedup.exact``) share one vector. Texts shorter than
``min_chars`` are not embedded (very short strings are near each other
whatever they mean). Features: the 128-bit content hash and, for embedded
content, the L2-normalized vector as float16 bytes (768 bytes for MiniLM).

**Budget.** On a GPU everything is embedded. On CPU, embedding is the cost
(all-MiniLM-L6-v2 at 128 tokens: about 28 Debian descriptions per CPU-second,
so ~55/s on 2 idle cores; a whole 64k-record shard would take ~20 min), so a
shard embeds at most ``cpu_max_records`` distinct
contents: the ones with the smallest content hash, a deterministic sample that
is the same whatever the record order, and consistent across shards and
nights (a text sampled in one shard is sampled wherever it appears with a
similar or smaller shard), and stops after ``cpu_max_seconds`` per shard (what
is embedded is then a prefix of a fixed content-hash order, so a re-run embeds
the same texts first). Since per-shard results
are cached by shard content, a nightly scan only embeds its new shards. A
sample of a share ``q`` of the records still finds a cluster of ``k``
paraphrases when at least two of its members are sampled (for ``k = 20`` and
``q = 0.13`` that is 74 %), but a pair only with probability ``q**2``: on CPU
the check finds the large clusters, which are the memorization risk, not every
pair. ``sample_rate`` (default 1) additionally keeps only contents whose hash
falls in that fraction, everywhere (GPU too). ``null`` budgets embed all.
Default cost: 4096 texts per shard, ~150 CPU-seconds (~1.5 min on 2 idle
cores) for the 64k-record Debian corpus as one shard, never more than
``cpu_max_seconds`` (180) per shard; a scan of the Debian corpus with the
defaults embeds 6.4 % of its records.

Corpus pass: the vectors of all shards go into a faiss inner-product index:
exact ``IndexFlatIP`` up to ``exact_max_records`` vectors, above that
``IndexIVFFlat`` (``4 * sqrt(n)`` lists, ``nprobe`` probed). Measured on 2
busy CPU cores with 384-d vectors and ``k = 10``: 16k vectors, flat 3.0 s vs
IVF 1.7 s; 64k vectors, flat 71 s (quadratic) vs IVF 18-23 s (nprobe 8-16),
with the same recall of planted near-duplicate pairs (1.0), and HNSW (M=32)
95 s -- so flat stays exact and cheap to 20k, IVF takes over above. Each
vector's ``k_neighbors`` nearest neighbours with cosine similarity at least
``threshold`` are candidate pairs.

Clustering (no chaining): records are visited in scan order (shard, then row);
a record joins the cluster of an earlier neighbour when its cosine similarity
to *that cluster's representative* reaches ``threshold``, else it starts a
cluster of its own and is its representative. So every member is within the
threshold of the record kept, and two unrelated documents cannot end up in one
cluster through a chain of intermediate ones (connected components would allow
that). The representative is the first record of the cluster in scan order.

Findings: every clustered record except the representative; exact copies of
the representative's text are left to ``dedup.exact`` unless
``report_exact_copies``. ``score`` is the cosine similarity to the
representative; ``detail``: ``cluster``, ``cluster_size`` (records, exact
copies included), ``contents`` (distinct texts in the cluster),
``representative``, ``representative_shard``, ``similarity``, ``model``,
``embedded_share`` (share of the scan's records that were embedded: below 1
when the CPU budget sampled).
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Mapping

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field
import xxhash

from connectors.schema import RECORD_ID, ROW, TEXT_FIELDS
from integrity.checks.base import CheckOptions, Check, CheckOutput, CorpusContext, ShardInfo
from integrity.checks.dedup_exact import hash_texts, normalized_text

log = logging.getLogger(__name__)

FINDINGS_SCHEMA = {"shard": pl.Utf8, RECORD_ID: pl.Utf8, "score": pl.Float64, "detail": pl.Utf8,
                   "severity": pl.Utf8}
FEATURES_SCHEMA = {RECORD_ID: pl.Utf8, ROW: pl.Int64, "h": pl.Binary, "emb": pl.Binary}
#: characters of a text kept for embedding: far more than max_seq_length tokens ever need
CHARS_PER_TOKEN = 16


def embed_texts(batch: pa.RecordBatch | pa.Table) -> list[str | None] | None:
    """The text embedded for each record: ``text``; else prompt and response; else caption."""
    names = set(batch.schema.names)
    if "text" in names:
        return batch.column("text").to_pylist()
    if "prompt" in names or "response" in names:
        cols = [batch.column(c).to_pylist() for c in ("prompt", "response") if c in names]
        if len(cols) == 1:
            return cols[0]
        return [None if (p is None and r is None) else f"{p or ''}\n{r or ''}" for p, r in zip(*cols)]
    if "caption" in names:
        return batch.column("caption").to_pylist()
    return None


def _sample_key(digests: list[bytes | None]) -> np.ndarray:
    """uint64 sample key of each content (the first 8 bytes of its 128-bit hash); max for None."""
    out = np.full(len(digests), np.iinfo(np.uint64).max, dtype=np.uint64)
    for i, d in enumerate(digests):
        if d is not None:
            out[i] = int.from_bytes(d[:8], "big")
    return out


def vectors_from_bytes(col: pl.Series, dim: int | None = None) -> np.ndarray:
    """float32 matrix from a column of float16 byte strings (all of one length)."""
    raw = b"".join(col.to_list())
    arr = np.frombuffer(raw, dtype=np.float16)
    n = col.len()
    if n == 0:
        return np.zeros((0, dim or 0), dtype=np.float32)
    return arr.reshape(n, -1).astype(np.float32)


class SemanticDedup(Check):
    name = "dedup.semantic"
    report_section = "dedup"
    description = "Semantic duplicates (paraphrases) by sentence embeddings + faiss, clustered SemDeDup style."
    requires = TEXT_FIELDS
    class Options(CheckOptions):
        model: str = Field("all-MiniLM-L6-v2", description="any sentence-transformers name or a local model directory")
        device: str | None = Field(None, description="null: cuda when available, else cpu")
        batch_size: int | None = Field(None, gt=0, description="null: 64 on CPU, 512 on GPU (also capped by tokens per batch)")
        max_seq_length: int = Field(128, ge=1, description="tokens embedded per text (the model was trained on 128)")
        threshold: float = Field(0.85, gt=0, le=1, description="cosine similarity to the representative (MiniLM "
                                 "paraphrases: 0.83-0.95, unrelated sentences < 0.5)")
        k_neighbors: int = Field(10, ge=1, description="nearest neighbours searched per text")
        min_chars: int = Field(32, ge=0, description="shorter normalized texts are not embedded")
        cpu_max_records: int | None = Field(4096, gt=0, description="CPU budget: distinct texts embedded per shard (null: "
                                            "all); ~150 CPU-s (~1.5 min on 2 cores) per full shard, once per shard "
                                            "content (results are cached); a GPU embeds everything")
        cpu_max_seconds: float | None = Field(180, gt=0, description="CPU budget: hard stop per shard (null: none)")
        sample_rate: float = Field(1.0, gt=0, le=1, description="share of texts eligible at all (by content hash), CPU and GPU")
        exact_max_records: int = Field(20000, ge=1, description="exact IndexFlatIP up to this many vectors, IVF-Flat above")
        nprobe: int = Field(16, ge=1, description="IVF lists probed per query")
        report_exact_copies: bool = Field(False, description="also report exact copies of the representative")
    default_severity = "info"
    corpus_level = True
    version = 1

    def __init__(self, options: Mapping[str, Any] | None = None, shard: ShardInfo | None = None):
        super().__init__(options, shard)
        self._embedder = None
        # CPU budget state of this shard: the sampled contents so far
        self._records: list[pl.DataFrame] = []
        self._res_key = np.zeros(0, dtype=np.uint64)
        self._res_h: list[bytes] = []
        self._res_text: list[str] = []
        self._spent = 0.0  # seconds this shard spent embedding

    # ------------------------------------------------------------ embedding
    @property
    def embedder(self):
        if self._embedder is None:
            from integrity.analysis.embeddings import TextEmbedder

            o = self.options
            self._embedder = TextEmbedder(model=o["model"], device=o["device"], batch_size=o["batch_size"],
                                          max_seq_length=int(o["max_seq_length"]),
                                          cpu_max_seconds=o["cpu_max_seconds"])
        return self._embedder

    def _budgeted(self) -> bool:
        """Whether this shard embeds a bounded sample (CPU with a record budget)."""
        return self.options["cpu_max_records"] is not None and not self.embedder.on_gpu

    def _embed(self, texts: list[str], keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(indices embedded, float16 vectors) -- on CPU within ``cpu_max_seconds``."""
        if not texts:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float16)
        t0 = time.perf_counter()
        if self.embedder.on_gpu or self.options["cpu_max_seconds"] is None:
            idx, vec = np.arange(len(texts)), self.embedder.encode(texts)
        else:
            # the time budget is per shard: what earlier batches spent is gone
            left = float(self.options["cpu_max_seconds"]) - self._spent
            if left <= 0:
                log.warning("dedup.semantic: %s: cpu_max_seconds reached; %d texts not embedded",
                            self.shard.shard if self.shard else "?", len(texts))
                return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float16)
            self.embedder.cpu_max_seconds = left
            got = self.embedder.encode_budgeted(texts, keys=keys)
            idx, vec = got.indices, got.vectors
            if got.truncated_by_time:
                log.warning("dedup.semantic: %s: cpu_max_seconds (%s s) reached; embedded %d of %d sampled texts",
                            self.shard.shard if self.shard else "?", self.options["cpu_max_seconds"],
                            len(idx), len(texts))
        self._spent += time.perf_counter() - t0
        log.info("dedup.semantic: embedded %d texts in %.1fs on %s", len(idx), time.perf_counter() - t0,
                 self.embedder.device)
        return np.asarray(idx, dtype=np.int64), vec.astype(np.float16)

    # ------------------------------------------------------------ per shard
    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        texts = embed_texts(batch)
        norm = normalized_text(batch)
        if texts is None or norm is None:
            return CheckOutput()
        o = self.options
        digests = hash_texts(norm)
        long_enough = pc.fill_null(pc.greater_equal(pc.utf8_length(norm), int(o["min_chars"])), False)
        keys = _sample_key(digests)
        eligible = np.asarray(long_enough.to_numpy(zero_copy_only=False), dtype=bool)
        if float(o["sample_rate"]) < 1.0:
            eligible &= keys < np.uint64(min(float(o["sample_rate"]) * 2.0 ** 64, 2.0 ** 64 - 1))
        records = pl.DataFrame({
            RECORD_ID: pl.Series(RECORD_ID, batch.column(RECORD_ID).to_pylist(), dtype=pl.Utf8),
            ROW: pl.Series(ROW, batch.column(ROW).to_numpy(), dtype=pl.Int64),
            "h": pl.Series("h", digests, dtype=pl.Binary),
        })
        # one text per distinct eligible content of the batch
        cand: dict[bytes, int] = {}
        for i in np.flatnonzero(eligible):
            cand.setdefault(digests[i], int(i))
        max_chars = CHARS_PER_TOKEN * int(o["max_seq_length"])
        c_h = list(cand)
        c_text = [texts[i][:max_chars] for i in cand.values()]
        c_key = keys[list(cand.values())] if cand else np.zeros(0, dtype=np.uint64)
        if self._budgeted():
            self._records.append(records)
            self._reservoir(c_key, c_h, c_text)
            return CheckOutput()
        idx, vec = self._embed(c_text, [h.hex() for h in c_h])
        emb = {c_h[i]: vec[j].tobytes() for j, i in enumerate(idx)}
        return CheckOutput(features=records.with_columns(
            emb=pl.Series("emb", [emb.get(h) for h in digests], dtype=pl.Binary)))

    def _reservoir(self, key: np.ndarray, h: list[bytes], text: list[str]) -> None:
        """Keep the ``cpu_max_records`` contents with the smallest sample keys seen so far."""
        known = set(self._res_h)
        new = [i for i, x in enumerate(h) if x not in known]
        if not new:
            return
        all_key = np.concatenate([self._res_key, key[new]])
        all_h = self._res_h + [h[i] for i in new]
        all_text = self._res_text + [text[i] for i in new]
        cap = int(self.options["cpu_max_records"])
        if len(all_h) > cap:
            keep = np.sort(np.argpartition(all_key, cap - 1)[:cap])
            all_key = all_key[keep]
            all_h = [all_h[i] for i in keep]
            all_text = [all_text[i] for i in keep]
        self._res_key, self._res_h, self._res_text = all_key, all_h, all_text

    def finish_shard(self) -> CheckOutput:
        if not self._records:
            return CheckOutput()
        records = pl.concat(self._records)
        order = np.argsort(self._res_key, kind="stable")  # hash order: a time cut keeps a prefix of it
        texts = [self._res_text[i] for i in order]
        hs = [self._res_h[i] for i in order]
        idx, vec = self._embed(texts, [h.hex() for h in hs])
        emb = pl.DataFrame({"h": pl.Series("h", [hs[i] for i in idx], dtype=pl.Binary),
                            "emb": pl.Series("emb", [v.tobytes() for v in vec], dtype=pl.Binary)})
        self._records, self._res_h, self._res_text = [], [], []
        self._res_key = np.zeros(0, dtype=np.uint64)
        log.info("dedup.semantic: %s: %d records, %d contents embedded", self.shard.shard if self.shard else "?",
                 records.height, emb.height)
        return CheckOutput(features=records.join(emb, on="h", how="left"))

    # ------------------------------------------------------------ corpus
    def corpus_pass(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame:
        o = self.options
        recs = features.select(RECORD_ID, ROW, "h", "emb", "shard", "shard_index").collect()
        total = recs.height
        if total == 0:
            return pl.DataFrame(schema=FINDINGS_SCHEMA)
        # one vector per content (any shard that embedded it), ordered by first appearance
        contents = (recs.filter(pl.col("emb").is_not_null()).sort("shard_index", ROW)
                    .group_by("h", maintain_order=True).agg(pl.col("emb").first()))
        recs = recs.drop("emb").join(contents.select("h").with_row_index("c"), on="h", how="left")
        embedded = int(recs["c"].is_not_null().sum())
        n = contents.height
        log.info("dedup.semantic: %d of %d records embedded (%d distinct contents)", embedded, total, n)
        if n < 2:
            return pl.DataFrame(schema=FINDINGS_SCHEMA)
        x = vectors_from_bytes(contents["emb"])
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        t0 = time.perf_counter()
        sims, nbrs = knn(x, min(int(o["k_neighbors"]) + 1, n), int(o["exact_max_records"]), int(o["nprobe"]))
        log.info("dedup.semantic: %d-NN search over %d vectors in %.1fs", nbrs.shape[1], n, time.perf_counter() - t0)
        # rank of each content = scan order of its first record
        first = (recs.filter(pl.col("c").is_not_null()).sort("shard_index", ROW)
                 .group_by("c", maintain_order=True).agg(pl.first(RECORD_ID), pl.first("shard"), pl.first(ROW)))
        rank = np.empty(n, dtype=np.int64)
        rank[first["c"].to_numpy()] = np.arange(first.height)
        rep_of, sim_to_rep = leader_clusters(x, sims, nbrs, rank, float(o["threshold"]))
        clustered = rep_of != np.arange(n)
        if not clustered.any():
            return pl.DataFrame(schema=FINDINGS_SCHEMA)
        first_id = dict(zip(first["c"].to_list(), first[RECORD_ID].to_list()))
        first_shard = dict(zip(first["c"].to_list(), first["shard"].to_list()))
        first_row = dict(zip(first["c"].to_list(), first[ROW].to_list()))
        lab = pl.DataFrame({"c": np.arange(n, dtype=np.uint32), "rep": rep_of.astype(np.uint32),
                            "sim": sim_to_rep})
        members = (recs.filter(pl.col("c").is_not_null())
                   .join(lab, on="c", how="left")
                   .with_columns(cluster_size=pl.len().over("rep"), contents=pl.col("c").n_unique().over("rep"))
                   .filter(pl.col("cluster_size") > 1)
                   .sort("shard_index", ROW))
        # the representative record: first record of the representative content
        rep_ids = [first_id[r] for r in members["rep"].to_list()]
        rep_shards = [first_shard[r] for r in members["rep"].to_list()]
        members = members.with_columns(representative=pl.Series(rep_ids, dtype=pl.Utf8),
                                       representative_shard=pl.Series(rep_shards, dtype=pl.Utf8),
                                       representative_row=pl.Series([first_row[r] for r in members["rep"].to_list()],
                                                                     dtype=pl.Int64))
        is_rep = (pl.col(ROW) == pl.col("representative_row")) & (pl.col("shard") == pl.col("representative_shard"))
        drop = is_rep if o["report_exact_copies"] else (is_rep | (pl.col("c") == pl.col("rep")))
        found = members.filter(~drop & (pl.col("contents") > 1))
        if found.height == 0:
            return pl.DataFrame(schema=FINDINGS_SCHEMA)
        share = round(embedded / total, 4)
        h = xxhash.xxh64_hexdigest
        detail = pl.DataFrame({
            "cluster": ["semantic-" + h(f"{s}\x00{r}".encode()) for s, r in
                        zip(found["representative_shard"].to_list(), found["representative"].to_list())],
            "cluster_size": found["cluster_size"].cast(pl.Int64),
            "contents": found["contents"].cast(pl.Int64),
            "representative": found["representative"],
            "representative_shard": found["representative_shard"],
            "representative_row": found["representative_row"],
            "similarity": found["sim"].round(4),
            "model": [str(o["model"])] * found.height,
            "embedded_share": [share] * found.height,
        })
        return pl.DataFrame({
            "shard": found["shard"], RECORD_ID: found[RECORD_ID],
            ROW: found[ROW],  # ids may repeat in a shard; the engine moves it into detail.row
            "score": found["sim"].cast(pl.Float64).round(4),
            "detail": detail.select(pl.struct(pl.all()).struct.json_encode()).to_series(),
            "severity": pl.Series([None] * found.height, dtype=pl.Utf8),
        })


def knn(x: np.ndarray, k: int, exact_max: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """Inner-product ``k`` nearest neighbours of every row of ``x`` among ``x``:
    exact (``IndexFlatIP``) up to ``exact_max`` rows, ``IndexIVFFlat`` above."""
    import faiss

    n, d = x.shape
    x = np.ascontiguousarray(x, dtype=np.float32)
    if n <= exact_max:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = max(1, int(4 * math.sqrt(n)))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        train = x[np.sort(rng.choice(n, size=min(n, nlist * 64), replace=False))]
        index.train(train)
        index.nprobe = min(nprobe, nlist)
    index.add(x)
    sims = np.empty((n, k), dtype=np.float32)
    nbrs = np.empty((n, k), dtype=np.int64)
    step = 16384
    for s in range(0, n, step):
        sims[s:s + step], nbrs[s:s + step] = index.search(x[s:s + step], k)
    return sims, nbrs


def leader_clusters(x: np.ndarray, sims: np.ndarray, nbrs: np.ndarray, rank: np.ndarray,
                    threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy clustering in ``rank`` order: a vector joins the cluster of an earlier
    neighbour (similarity >= threshold) when its similarity to that cluster's
    representative reaches ``threshold``; else it represents a cluster of its own.

    Returns (representative of each vector, its similarity to the representative).
    """
    n = x.shape[0]
    rows = np.repeat(np.arange(n), nbrs.shape[1])
    cols = nbrs.ravel()
    s = sims.ravel()
    ok = (cols >= 0) & (cols != rows) & (s >= threshold)
    a, b = rows[ok], cols[ok]
    # undirected edges, then keep each one pointing from the later to the earlier vector
    late = np.concatenate([a, b])
    early = np.concatenate([b, a])
    keep = rank[early] < rank[late]
    late, early = late[keep], early[keep]
    rep = np.arange(n)
    sim = np.ones(n, dtype=np.float32)
    if late.size == 0:
        return rep, sim
    order = np.lexsort((early, rank[late]))
    late, early = late[order], early[order]
    starts = np.flatnonzero(np.concatenate(([True], late[1:] != late[:-1])))
    ends = np.append(starts[1:], late.size)
    for s0, e0 in zip(starts.tolist(), ends.tolist()):
        i = int(late[s0])
        cand = np.unique(rep[early[s0:e0]])
        cs = x[cand] @ x[i]
        j = int(np.argmax(cs))
        if cs[j] >= threshold:
            rep[i] = int(cand[j])
            sim[i] = float(cs[j])
    return rep, sim
