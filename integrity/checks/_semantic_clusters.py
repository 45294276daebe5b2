"""The corpus pass of :mod:`integrity.checks.dedup_semantic`: leader clusters over the full
model's vectors (:func:`cluster_full`), or over the candidates static vectors propose, re-scored
by the full model within a budget (:func:`cluster_static`), and the findings of the clusters
(:func:`findings_frame`). The candidate search and the budget are in
:mod:`integrity.analysis.semantic_candidates`."""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np
import polars as pl
import xxhash

from connectors.schema import RECORD_ID, ROW
from integrity.analysis.semantic_candidates import (candidate_pairs, knn, leader_clusters, pair_lists, pair_similarity,
                                                    rescore_budget, rescore_plan, static_candidates, static_clusters,
                                                    static_unit, unit)
from integrity.checks._semantic_texts import CHARS_PER_TOKEN, read_texts, vectors_from_bytes

log = logging.getLogger("integrity.checks.dedup_semantic")

FINDINGS_SCHEMA = {"shard": pl.Utf8, RECORD_ID: pl.Utf8, "score": pl.Float64, "detail": pl.Utf8,
                   "severity": pl.Utf8}


class Clustering(NamedTuple):
    """Leader clusters of the contents: each one's representative and similarity to it."""

    rep: np.ndarray
    sim: np.ndarray
    #: contents clustered on static similarity >= ``static_accept`` (the re-scoring budget was spent)
    static_only: np.ndarray = np.zeros(0, dtype=np.int64)
    #: how the candidates were decided (the corpus pass's part of ``counts.coverage``); None on the full-model path
    coverage: dict[str, Any] | None = None


#: full-model vectors of some contents (indices) and which of them could be had
FullVectors = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

def cluster_full(contents: pl.DataFrame, rank: np.ndarray, o: Mapping[str, Any]) -> Clustering:
    """Leader clusters over the full model's vectors of every content (options ``o`` of the check)."""
    x = unit(vectors_from_bytes(contents["emb"]))
    t0 = time.perf_counter()
    sims, nbrs = knn(x, min(int(o["k_neighbors"]) + 1, len(x)), int(o["exact_max_records"]), int(o["nprobe"]))
    log.info("dedup.semantic: %d-NN search over %d vectors in %.1fs", nbrs.shape[1], len(x), time.perf_counter() - t0)
    return Clustering(*leader_clusters(x, sims, nbrs, rank, float(o["threshold"])))


