"""``poison.caption_trigger``: caption n-grams tied to one image cluster far beyond chance.

A text-to-image backdoor (BadT2I, "Rickrolling the artist") or a targeted
CLIP poison pairs a trigger in the caption (a rare word, a short phrase) with
one kind of picture: whatever else the caption says, the image is the
attacker's target. In the data that is a lexical association between caption
n-grams and an *image cluster*, with captions that otherwise describe other
pictures. This check finds it with the poisoning engine of ``poison.trigger``
(:func:`integrity.analysis.label_triggers.detect_label_triggers`), taking the
image cluster of each record as its label:

1. **Image clusters.** Per shard, each decodable image keeps an embedding:
   ``embedding: thumbnail`` (default, no model) is the 8x8 colour and 16x16 grey
   thumbnails of :mod:`integrity.analysis.images` (already computed for the other
   image checks: no second decode); ``embedding: clip`` is the open_clip image
   embedding of the model the options name (the same ``model``/``pretrained``/
   ``scorer`` options as ``poison.caption_mismatch``; weights are never
   invented). The corpus pass reduces them with PCA (``pca_dims``) and
   clusters them with faiss k-means (``clusters``; ``auto`` = sqrt(N)/2,
   between 8 and 1024), then groups the centroids into ``levels - 1``
   coarser levels, 4x fewer clusters each: a target set larger than a fine
   cluster (k-means splits it) is whole at a coarser level, and a small one
   stands out at the fine level. Each level is tested at ``fdr / levels``; a
   record flagged at several levels is reported once (the strongest).
2. **Association and evidence** exactly as ``poison.trigger`` does for labels:
   n-grams far more tied to one cluster than the cluster's size explains
   (binomial test, Benjamini-Hochberg over groups), and *besides* the tie,
   foreignness (the words are far rarer in ordinary language) together with
   dirty-label evidence (the rest of those captions reads like the captions of
   *other* clusters: the caption describes one thing, the picture is another)
   or clean-label evidence (purity that is an outlier among the corpus' own
   groups). Natural description words ("a red circle") are tied to clusters
   too, which is why the tie alone never flags.
   ``max_label_share`` defaults to 1.0 here: a cluster made only of the
   target pictures is the attack, not a leaked label name. And
   ``clean_min_span_tokens`` defaults to 8: captions are templated, so a
   repeated three-word phrase ("on a brown background", which also names what
   dominates a thumbnail cluster) is normal there, not foreign; a trigger of
   ordinary words must be a long inserted sentence or pass the strict
   ordinary-words route.

Findings: every record of a flagged group in its target cluster, with the
``poison.trigger`` detail (``trigger``, ``group``, ``mode``, ``support``,
p-values, the evidence of the route taken, ``matches`` with offsets in the
caption) plus ``cluster``, ``cluster_size``, ``embedding`` and a thumbnail for
the first few. Score in [0.5, 1] from the association's p-value.
"""
from __future__ import annotations

import json
import logging
import math
from typing import Any, Iterable, Literal

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field, field_validator

from integrity.analysis.clip import ScorerConfigError, scorer_from_options
from integrity.analysis.images import SIG_SIDE
from integrity.analysis.label_triggers import (build_findings, detect_label_triggers, empty_corpus_findings,
                                               split_features, token_features)
from integrity.analysis.label_triggers import lexical as lx
from integrity.checks.base import CheckConfigError, CheckOutput, CorpusContext
from integrity.checks.image_base import ImageCheck, ImageOptions
from integrity.checks.poison_trigger import TriggerStatistics

log = logging.getLogger(__name__)

GREY_BYTES = 16 * 16
SIG_BYTES = SIG_SIDE * SIG_SIDE * 3


