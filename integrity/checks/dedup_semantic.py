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

**CPU: every record, in two stages.** On a GPU everything is embedded with
``model``. On CPU that model is the cost (all-MiniLM-L6-v2 at 128 tokens: about
58 Debian descriptions per CPU-second in float32, 170 under bf16 autocast on a CPU
with native bf16, ``cpu_bf16``), so every eligible content is embedded
with a *static* model instead (:mod:`integrity.analysis.static_embeddings`:
distilled once from ``model``, cached in the state directory, or the model2vec
model ``static_model`` names; ~14,000 descriptions per CPU-second), stored as
float16 bytes (``sv``) with the shard's ``uri``. The corpus pass takes the
corpus mean out of the static vectors, searches each one's
``static_neighbors`` nearest (faiss, as below), and keeps pairs at static
cosine ``static_threshold`` or more as candidates; only the candidate
contents get ``model`` vectors (their text re-read from the shard at the row
of their first record, embedded in the corpus pass), and the clusters are
built from those, so ``threshold`` means what it means on a GPU; the re-scored
contents are also compared with each other along MiniLM's own ``k_neighbors``
nearest neighbours (``compare_rescored``), so a template family bigger than
``static_neighbors`` is compared as a whole. MiniLM re-scores at most
``rescore_share`` (half) of the scan's distinct texts (and, when set,
``rescore_per_shard`` per shard and ``rescore_max_records`` in all), so its
cost per record is bounded whatever the corpus: past that budget the candidate
pairs are re-scored most similar first (``sure_first``), pairs at static similarity
``static_accept`` that the budget does not reach are clustered on it without
re-scoring, and the rest are not compared
(:func:`integrity.analysis.semantic_candidates.rescore_plan`; ``counts.coverage``
and ``detail.decided_by`` say which). Against float32 MiniLM vectors of all 63,956
Debian descriptions (241,268 pairs at 0.85; 68 % of the records are candidates),
the plan keeps 95.7 % of the pairs under the default budget (51 % of the records
re-scored), 91 % at 45 %, 53 % at the old 4,096 texts per shard and 99.4 % with
no budget (``benchmarks/semantic.py --reference all``). The GPU path also stores static vectors, so a
scan whose shards ran on both kinds of worker still compares everything.

``static_model: false`` restores the sampled CPU path: a shard embeds at most
``cpu_max_records`` distinct contents with ``model`` (the ones with the
smallest content hash, a deterministic sample that is the same whatever the
record order) and stops after ``cpu_max_seconds`` per shard (a prefix of that
fixed hash order). ``sample_rate`` (default 1) keeps only contents whose hash
falls in that fraction, everywhere. How many records got a vector is the
check's :meth:`SemanticDedup.coverage` (``summary.json``'s
``counts.coverage``; the report's coverage table).

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
import time
from typing import Any, Mapping

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from connectors.schema import RECORD_ID, ROW, TEXT_FIELDS
from integrity.checks.base import CheckOptions, Check, CheckOutput, CorpusContext, ShardInfo
# the corpus pass's clustering and the shard I/O live in two helper modules (re-exported here)
from integrity.checks._semantic_clusters import (FINDINGS_SCHEMA, Clustering, cluster_full, cluster_static,  # noqa: F401
                                                 findings_frame, full_vectors)
from integrity.checks._semantic_texts import (CHARS_PER_TOKEN, ContentSample, embed_texts, read_texts,  # noqa: F401
                                              sample_key, vectors_from_bytes)
from integrity.checks.dedup_exact import hash_texts, normalized_text

log = logging.getLogger(__name__)