def cluster_static(contents: pl.DataFrame, rank: np.ndarray, o: Mapping[str, Any], full_vectors: FullVectors,
                   shards: int = 1) -> Clustering:
    """Leader clusters of the candidates that static vectors propose, scored by the full model.

    Every content has a static vector; its ``static_neighbors`` nearest neighbours at static
    similarity ``static_threshold`` or more are candidate pairs. Only the contents in a
    candidate pair get full-model vectors (kept from the shard stage, else re-read from their
    shard and embedded now), and clustering uses those, so ``threshold`` means what it means
    on a GPU. With ``compare_rescored`` the re-scored contents are also compared with each
    other along the full model's own ``k_neighbors`` nearest neighbours: a template family
    larger than ``static_neighbors`` cannot list all its pairs, but all its members are
    candidates. When the candidates exceed the re-scoring budget
    (:func:`integrity.analysis.semantic_candidates.rescore_plan`), the budget goes to the
    candidate pairs most similar first (``sure_first``; else pairs at ``static_accept`` are left
    to static similarity and the budget goes to the others), and sure pairs (``static_accept``)
    it does not reach are clustered on static similarity; a content left out whose sure partner
    was re-scored joins its partner's cluster. ``full_vectors`` gives the full model's vectors of
    the contents it is asked for (:func:`full_vectors`)."""
    n = contents.height
    rep, sim = np.arange(n), np.ones(n, dtype=np.float32)
    has_sv = contents["sv"].is_not_null().to_numpy()
    ids = np.flatnonzero(has_sv)
    if len(ids) < 2:
        return Clustering(rep, sim)
    t0 = time.perf_counter()
    xs = vectors_from_bytes(contents["sv"].filter(pl.Series(has_sv)))
    k = min(int(o["static_neighbors"]) + 1, len(xs))
    la, lb, _ = static_candidates(xs, int(o["static_neighbors"]), float(o["static_threshold"]),
                                  int(o["exact_max_records"]), int(o["nprobe"]))
    xc = static_unit(xs)
    pair_sim = pair_similarity(xc, la, lb)
    a, b = ids[la], ids[lb]
    budget = rescore_budget(o, shards, n)
    accept = o["static_accept"]
    plan = rescore_plan(n, a, b, pair_sim, budget, accept, sure_first=bool(o.get("sure_first", True)))
    coverage = plan.coverage(budget, accept)
    log.info("dedup.semantic: static %d-NN over %d contents in %.1fs: %d candidate pairs, %d candidate contents",
             k, len(xs), time.perf_counter() - t0, len(a), plan.candidates)
    if plan.binds:
        log.warning("dedup.semantic: re-scoring budget: %s", coverage["how"])
    scored = np.zeros(n, dtype=bool)
    scored[plan.rescore] = True
    xfull = np.zeros((n, xc.shape[1]), dtype=np.float32)
    xfull[ids] = xc
    inner = ~scored[plan.accept_a] & ~scored[plan.accept_b]
    if inner.any():  # the statically sure pairs the budget did not reach: leader clusters in static space
        rep, sim = static_clusters(xfull, replace(plan, accept_a=plan.accept_a[inner], accept_b=plan.accept_b[inner]),
                                   rank, float(accept))
    cand = plan.rescore
    if len(cand) == 0:
        return Clustering(rep, sim, plan.static_only, coverage)
    x, ok = full_vectors(cand)
    cand, x = cand[ok], x[ok]
    pos = np.full(n, -1, dtype=np.int64)
    pos[cand] = np.arange(len(cand))
    keep = (pos[a] >= 0) & (pos[b] >= 0)
    pa_, pb_ = pos[a[keep]], pos[b[keep]]
    if o.get("compare_rescored", True) and len(cand) > 1:
        # the full model's own neighbours among the re-scored contents
        ms, mn = knn(x, min(int(o["k_neighbors"]) + 1, len(x)), int(o["exact_max_records"]), int(o["nprobe"]))
        ma, mb, _ = candidate_pairs(ms, mn, float(o["threshold"]))
        both = np.unique(np.stack([np.concatenate([np.minimum(pa_, pb_), ma]),
                                   np.concatenate([np.maximum(pa_, pb_), mb])], axis=1), axis=0)
        pa_, pb_ = both[:, 0], both[:, 1]
    if len(pa_):
        sims, nbrs = pair_lists(x, pa_, pb_)  # each candidate's pairs, scored by the full model
        c_rep, c_sim = leader_clusters(x, sims, nbrs, rank[cand], float(o["threshold"]))
        rep[cand] = cand[c_rep]
        sim[cand] = c_sim
    _follow_rescored(rep, sim, plan, pos >= 0, xfull)
    return Clustering(rep, sim, plan.static_only, coverage)


def _follow_rescored(rep: np.ndarray, sim: np.ndarray, plan: Any, scored: np.ndarray, xfull: np.ndarray) -> None:
    """A content left out of re-scoring whose sure pair (static similarity >= ``static_accept``)
    leads to a re-scored content joins that content's cluster (in place; its similarity: the
    static one), with its own static cluster when it led one."""
    ca, cb = plan.accept_a, plan.accept_b
    cross = scored[ca] != scored[cb]
    if not cross.any():
        return
    m = np.where(scored[ca[cross]], cb[cross], ca[cross])  # the content left out
    r = np.where(scored[ca[cross]], ca[cross], cb[cross])  # its re-scored partner
    s = pair_similarity(xfull, m, r)
    free = rep[m] == m  # not already a member of a static cluster
    m, r, s = m[free], r[free], s[free]
    order = np.lexsort((-s, m))  # each content's most similar re-scored partner
    m, r, s = m[order], r[order], s[order]
    first = np.concatenate(([True], m[1:] != m[:-1]))
    m, r, s = m[first], r[first], s[first]
    target = np.arange(len(rep))
    target[m] = rep[r]
    led = np.isin(rep, m)  # members of the static clusters these contents led follow them
    rep[led] = target[rep[led]]
    sim[m] = s


