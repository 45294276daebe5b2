"""Candidate pairs and the re-scoring plan of ``dedup.semantic``: nearest neighbours,
leader clusters, and what static vectors decide when full-model re-scoring has a budget.

On CPU every record has a *static* vector (:mod:`integrity.analysis.static_embeddings`)
and only candidate pairs are re-scored with the full model:

* :func:`static_candidates` -- each vector's nearest neighbours (:func:`knn`: faiss, exact
  up to ``exact_max`` vectors, IVF above) at static cosine ``threshold`` or more, after the
  corpus mean is taken out (:func:`static_unit`);
* :func:`rescore_plan` -- within the budget (:func:`rescore_budget`) every candidate is
  re-scored; past it, pairs at ``accept`` or more are duplicates on static similarity alone
  and the budget goes to the rest, most similar first (:class:`RescorePlan` says which);
* :func:`leader_clusters` / :func:`static_clusters` -- greedy clusters without chaining:
  every member is within the threshold of its cluster's representative.

NumPy and faiss only: the check (:mod:`integrity.checks.dedup_semantic`) reads shards,
embeds and writes findings.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def static_unit(xs: np.ndarray) -> np.ndarray:
    """Static vectors as compared: unit length, corpus mean taken out, unit length again."""
    x = unit(xs)
    return unit(x - x.mean(axis=0))


def rescore_budget(options: Mapping[str, Any], shards: int, contents: int | None = None) -> int | None:
    """Candidate texts the full model may re-score in one scan: ``rescore_share`` of the scan's
    ``contents`` (distinct texts), ``rescore_per_shard`` times the scan's shards and
    ``rescore_max_records``, whichever is least (None: no budget)."""
    caps = []
    if options.get("rescore_share") is not None and contents is not None:
        caps.append(int(np.ceil(float(options["rescore_share"]) * int(contents))))
    if options.get("rescore_per_shard") is not None:
        caps.append(int(options["rescore_per_shard"]) * max(int(shards), 1))
    if options.get("rescore_max_records") is not None:
        caps.append(int(options["rescore_max_records"]))
    return min(caps) if caps else None


@dataclass
class RescorePlan:
    """Which candidate contents the full model re-scores and which pairs static vectors decide."""

    candidates: int  #: contents in a candidate pair
    rescore: np.ndarray  #: contents re-scored by the full model (sorted)
    static_only: np.ndarray  #: contents in a pair accepted by static similarity, not re-scored (sorted)
    accept_a: np.ndarray  #: the accepted pairs (content indices)
    accept_b: np.ndarray
    binds: bool  #: whether the budget left candidates out

    def coverage(self, budget: int | None, accept: float | None) -> dict[str, Any]:
        """The corpus pass's share of ``counts.coverage``: how the candidates were decided."""
        rescored = len(self.rescore)
        static = len(self.static_only)
        how = f"static model for every record; full model re-scored {rescored:,} of {self.candidates:,} candidates"
        if self.binds:
            how += (f" (budget {budget:,}, most similar first); {static:,} decided by static similarity >= "
                    f"{accept}; {self.candidates - rescored - static:,} not compared")
        return {"candidates": self.candidates, "rescored": rescored, "static_only": static,
                "not_compared": self.candidates - rescored - static, "rescore_budget": budget,
                "rescored_share": round(rescored / self.candidates, 4) if self.candidates else 1.0, "how": how}


def rescore_plan(n: int, a: np.ndarray, b: np.ndarray, pair_sim: np.ndarray, budget: int | None,
                 accept: float | None, sure_first: bool = False) -> RescorePlan:
    """Spend at most ``budget`` full-model embeddings on the candidate pairs ``(a, b)`` (content
    indices below ``n``, static similarity ``pair_sim``).

    Within the budget every candidate is re-scored. Past it, pairs at ``accept`` or more are taken
    as duplicates on their static similarity (their contents are not re-scored), and the budget
    goes to the other candidate pairs, most similar first (both contents of a pair), until it is
    spent: the uncertain band is where re-scoring changes the answer.

    ``sure_first``: the budget goes to all candidate pairs most similar first, the sure ones
    included (the full model confirms them), and only the sure pairs it does not reach are
    decided on static similarity (``accept_a``/``accept_b``: those with a content left out;
    ``static_only``: those contents). When the re-scored contents are also compared along the
    full model's own neighbours, re-scoring the densest families first finds more of the full
    model's pairs than deciding them statically (``benchmarks/semantic.py``)."""
    empty = np.zeros(0, dtype=np.int64)
    cand = np.unique(np.concatenate([a, b])) if len(a) else empty
    if budget is None or len(cand) <= budget:
        return RescorePlan(len(cand), cand, empty, empty, empty, False)
    sure = pair_sim >= accept if accept is not None else np.zeros(len(a), dtype=bool)
    if sure_first:
        order = np.argsort(-pair_sim, kind="stable")
        rescore = _first_contents(a[order], b[order], budget)
        scored = np.zeros(n, dtype=bool)
        scored[rescore] = True
        left = sure & ~(scored[a] & scored[b])
        ends = np.concatenate([a[left], b[left]])
        return RescorePlan(len(cand), rescore, np.unique(ends[~scored[ends]]), a[left], b[left], True)
    static_only = np.unique(np.concatenate([a[sure], b[sure]])) if sure.any() else empty
    out = np.zeros(n, dtype=bool)
    out[static_only] = True
    open_ = np.flatnonzero(~out[a] & ~out[b])  # pairs the full model can still decide
    order = open_[np.argsort(-pair_sim[open_], kind="stable")]
    return RescorePlan(len(cand), _first_contents(a[order], b[order], budget), static_only, a[sure], b[sure], True)