class CaptionTriggerCheck(ImageCheck):
    name = "poison.caption_trigger"
    description = ("Caption triggers: caption n-grams tied to one image cluster far beyond chance, in captions "
                   "that otherwise describe other pictures (text-to-image and CLIP backdoors).")
    requires = ("image",)
    class Options(TriggerStatistics, ImageOptions):  # image limits first, as in every image check
        # image clusters as labels: a caption phrase faithful to its pictures is pure and may be foreign
        # (a product name), so the routes that let foreignness or content alone decide stay off
        max_label_share: float = Field(1.0, ge=0, le=1, description="a cluster of nothing but the target pictures is the attack itself")
        min_group_share: float = Field(0.005, ge=0, le=1, description="a flagged group holds at least this share of the records")
        dirty_min_flip: float = Field(0.15, ge=0, le=1, description="estimated share of relabelled records, at least ...")
        clean_min_span_tokens: int = Field(8, ge=1, description="captions are templated: short repeated phrases are normal, not foreign")
        clean_strong_overrep: float = Field(1e12, ge=0, description="off: a foreign caption word alone never decides")
        clean_strong_span_members: int = Field(10 ** 9, ge=1, description="off: a long repeated caption alone never decides")
        common_strict: bool = Field(True, description="groups of ordinary words also need the purity tail and no spread")
        context_min_count: int = Field(10 ** 9, ge=1, description="off: caption words follow templates, not syntax")
        common_min_share: float = Field(0.97, ge=0, le=1, description="target share of a group of ordinary words: a faithful caption phrase is pure too")
        embedding: Literal["thumbnail", "clip"] = Field("thumbnail", description="thumbnail (8x8 colour + 16x16 grey, no model) | clip")
        model: str = Field("ViT-B-32", description="embedding: clip -- as poison.caption_mismatch")
        pretrained: str | None = Field(None, description="open_clip tag or local checkpoint (clip only)")
        scorer: Any = Field(None, description="clip only: 'module:factory' returning a scorer with embed_images()")
        device: str = Field("auto", description="clip only: auto (CUDA when present) | cuda | cpu")
        batch_size: int = Field(64, ge=1, description="clip only: images per forward pass")
        precision: Literal["auto", "fp32", "fp16", "bf16"] = Field("auto", description="clip only: auto | fp32 | fp16 | bf16")
        clusters: int | Literal["auto"] = Field("auto", description="finest k-means level: auto = sqrt(images) / 2 "
                                                "within [8, 1024], or an integer >= 2")
        levels: int = Field(3, ge=1, description="levels tested, each grouping the previous centroids 4x coarser")
        pca_dims: int = Field(64, ge=1, description="dimensions kept before clustering")
        kmeans_iterations: int = Field(25, ge=1, description="k-means iterations per level")
        min_records: int = Field(200, ge=1, description="captioned images needed before clustering")
        seed: int = Field(0, description="k-means seed")
        thumbnails: int = Field(12, ge=0, description="findings that carry a thumbnail for the report")

        @field_validator("clusters")
        @classmethod
        def _clusters(cls, value):
            if value != "auto" and value < 2:
                raise ValueError(f"must be 'auto' or an integer >= 2 (got {value!r})")
            return value
    default_severity = "warn"
    corpus_level = True
    token_columns = ("vt",)  # the shard vocabulary (label_triggers.token_features)
    version = 1

    def __init__(self, options=None, shard=None):
        super().__init__(options, shard)

    def fingerprint(self) -> str:  # token hashes depend on the Polars version, as for poison.trigger
        import hashlib
        base = super().fingerprint()
        return hashlib.sha256(f"{base}:{pl.__version__}:{lx.FEATURE_FORMAT}".encode()).hexdigest()[:16]

    def applies_to(self, columns: Iterable[str]) -> bool:
        cols = set(columns)
        return "image" in cols and "caption" in cols

    # -- per shard ---------------------------------------------------------------------------
    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        if "caption" not in batch.schema.names or "image" not in batch.schema.names:
            return CheckOutput()
        emb = self._embeddings(batch)
        feats = token_features(batch, {"t": "caption"}, int(self.options["max_tokens"]), extra={
            "emb": emb, "field": pa.array(["caption"] * batch.num_rows, pa.string()),
            "uri": pa.array([self.shard_uri] * batch.num_rows, pa.string())})
        return CheckOutput(features=feats)

    def _embeddings(self, batch: pa.RecordBatch) -> pa.Array:
        """One binary value per record (null when the image does not decode): uint8 thumbnails,
        or float16 CLIP embeddings."""
        if self.options["embedding"] == "thumbnail":
            a = self.analysis(batch)
            return pa.array([s + g if s is not None and g is not None else None for s, g in zip(a.sig, a.grey)],
                            pa.binary())
        try:
            scorer = scorer_from_options(self.options)
        except ScorerConfigError as exc:
            raise CheckConfigError(f"check {self.name!r} (embedding: clip): {exc}") from exc
        if not hasattr(scorer, "embed_images"):
            raise CheckConfigError(f"check {self.name!r}: scorer {scorer.name!r} has no embed_images(); "
                                   "use embedding: thumbnail or an open_clip model")
        vectors = scorer.embed_images(batch.column("image").to_pylist()).astype(np.float16)
        ok = np.isfinite(vectors).all(axis=1)
        return pa.array([v.tobytes() if good else None for v, good in zip(vectors, ok)], pa.binary())

    # -- corpus ------------------------------------------------------------------------------
    def corpus_pass(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame:
        recs, vocab, recs_lazy = split_features(features, ["field", "uri", "t_tok", "emb"])
        recs = recs.filter(pl.col("emb").is_not_null())
        if recs.height < int(self.options["min_records"]):
            return empty_corpus_findings()
        levels = self.cluster(recs["emb"])
        recs = recs.drop("emb")
        # every level is tested with its share of the false-discovery rate (Bonferroni over levels)
        opts = {**self.options, "fdr": float(self.options["fdr"]) / len(levels)}
        found_levels = []
        for labels in levels:
            k = int(labels.max()) + 1
            named = recs.with_columns(label=pl.Series([f"image-cluster-{k}-{c}" for c in labels], dtype=pl.Utf8))
            result = detect_label_triggers(named, vocab, opts)
            log.info("%s: %d captioned images in %d clusters: %d flagged groups", self.name, recs.height, k,
                     0 if result is None else result["groups"].height)
            if result is None or result["groups"].height == 0:
                continue
            found = build_findings(named, recs_lazy, result, vocab, "t")
            sizes = np.bincount(labels, minlength=k)
            found_levels.append(found.with_columns(detail=pl.Series(
                [self._detail(d, sizes, len(sizes)) for d in found["detail"].to_list()], dtype=pl.Utf8)))
        if not found_levels:
            return empty_corpus_findings()
        # a record flagged at several levels is one finding: the strongest (finest level on ties)
        found = (pl.concat(found_levels).with_row_index("_order")
                 .sort(["score", "_order"], descending=[True, False])
                 .unique(["shard", "record_id"], keep="first", maintain_order=True).drop("_order"))
        # where each image is, for the engine's thumbnails (a column ``row`` would go into the detail)
        where = recs.select("shard", "record_id", "uri", image_row=pl.col("row").cast(pl.Int64))
        return found.join(where.unique(["shard", "record_id"], keep="first", maintain_order=True),
                          on=["shard", "record_id"], how="left", maintain_order="left")

    def _detail(self, detail: str, sizes: np.ndarray, k: int) -> str:
        d = json.loads(detail)
        cluster = d.pop("target")
        d.update(cluster=cluster, cluster_size=int(sizes[int(cluster.rsplit("-", 1)[1])]), clusters=k,
                 cluster_share=d.pop("label_share"), cluster_prior=d.pop("label_prior"),
                 embedding=self.options["embedding"] if self.options["embedding"] == "thumbnail"
                 else f"clip:{self.options['model']}/{self.options['pretrained'] or self.options['scorer']}")
        return json.dumps(d, sort_keys=True)

    def cluster(self, embeddings: pl.Series) -> list[np.ndarray]:
        """Cluster labels of every record at each level, finest first: faiss k-means of the
        embeddings, then each coarser level groups the previous level's centroids (4x fewer),
        so a target set larger than one fine cluster still falls in one coarse cluster."""
        kind, seed = self.options["embedding"], int(self.options["seed"])
        X = project(stored_matrix(embeddings, kind), kind, int(self.options["pca_dims"]), seed)
        n = X.shape[0]
        k = self.options["clusters"]
        k = int(min(1024, max(8, round(math.sqrt(n) / 2)))) if k == "auto" else int(k)
        k = max(2, min(k, n // 5))
        labels, centroids = kmeans(X, k, int(self.options["kmeans_iterations"]), seed)
        del X
        levels = [labels]
        while len(levels) < int(self.options["levels"]) and len(centroids) // 4 >= 4:
            weights = np.bincount(levels[-1], minlength=len(centroids)).astype(np.float64)
            parent, centroids = merge_centroids(centroids, weights, len(centroids) // 4, int(self.options["seed"]))
            levels.append(parent[levels[-1]])
        return levels


def stored_matrix(values: pl.Series, kind: str) -> np.ndarray:
    """The stored embeddings as one array without conversion: uint8 thumbnails or float16 vectors."""
    raw = b"".join(values.to_list())
    if kind == "thumbnail":
        return np.frombuffer(raw, np.uint8).reshape(-1, SIG_BYTES + GREY_BYTES)
    return np.frombuffer(raw, np.float16).reshape(len(values), -1)


def embedding_matrix(values: pl.Series | np.ndarray, kind: str) -> np.ndarray:
    """float32 rows of stored embeddings: thumbnails centred per image (brightness is not
    content) with the grey part weighted to match the colour part; CLIP vectors as they are."""
    M = stored_matrix(values, kind) if isinstance(values, pl.Series) else values
    if kind == "thumbnail":
        M = M.astype(np.float32) / 255.0
        colour, grey = M[:, :SIG_BYTES], M[:, SIG_BYTES:]
        grey = (grey - grey.mean(axis=1, keepdims=True)) * math.sqrt(SIG_BYTES / GREY_BYTES)
        return np.ascontiguousarray(np.hstack([colour, grey]))
    return np.ascontiguousarray(M, dtype=np.float32)


def project(stored: np.ndarray, kind: str, dims: int, seed: int, chunk: int = 65_536) -> np.ndarray:
    """Centred float32 embeddings reduced by PCA to ``dims`` (0: all dimensions), converted a
    chunk at a time: memory holds the stored array, one float chunk and the reduced result, never
    the whole float matrix. PCA is trained on at most 100,000 sampled rows."""
    import faiss

    n, d_in = stored.shape
    d = embedding_matrix(stored[:1], kind).shape[1]
    mean = np.zeros(d, np.float64)
    for i in range(0, n, chunk):
        mean += embedding_matrix(stored[i:i + chunk], kind).sum(axis=0, dtype=np.float64)
    mean = (mean / max(n, 1)).astype(np.float32)
    pca = None
    if dims and dims < d:
        rows = np.arange(n) if n <= 100_000 else np.sort(np.random.default_rng(seed).choice(n, 100_000, False))
        pca = faiss.PCAMatrix(d, dims)
        pca.train(np.ascontiguousarray(embedding_matrix(stored[rows], kind) - mean))
    out = np.empty((n, dims if pca is not None else d), np.float32)
    for i in range(0, n, chunk):
        block = np.ascontiguousarray(embedding_matrix(stored[i:i + chunk], kind) - mean)
        out[i:i + chunk] = pca.apply(block) if pca is not None else block
    return out


def kmeans(X: np.ndarray, k: int, iterations: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss k-means of the rows of ``X``; returns the cluster of every row (compact labels
    0..k'-1, empty clusters dropped) and the centroids."""
    import faiss

    X = np.ascontiguousarray(X, dtype=np.float32)
    km = faiss.Kmeans(X.shape[1], k, niter=iterations, seed=seed, max_points_per_centroid=512, verbose=False)
    km.train(X)
    _, labels = km.index.search(X, 1)
    used, labels = np.unique(labels[:, 0], return_inverse=True)
    return labels.astype(np.int64), km.centroids[used]


def merge_centroids(centroids: np.ndarray, weights: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Group ``centroids`` (weighted by their cluster sizes) into ``k``: the parent of each
    centroid and the parents' centroids (scikit-learn k-means: a few hundred points)."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(centroids, sample_weight=weights)
    used, parent = np.unique(km.labels_, return_inverse=True)
    return parent.astype(np.int64), km.cluster_centers_[used].astype(np.float32)