def full_vectors(contents: pl.DataFrame, cand: np.ndarray, o: Mapping[str, Any], embedder: Any,
                 ctx: Any) -> tuple[np.ndarray, np.ndarray]:
    """Full-model vectors of the contents ``cand`` (and which could be had): the shard stage's
    where it embedded them, else the text re-read from its shard (the scan's column mapping and
    storage options of ``ctx``, a :class:`integrity.checks.base.CorpusContext`) and embedded now
    with ``embedder`` (a :class:`integrity.analysis.embeddings.TextEmbedder`)."""
    sub = contents[cand.tolist()]
    have = sub["emb"].is_not_null().to_numpy()
    dim = None
    out: dict[int, np.ndarray] = {}
    if have.any():
        v = vectors_from_bytes(sub["emb"].filter(pl.Series(have)))
        dim = v.shape[1]
        out.update(zip(np.flatnonzero(have).tolist(), v))
    need = np.flatnonzero(~have)
    if len(need):
        t0 = time.perf_counter()
        texts = read_texts(sub["uri"][need.tolist()].to_list(), sub["at_row"][need.tolist()].to_list(),
                           ctx.mapping, CHARS_PER_TOKEN * int(o["max_seq_length"]),
                           ctx.storage_options)
        got = [i for i, t in zip(need.tolist(), texts) if t is not None]
        if len(got) < len(need):
            log.warning("dedup.semantic: %d candidate texts could not be re-read from their shards and are not "
                        "re-scored", len(need) - len(got))
        if got:
            vecs = embedder.encode([t for t in texts if t is not None])
            dim = vecs.shape[1]
            out.update(zip(got, vecs))
        log.info("dedup.semantic: re-scored %d candidate contents with %s in %.1fs on %s (%s)", len(got),
                 o["model"], time.perf_counter() - t0, embedder.device, embedder.precision)
    ok = np.zeros(len(cand), dtype=bool)
    x = np.zeros((len(cand), dim or 1), dtype=np.float32)
    for i, v in out.items():
        ok[i] = True
        x[i] = v
    return unit(x), ok


def findings_frame(recs: pl.DataFrame, first: pl.DataFrame, cl: Clustering, embedded: int,
                   o: Mapping[str, Any]) -> pl.DataFrame:
    """The findings of clusters ``cl``: every clustered record (``recs``: the scan's records, ``c`` their
    content) except the representative, and except exact copies of it unless ``report_exact_copies``.
    ``first`` is each content's first record in scan order; ``embedded`` the records with a vector."""
    n = len(cl.rep)
    rep_of, sim_to_rep = cl.rep, cl.sim
    first_id = dict(zip(first["c"].to_list(), first[RECORD_ID].to_list()))
    first_shard = dict(zip(first["c"].to_list(), first["shard"].to_list()))
    first_row = dict(zip(first["c"].to_list(), first[ROW].to_list()))
    by_static = np.zeros(n, dtype=bool)
    by_static[cl.static_only] = True
    lab = pl.DataFrame({"c": np.arange(n, dtype=np.uint32), "rep": rep_of.astype(np.uint32),
                        "sim": sim_to_rep, "by_static": by_static})
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
    share = round(embedded / recs.height, 4)
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
        # "static": clustered on static similarity >= static_accept (the re-scoring budget was spent)
        "decided_by": found.select(pl.when(pl.col("by_static")).then(pl.lit("static"))
                                   .otherwise(pl.lit("model"))).to_series(),
    })
    return pl.DataFrame({
        "shard": found["shard"], RECORD_ID: found[RECORD_ID],
        ROW: found[ROW],  # ids may repeat in a shard; the engine moves it into detail.row
        "score": found["sim"].cast(pl.Float64).round(4),
        "detail": detail.select(pl.struct(pl.all()).struct.json_encode()).to_series(),
        "severity": pl.Series([None] * found.height, dtype=pl.Utf8),
    })