def _first_contents(a: np.ndarray, b: np.ndarray, budget: int) -> np.ndarray:
    """The first ``budget`` distinct contents of the pairs ``(a, b)`` in their order (both ends of a
    pair together, so the re-scored contents make whole pairs), sorted."""
    seq = np.stack([a, b], axis=1).ravel()
    uniq, first = np.unique(seq, return_index=True)
    return np.sort(uniq[np.argsort(first, kind="stable")[:budget]])


def calibrate_thresholds(static_sim: np.ndarray, is_pair: np.ndarray, recall: float = 0.95,
                         precision: float = 0.95) -> tuple[float, float | None]:
    """(candidate threshold, accept level) from labelled pairs of a sample: ``static_sim`` the pairs'
    static similarity, ``is_pair`` whether the full model calls them duplicates (at the policy
    threshold). The candidate threshold is the highest static similarity that keeps ``recall``
    of the full model's pairs; the accept level the lowest at which the pairs at or above it are
    full-model pairs with ``precision`` (None when no level is that precise)."""
    s = np.asarray(static_sim, dtype=np.float64)
    t = np.asarray(is_pair, dtype=bool)
    if not t.any():
        raise ValueError("no full-model pair among the labelled pairs: nothing to calibrate on")
    order = np.argsort(-s, kind="stable")
    tp = np.cumsum(t[order])
    low = float(s[order][min(int(np.searchsorted(tp / tp[-1], recall)), len(order) - 1)])
    ok = np.flatnonzero(tp / np.arange(1, len(order) + 1) >= precision)
    return low, (float(s[order][ok.max()]) if len(ok) else None)


def pair_similarity(x: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Inner products ``x[a[i]] . x[b[i]]``, float32, gathered ``chunk`` pairs at a time: gathering
    every pair's two rows at once costs ``2 * pairs * dim * 4`` bytes (2.4 GB for 800,000 pairs of
    384-d vectors)."""
    out = np.empty(len(a), dtype=np.float32)
    for s in range(0, len(a), chunk):
        out[s:s + chunk] = np.einsum("ij,ij->i", x[a[s:s + chunk]], x[b[s:s + chunk]])
    return out


def pair_lists(x: np.ndarray, pa_: np.ndarray, pb_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour lists (similarities, indices; -1 / -inf padded) of the rows of ``x`` from the
    undirected pairs ``(pa_, pb_)``, for :func:`leader_clusters`."""
    m = len(x)
    pair_sim = pair_similarity(x, pa_, pb_)  # once per undirected pair, placed in both lists
    rows = np.concatenate([pa_, pb_])
    nb = np.concatenate([pb_, pa_])
    order = np.lexsort((nb, rows))
    rows, nb, both_sim = rows[order], nb[order], np.concatenate([pair_sim, pair_sim])[order]
    width = int(np.bincount(rows, minlength=m).max())
    start = np.searchsorted(rows, np.arange(m))
    slot = np.arange(len(rows)) - start[rows]
    nbrs = np.full((m, width), -1, dtype=np.int64)
    nbrs[rows, slot] = nb
    sims = np.full((m, width), -np.inf, dtype=np.float32)
    sims[rows, slot] = both_sim
    return sims, nbrs


def static_clusters(xc: np.ndarray, plan: RescorePlan, rank: np.ndarray,
                    accept: float) -> tuple[np.ndarray, np.ndarray]:
    """Leader clusters (representative, similarity) of the pairs ``plan`` accepted on static
    similarity, over ``xc`` (static vectors of every content, as compared)."""
    n = len(xc)
    rep, sim = np.arange(n), np.ones(n, dtype=np.float32)
    members = plan.static_only
    pos = np.full(n, -1, dtype=np.int64)
    pos[members] = np.arange(len(members))
    x = xc[members]
    sims, nbrs = pair_lists(x, pos[plan.accept_a], pos[plan.accept_b])
    c_rep, c_sim = leader_clusters(x, sims, nbrs, rank[members], accept)
    rep[members] = members[c_rep]
    sim[members] = c_sim
    return rep, sim


def static_candidates(xs: np.ndarray, neighbors: int, threshold: float, exact_max: int,
                      nprobe: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs ``(a, b)`` (``a < b``) of the rows of ``xs`` (static vectors): each row's
    ``neighbors`` nearest rows at cosine ``threshold`` or more, after the corpus mean is taken
    out (mean-of-token vectors share a common direction, the frequent tokens'; without it
    unrelated texts look alike). Also each row's best similarity to another row."""
    x = static_unit(xs)
    sims, nbrs = knn(x, min(neighbors + 1, len(x)), exact_max, nprobe)
    return candidate_pairs(sims, nbrs, threshold)


def candidate_pairs(sims: np.ndarray, nbrs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected pairs ``(a, b)`` with ``a < b`` among the kNN lists at ``threshold`` or more, and each
    row's best similarity to another row (-inf when none)."""
    n = sims.shape[0]
    rows = np.repeat(np.arange(n), nbrs.shape[1])
    cols = nbrs.ravel()
    s = sims.ravel()
    other = (cols >= 0) & (cols != rows)
    best = np.full(n, -np.inf, dtype=np.float32)
    np.maximum.at(best, rows[other], s[other])
    ok = other & (s >= threshold)
    a, b = np.minimum(rows[ok], cols[ok]), np.maximum(rows[ok], cols[ok])
    pairs = np.unique(np.stack([a, b], axis=1), axis=0) if ok.any() else np.zeros((0, 2), dtype=np.int64)
    return pairs[:, 0], pairs[:, 1], best


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


__all__ = ["unit", "static_unit", "calibrate_thresholds", "rescore_budget", "RescorePlan", "rescore_plan", "pair_lists", "pair_similarity", "static_clusters",
           "static_candidates", "candidate_pairs", "knn", "leader_clusters"]