_sample_key = sample_key  # the old private name
FEATURES_SCHEMA = {RECORD_ID: pl.Utf8, ROW: pl.Int64, "h": pl.Binary, "emb": pl.Binary, "sv": pl.Binary,
                   "uri": pl.Utf8, "eligible": pl.Boolean}


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
        cpu_bf16: bool | None = Field(None, description="CPU: run `model` under bfloat16 autocast (null: when the "
                                      "CPU has native bf16, AMX or AVX512-BF16: ~3x faster, cosine within 0.004 "
                                      "of float32; false: always float32)")
        threshold: float = Field(0.85, gt=0, le=1, description="cosine similarity to the representative (MiniLM "
                                 "paraphrases: 0.83-0.95, unrelated sentences < 0.5)")
        k_neighbors: int = Field(10, ge=1, description="nearest neighbours searched per text")
        min_chars: int = Field(32, ge=0, description="shorter normalized texts are not embedded")
        cpu_max_records: int | None = Field(4096, gt=0, description="CPU without a static stage (static_model: "
                                            "false): distinct texts embedded per shard (null: all); ~150 CPU-s per "
                                            "full shard; a GPU embeds everything")
        cpu_max_seconds: float | None = Field(180, gt=0, description="CPU without a static stage: hard stop per "
                                              "shard (null: none)")
        sample_rate: float = Field(1.0, gt=0, le=1, description="share of texts eligible at all (by content hash), CPU and GPU")
        exact_max_records: int = Field(20000, ge=1, description="exact IndexFlatIP up to this many vectors, IVF-Flat above")
        nprobe: int = Field(16, ge=1, description="IVF lists probed per query")
        report_exact_copies: bool = Field(False, description="also report exact copies of the representative")
        # CPU: every record gets a static vector; static neighbours are the candidates `model` re-scores
        static_model: str | bool | None = Field(None, description="CPU: model2vec model (directory or hub name) "
                                                "that embeds every record; null: distilled from `model` once, cached "
                                                "in the state dir; false: no static stage (CPU embeds the "
                                                "cpu_max_records sample instead)")
        static_threshold: float = Field(0.7, ge=-1, le=1, description="static cosine similarity (corpus mean "
                                        "removed) that makes a pair a candidate for re-scoring")
        static_neighbors: int = Field(25, ge=1, description="static neighbours searched per record (with 0.7: "
                                      "recall 0.97 of MiniLM's pairs on Debian)")
        rescore_per_shard: int | None = Field(None, gt=0, description="CPU: MiniLM re-scores at most this many "
                                              "candidate texts per shard of the scan (null: no per-shard cap); past "
                                              "the budget, pairs at static_accept are taken without re-scoring and "
                                              "the rest most similar first")
        rescore_share: float | None = Field(0.5, gt=0, le=1, description="CPU: MiniLM re-scores at most this "
                                            "share of the scan's distinct texts, so its cost per record is bounded "
                                            "(0.5: recall 0.96 of MiniLM's pairs on all of Debian, where 68% of the "
                                            "records are candidates; null: no share cap)")
        rescore_max_records: int | None = Field(None, gt=0, description="CPU: at most this many candidate texts "
                                                "re-scored with `model` in the whole scan (null: no cap besides "
                                                "rescore_per_shard)")
        compare_rescored: bool = Field(True, description="CPU: also compare the re-scored texts with each other "
                                       "along the full model's k_neighbors nearest neighbours (families larger than "
                                       "static_neighbors cannot list all their pairs); false: static pairs only")
        sure_first: bool = Field(True, description="when the re-scoring budget binds: re-score the candidate pairs "
                                 "most similar first, the sure ones (static_accept) included, and decide only the "
                                 "sure pairs the budget does not reach statically; false: sure pairs are decided "
                                 "statically and the budget goes to the others")
        static_accept: float | None = Field(0.97, ge=-1, le=1, description="when the re-scoring budget binds: "
                                            "static cosine at which a pair is a duplicate without re-scoring "
                                            "(0.97: precision 0.96 against MiniLM at 0.85 on Debian); null: never")

        @field_validator("static_model")
        @classmethod
        def _static_model(cls, v: Any) -> Any:
            if v is True:
                raise ValueError("must be a model directory, a hub name, null or false (not true)")
            return v
    default_severity = "info"
    corpus_level = True
    version = 2

    def __init__(self, options: Mapping[str, Any] | None = None, shard: ShardInfo | None = None):
        super().__init__(options, shard)
        self._embedder = None
        self._static_model: Any = None
        # CPU budget state of this shard: its records and the sampled contents so far
        self._records: list[pl.DataFrame] = []
        self._sample = ContentSample(int(self.options["cpu_max_records"] or 1))
        self._spent = 0.0  # seconds this shard spent embedding

    # ------------------------------------------------------------ embedding
    @property
    def embedder(self):
        if self._embedder is None:
            from integrity.analysis.embeddings import TextEmbedder

            o = self.options
            self._embedder = TextEmbedder(model=o["model"], device=o["device"], batch_size=o["batch_size"],
                                          max_seq_length=int(o["max_seq_length"]),
                                          cpu_max_seconds=o["cpu_max_seconds"], cpu_bf16=o["cpu_bf16"])
        return self._embedder

    @property
    def static_enabled(self) -> bool:
        """Whether records get static vectors (every record; candidates on CPU)."""
        return self.options["static_model"] is not False

    @property
    def static(self):
        """The static embedding model (see :mod:`integrity.analysis.static_embeddings`), loaded once."""
        if self._static_model is None:
            from integrity.analysis.static_embeddings import static_model

            o = self.options
            state = self.shard.state_dir if self.shard is not None else None
            self._static_model = static_model(o["static_model"], state, source=o["model"])
        return self._static_model

    def _budgeted(self) -> bool:
        """Whether this shard embeds a bounded sample (CPU with a record budget and no static stage)."""
        return (not self.static_enabled and self.options["cpu_max_records"] is not None
                and not self.embedder.on_gpu)

    def _minilm_in_shard(self) -> bool:
        """Whether the shard stage embeds with the full model: on a GPU, or on CPU without a static stage."""
        return self.embedder.on_gpu or not self.static_enabled

    def _static_vectors(self, texts: list[str]) -> list[bytes]:
        """float16 bytes of each text's static vector."""
        from integrity.analysis.static_embeddings import encode_static

        t0 = time.perf_counter()
        vec = encode_static(self.static, texts, max_tokens=int(self.options["max_seq_length"])).astype(np.float16)
        log.info("dedup.semantic: %d static vectors in %.2fs", len(texts), time.perf_counter() - t0)
        return [v.tobytes() for v in vec]

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
        log.info("dedup.semantic: embedded %d texts in %.1fs on %s (%s)", len(idx), time.perf_counter() - t0,
                 self.embedder.device, self.embedder.precision)
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
            "eligible": pl.Series("eligible", eligible, dtype=pl.Boolean),
        })
        # one text per distinct eligible content of the batch
        cand: dict[bytes, int] = {}
        for i in np.flatnonzero(eligible):
            cand.setdefault(digests[i], int(i))
        max_chars = CHARS_PER_TOKEN * int(o["max_seq_length"])
        c_h = list(cand)
        c_text = [texts[i][:max_chars] for i in cand.values()]
        c_key = keys[list(cand.values())] if cand else np.zeros(0, dtype=np.uint64)
        uri = self.shard.uri if self.shard is not None else None
        if self.static_enabled:
            sv = dict(zip(c_h, self._static_vectors(c_text)))
            records = records.with_columns(sv=pl.Series("sv", [sv.get(h) for h in digests], dtype=pl.Binary))
        else:
            records = records.with_columns(sv=pl.lit(None, dtype=pl.Binary))
        records = records.with_columns(uri=pl.lit(uri, dtype=pl.Utf8))
        if self._budgeted():
            self._records.append(records)
            self._sample.add(c_key, c_h, c_text)
            return CheckOutput()
        if not self._minilm_in_shard():  # CPU with a static stage: MiniLM re-scores candidates later
            return CheckOutput(features=records.with_columns(emb=pl.lit(None, dtype=pl.Binary))
                               .select(list(FEATURES_SCHEMA)))
        idx, vec = self._embed(c_text, [h.hex() for h in c_h])
        emb = {c_h[i]: vec[j].tobytes() for j, i in enumerate(idx)}
        return CheckOutput(features=records.with_columns(
            emb=pl.Series("emb", [emb.get(h) for h in digests], dtype=pl.Binary)).select(list(FEATURES_SCHEMA)))

    def finish_shard(self) -> CheckOutput:
        if not self._records:
            return CheckOutput()
        records = pl.concat(self._records)
        hs, texts = self._sample.in_key_order()  # hash order: a time cut keeps a prefix of it
        idx, vec = self._embed(texts, [h.hex() for h in hs])
        emb = pl.DataFrame({"h": pl.Series("h", [hs[i] for i in idx], dtype=pl.Binary),
                            "emb": pl.Series("emb", [v.tobytes() for v in vec], dtype=pl.Binary)})
        self._records = []
        self._sample = ContentSample(self._sample.cap)
        log.info("dedup.semantic: %s: %d records, %d contents embedded", self.shard.shard if self.shard else "?",
                 records.height, emb.height)
        return CheckOutput(features=records.join(emb, on="h", how="left").select(list(FEATURES_SCHEMA)))

    # ------------------------------------------------------------ corpus
    def coverage(self, features: pl.LazyFrame) -> dict[str, Any] | None:
        """Records with a vector (static or full model) among those long enough to embed."""
        names = features.collect_schema().names()
        if "eligible" not in names:
            return None
        vec = pl.col("emb").is_not_null() | (pl.col("sv").is_not_null() if "sv" in names else pl.lit(False))
        got = features.select(
            seen=pl.len(), records=pl.col("eligible").sum(), embedded=(pl.col("eligible") & vec).sum(),
            full=(pl.col("eligible") & pl.col("emb").is_not_null()).sum()).collect().row(0, named=True)
        records, embedded = int(got["records"] or 0), int(got["embedded"] or 0)
        return {"records": records, "embedded": embedded, "share": round(embedded / records, 4) if records else 1.0,
                "seen": int(got["seen"]),
                "how": "full model" if int(got["full"] or 0) == embedded else "static model, candidates re-scored"}

    def corpus_pass(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame:
        o = self.options
        names = features.collect_schema().names()
        cols = [RECORD_ID, ROW, "h", "emb", "shard", "shard_index"] + [c for c in ("sv", "uri") if c in names]
        recs = features.select(cols).collect()
        if "sv" not in recs.columns:  # features of an older version
            recs = recs.with_columns(sv=pl.lit(None, dtype=pl.Binary), uri=pl.lit(None, dtype=pl.Utf8))
        total = recs.height
        if total == 0:
            return pl.DataFrame(schema=FINDINGS_SCHEMA)
        # one row per content (any shard that embedded it), ordered by first appearance
        vec = pl.col("emb").is_not_null() | pl.col("sv").is_not_null()
        contents = (recs.filter(vec).sort("shard_index", ROW)
                    .group_by("h", maintain_order=True)
                    .agg(pl.col("emb").drop_nulls().first(), pl.col("sv").drop_nulls().first(),
                         pl.col("uri").first(), pl.col(ROW).first().alias("at_row")))
        recs = recs.drop("emb", "sv").join(contents.select("h").with_row_index("c"), on="h", how="left")
        embedded = int(recs["c"].is_not_null().sum())
        n = contents.height
        log.info("dedup.semantic: %d of %d records embedded (%d distinct contents)", embedded, total, n)
        if n < 2:
            return pl.DataFrame(schema=FINDINGS_SCHEMA)
        # rank of each content = scan order of its first record
        first = (recs.filter(pl.col("c").is_not_null()).sort("shard_index", ROW)
                 .group_by("c", maintain_order=True).agg(pl.first(RECORD_ID), pl.first("shard"), pl.first(ROW)))
        rank = np.empty(n, dtype=np.int64)
        rank[first["c"].to_numpy()] = np.arange(first.height)
        if contents["emb"].null_count() == 0:  # full model everywhere (GPU, or the CPU sample)
            cl = cluster_full(contents, rank, o)
        else:
            cl = cluster_static(contents, rank, o, lambda cand: full_vectors(contents, cand, o, self.embedder, ctx),
                                recs["shard"].n_unique())
            self.corpus_coverage = cl.coverage
        if not (cl.rep != np.arange(n)).any():
            return pl.DataFrame(schema=FINDINGS_SCHEMA)
        return findings_frame(recs, first, cl, embedded, o)
