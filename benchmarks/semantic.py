#!/usr/bin/env python3
"""dedup.semantic on CPU: speed of the static stage and recall of MiniLM's duplicate pairs.

usage: nice -n 10 python benchmarks/semantic.py [--n 4000] [--threshold 0.85]
                                               [--static-threshold T] [--static-neighbors K]
                                               [--minilm-cache DIR] [--all-cached] [--whole-corpus] [--fit]
                                               [--budgets 4096,share:0.5,none,policy] [--no-sure-first]
                                               [--no-compare-rescored] [--reference sample|all]
                                               [--scan sample|whole] [--scan-shards N] [--rescore-share F]
                                               [--data ../shared/data/debian/descriptions.parquet]

1. **Static stage speed.** Every Debian description (63,956) is embedded with the
   static model that ``dedup.semantic`` distils from all-MiniLM-L6-v2
   (:func:`integrity.analysis.static_embeddings.encode_static`, the check's own call,
   128 tokens). Printed: documents/s of wall time, documents per CPU-second of this
   process, the cores it may use, and the load average before and after -- the
   machine is shared, so the wall figure depends on what else runs; documents per
   CPU-second times the cores is what the same code does on idle cores.
2. **Recall.** A deterministic sample of ``--n`` descriptions is scanned as a corpus
   of its own: full MiniLM embeddings of the sample (the reference; cached in
   ``--minilm-cache``, ``benchmarks/out/minilm-debian``, not in git; ``--all-cached``:
   every cached description, a larger uniform sample) give every pair at cosine >=
   ``--threshold`` (the policy threshold, brute force); the check's static candidate generation
   (:func:`integrity.analysis.semantic_candidates.static_candidates`, the policy's
   ``static_neighbors``/``static_threshold``) gives the pairs MiniLM re-scores.
   Printed: the reference pairs, the candidates (and the share of the sample that
   MiniLM has to embed), pair recall after re-scoring (a reference pair is found
   when it is a candidate: re-scoring uses the same MiniLM vectors, so it keeps
   exactly the candidates at the threshold), and cluster recall (both records end
   up connected through re-scored pairs at the threshold).
3. ``--whole-corpus``: the candidate search over all 63,956 descriptions (what a
   scan of the whole corpus has MiniLM re-score: more neighbours pass the static
   threshold in a bigger corpus), the share of the sample's MiniLM pairs in the static
   neighbour lists at all (the ceiling of pair recall), and their recall among the
   candidates, without and with the default re-scoring budget (MiniLM calls printed).
   Under each candidate line, the check's own re-scoring plan for each budget of
   ``--budgets`` (``N``: texts per shard; ``share:F``: a share of the texts; ``none``: no
   budget; default the policy's, ``rescore_share`` 0.5; ``--no-sure-first``,
   ``--no-compare-rescored`` switch the plan's options off): MiniLM's cost, pair recall
   (a sample pair is found when the plan declares it: the same static cluster, or both
   records re-scored -- or following a re-scored sure partner -- and MiniLM's similarity
   at the threshold; MiniLM vectors of partners outside the sample are embedded on
   demand and cached), cluster recall (connected through declared pairs) and the
   precision of the declared pairs inside the sample.
4. ``--reference all``: float32 MiniLM vectors of every description (cached like the
   sample's; about 10 minutes on 2 idle cores the first time), every pair of the corpus at
   the threshold (brute force), and, under each plan and real scan, the recall of *all* of
   them -- pairs, and records in a pair that keep at least one -- besides the sample's; a
   real scan also prints the same through the GPU path's leader clusters (exact MiniLM
   vectors of every record), the ceiling that leader clustering sets.
5. ``--fit``: a per-corpus fit, measured on held-out pairs. Half of the sample fits the
   static model to MiniLM (a ridge map, and the token fit of
   :mod:`integrity.analysis.static_fit`) and calibrates ``static_threshold`` (0.95 recall)
   and ``static_accept`` (0.95 precision); the other half's pairs judge each, and with
   ``--whole-corpus`` the whole corpus's candidates and budget too.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import polars as pl

from integrity.analysis.embeddings import cpu_bf16_native
from integrity.analysis.static_embeddings import encode_static, static_model, user_cache_dir
from integrity.analysis.semantic_candidates import (candidate_pairs, knn, rescore_budget, rescore_plan, static_candidates,
                                                    static_unit)
from integrity.checks.dedup_semantic import SemanticDedup

#: all-MiniLM-L6-v2 at 128 tokens on CPU: Debian descriptions per CPU-second on 2 idle cores (README), for the
#: projected cost: 170 under bf16 autocast where the CPU has native bf16 (what the check uses there), else 58
#: (float32; 28 on the heavily loaded machine of the earlier figures)
MINILM_PER_CPU_S = 170 if cpu_bf16_native() else 58

DEFAULT_CACHE = Path(__file__).resolve().parent / "out" / "minilm-debian"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "debian" / "descriptions.parquet"


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def speed(model, texts: list[str], max_tokens: int, repeat: int = 3) -> None:
    """The static stage over ``texts``, ``repeat`` times after a warm-up: each run's documents/s of wall
    time, the median, and documents per CPU-second (a scan embeds shard after shard, so the runs after
    the first are what it sees once the tokenizer's caches and the allocator are warm)."""
    encode_static(model, texts[:2000], max_tokens)  # warm-up (tokenizer, caches)
    la0 = load()
    walls, cpus = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        encode_static(model, texts, max_tokens)
        cpus.append(time.process_time() - c0)
        walls.append(time.perf_counter() - t0)
    wall, cpu = float(np.median(walls)), float(np.median(cpus))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    runs = ", ".join(f"{len(texts) / w:,.0f}" for w in walls)
    print(f"static stage: {len(texts):,} documents, {repeat} runs: {runs} docs/s of wall time; median "
          f"{wall:.2f} s = {len(texts) / wall:,.0f} docs/s (nice {os.nice(0)}, {cores} cores, load {la0} -> {load()})")
    print(f"  {len(texts) / cpu:,.0f} docs per CPU-second of this process (median {cpu:.2f} CPU-s a run)")
    # what a scan does: one call per batch of the policy's batch_size rows
    batch = 8192
    t0 = time.perf_counter()
    for s in range(0, len(texts), batch):
        encode_static(model, texts[s:s + batch], max_tokens)
    wall = time.perf_counter() - t0
    print(f"  in batches of {batch:,} (a scan's batch_size): {len(texts) / wall:,.0f} docs/s of wall time")


def minilm(texts: list[str], idx: np.ndarray, cache: Path | None, max_seq_length: int) -> np.ndarray:
    """MiniLM vectors of ``texts[i]`` for every ``i`` in ``idx`` (the reference).

    Cached in ``cache`` (``benchmarks/out/minilm-debian`` by default, not in git) as ``.npz`` chunks of
    (``idx``, ``vec``), one per 500 documents, so an interrupted run resumes where it stopped: MiniLM
    embeds about 28 descriptions per CPU-second, an hour of a loaded machine for a few thousand."""
    have: dict[int, np.ndarray] = {}
    if cache is not None and cache.is_dir():
        for f in sorted(cache.glob("*.npz")):
            with np.load(f) as z:
                have.update(zip(z["idx"].tolist(), z["vec"]))
    todo = np.array([i for i in idx.tolist() if i not in have], dtype=np.int64)
    if len(todo):
        from integrity.analysis.embeddings import TextEmbedder

        emb = TextEmbedder(device="cpu", max_seq_length=max_seq_length, cpu_bf16=False)  # the float32 reference
        t0 = time.perf_counter()
        for s in range(0, len(todo), 500):
            part = todo[s:s + 500]
            v = emb.encode([texts[i][:2048] for i in part])
            have.update(zip(part.tolist(), v))
            if cache is not None:
                cache.mkdir(parents=True, exist_ok=True)
                np.savez(cache / f"chunk-{int(part[0]):05d}-{len(part)}.npz", idx=part, vec=v)
        print(f"MiniLM reference: {len(todo):,} documents embedded in {time.perf_counter() - t0:.0f} s")
    else:
        print(f"MiniLM reference vectors of {len(idx):,} documents read from {cache}")
    return np.stack([have[i] for i in idx.tolist()])


#: the MiniLM reference cache of this run (``--minilm-cache``)
CACHE: list[Path | None] = [None]


def _vectors(texts: list[str], o: dict):
    """MiniLM vectors of any positions of ``texts`` (cached like the reference)."""
    return lambda ids: minilm(texts, np.asarray(ids), CACHE[0], int(o["max_seq_length"]))


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    g = sp.coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    return connected_components(g, directed=False)[1]


def truth_pairs(ref: np.ndarray, thr: float, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``(a, b)``, ``a < b``, of rows of ``ref`` (MiniLM vectors) at cosine >= ``thr``: brute force, in
    row blocks (exact, no index)."""
    x = np.ascontiguousarray(ref / np.linalg.norm(ref, axis=1, keepdims=True), dtype=np.float32)
    out_a, out_b = [], []
    for s in range(0, len(x), block):
        sims = x[s:s + block] @ x[s:].T  # only the upper triangle: columns from the block's first row on
        r, c = np.nonzero(sims >= thr)
        c = c + s
        keep = c > r + s
        out_a.append((r + s)[keep])
        out_b.append(c[keep])
    return np.concatenate(out_a).astype(np.int64), np.concatenate(out_b).astype(np.int64)


#: every MiniLM pair of the whole corpus and the MiniLM vectors of every record (``--reference all``)
WHOLE: dict[str, np.ndarray] = {}


def whole_recall(found_same: np.ndarray, fam: np.ndarray | None = None, scored: np.ndarray | None = None) -> str:
    """Recall of every MiniLM pair of the corpus (``WHOLE``): pairs, and records in a pair that keep
    at least one of their pairs (a record flagged as someone's duplicate). ``found_same``: a label
    per record (pairs with equal labels are found); with ``fam``/``scored``, also pairs of two
    re-scored stand-ins at MiniLM similarity >= threshold (the plan's declared pairs)."""
    ta, tb, thr = WHOLE["a"], WHOLE["b"], float(WHOLE["thr"][0])
    hit = found_same[ta] == found_same[tb]
    if fam is not None:
        x = WHOLE["x"]
        fa, fb = fam[ta], fam[tb]
        both = scored[fa] & scored[fb] & ~hit
        hit[both] = np.einsum("ij,ij->i", x[fa[both]], x[fb[both]]) >= thr
    recs = np.unique(np.concatenate([ta, tb]))
    kept = np.unique(np.concatenate([ta[hit], tb[hit]]))
    return (f"pair recall {hit.mean():.3f} ({int(hit.sum()):,} of {len(ta):,}); records in a MiniLM pair that keep "
            f"one: {len(kept) / len(recs):.3f} ({len(kept):,} of {len(recs):,})")


def recall(model, texts: list[str], ref: np.ndarray, o: dict) -> None:
    thr = float(o["threshold"])
    x = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    sims = x @ x.T
    iu = np.triu_indices(len(x), 1)
    truth = sims[iu] >= thr
    ta, tb = iu[0][truth], iu[1][truth]
    sv = encode_static(model, texts, int(o["max_seq_length"]))
    t0 = time.perf_counter()
    a, b, _ = static_candidates(sv, int(o["static_neighbors"]), float(o["static_threshold"]),
                                int(o["exact_max_records"]), int(o["nprobe"]))
    dt = time.perf_counter() - t0
    rescored = np.unique(np.concatenate([a, b])) if len(a) else np.zeros(0, dtype=np.int64)
    keep = sims[a, b] >= thr
    fa, fb = a[keep], b[keep]
    found = set(zip(fa.tolist(), fb.tolist()))
    hit = sum((p, q) in found for p, q in zip(ta.tolist(), tb.tolist()))
    comp = components(len(x), fa, fb)
    linked = int((comp[ta] == comp[tb]).sum())
    n = len(texts)
    print(f"recall on {n:,} sampled descriptions (static_neighbors {o['static_neighbors']}, "
          f"static_threshold {o['static_threshold']}, threshold {thr}):")
    print(f"  MiniLM pairs at >= {thr}: {len(ta):,} (records in one: {len(np.unique(np.concatenate([ta, tb]))):,})")
    print(f"  static candidates: {len(a):,} pairs, {len(rescored):,} records re-scored by MiniLM "
          f"({len(rescored) / n:.1%} of the sample), candidate search {dt:.2f} s")
    if len(ta):
        print(f"  pair recall after re-scoring: {hit / len(ta):.3f} ({hit:,} of {len(ta):,})")
        print(f"  cluster recall (connected by re-scored pairs): {linked / len(ta):.3f}")
    budgeted(sv, a, b, ta, tb, x, np.arange(n), o, shards=1, vec_of=lambda ids: ref[ids])


def full_corpus(model, texts: list[str], idx: np.ndarray, ref: np.ndarray, o: dict) -> None:
    """Candidates over the whole corpus (what a scan of it re-scores), recall on the sample's pairs.

    The sample is a uniform random sample of the corpus, so its MiniLM pairs are a uniform sample
    of the corpus's pairs (1 in ``(N / n)^2``): their recall estimates the whole corpus's without
    MiniLM vectors of every record (about 40 CPU-minutes for the 63,956 descriptions)."""
    thr = float(o["threshold"])
    sv = encode_static(model, [t[:2048] for t in texts], int(o["max_seq_length"]))
    t0 = time.perf_counter()
    xs = static_unit(sv)
    sims, nbrs = knn(xs, min(int(o["static_neighbors"]) + 1, len(xs)), int(o["exact_max_records"]), int(o["nprobe"]))
    la, lb, _ = candidate_pairs(sims, nbrs, -np.inf)  # every neighbour-list pair, at any similarity
    ls = np.einsum("ij,ij->i", xs[la], xs[lb])
    keep = ls >= float(o["static_threshold"])
    a, b = la[keep], lb[keep]
    dt = time.perf_counter() - t0
    cand = np.unique(np.concatenate([a, b]))
    x = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    iu = np.triu_indices(len(x), 1)
    truth = (x @ x.T)[iu] >= thr
    ta, tb = idx[iu[0][truth]], idx[iu[1][truth]]
    n = len(texts)
    listed = np.isin(ta * n + tb, la * n + lb)
    hit = np.isin(ta * n + tb, a * n + b)
    print(f"whole corpus ({n:,} descriptions) as one scan: {len(a):,} candidate pairs, "
          f"{len(cand):,} records re-scored by MiniLM without a budget ({len(cand) / n:.1%}), candidate search {dt:.0f} s")
    print(f"  the sample's {len(ta):,} MiniLM pairs: {listed.mean():.3f} are in the static neighbour lists at all "
          f"(static_neighbors {o['static_neighbors']}: the ceiling of pair recall; records with more duplicates "
          f"than that in the corpus cannot list them all)")
    print(f"  pair recall after re-scoring every candidate: {hit.mean():.3f} ({int(hit.sum()):,} of {len(ta):,}) "
          f"along static pairs only")
    is_cand = np.zeros(n, dtype=bool)
    is_cand[cand] = True
    print(f"  the sample's MiniLM pairs with both records candidates (compared when compare_rescored: the full "
          f"model's own neighbours among the re-scored): {(is_cand[ta] & is_cand[tb]).mean():.3f}")
    budgeted(sv, a, b, ta, tb, x, idx, o, shards=1, vec_of=_vectors(texts, o))


def calibrate(s: np.ndarray, t: np.ndarray, recall: float = 0.95, precision: float = 0.95) -> tuple[float, float]:
    """(candidate threshold, accept level) on labelled pairs: static similarity ``s``, ``t`` whether
    MiniLM calls the pair a duplicate. The threshold keeps ``recall`` of the MiniLM pairs; the
    accept level is the lowest static similarity above which ``precision`` of the pairs are MiniLM pairs."""
    order = np.argsort(-s, kind="stable")
    tp = np.cumsum(t[order])
    prec = tp / np.arange(1, len(order) + 1)
    low = float(s[order][min(np.searchsorted(tp / max(tp[-1], 1), recall), len(order) - 1)])
    ok = np.flatnonzero(prec >= precision)
    accept = float(s[order][ok.max()]) if len(ok) else 1.01
    return low, accept


def fit_calibration(model, texts: list[str], idx: np.ndarray, ref: np.ndarray, o: dict, whole: bool) -> None:
    """Per-corpus fit and calibration, measured: half of the sample (MiniLM vectors known) fits a
    ridge map of the static vectors onto MiniLM's (the linear part of a tokenlearn-style fit: a map
    of mean-pooled token vectors is the mean of mapped token vectors), fits the token vectors
    themselves (:func:`integrity.analysis.static_fit.fit_static_model`), and picks the candidate
    threshold (0.95 recall of its MiniLM pairs) and the accept level (0.95 precision); the other half
    judges them, and with ``whole`` the whole corpus's candidates and default budget do too."""
    thr = float(o["threshold"])
    x = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    sv = encode_static(model, [t[:2048] for t in texts], int(o["max_seq_length"]))
    xs = static_unit(sv)
    perm = np.random.default_rng(5).permutation(len(idx))
    tr, ev = np.sort(perm[: len(idx) // 2]), np.sort(perm[len(idx) // 2:])
    a_ = xs[idx[tr]]
    lam = 1e-2 * len(tr) / 1000
    w = np.linalg.solve(a_.T @ a_ + lam * np.eye(a_.shape[1]), a_.T @ x[tr])
    fitted = static_unit(xs @ w)
    import tempfile

    from integrity.analysis.static_embeddings import load_static_model
    from integrity.analysis.static_fit import fit_static_model

    c0 = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:  # the token fit: what a user saves for static_model: DIR
        path = fit_static_model(Path(tmp) / "fitted", [texts[i][:2048] for i in idx[tr]], model=model,
                                targets=ref[tr], holdout=0.0)  # every fit text; calibrated below
        tokfit = load_static_model(path)
    fit_cpu = time.process_time() - c0
    tokens = static_unit(encode_static(tokfit, [t[:2048] for t in texts], int(o["max_seq_length"])))

    def pairs(z: np.ndarray, part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        iu = np.triu_indices(len(part), 1)
        zz = z[idx[part]]
        return (zz @ zz.T)[iu], (x[part] @ x[part].T)[iu] >= thr

    print(f"per-corpus fit and calibration: {len(tr):,} sampled descriptions fit, {len(ev):,} others judge "
          f"(token fit: {fit_cpu:.0f} CPU-s, plus MiniLM for the {len(tr):,} texts: "
          f"{len(tr) / MINILM_PER_CPU_S:.0f} CPU-s projected)")
    for name, z in (("distilled", xs), ("linear map", fitted), ("token fit", tokens)):
        low, acc = calibrate(*pairs(z, tr))
        s, t = pairs(z, ev)
        got = s >= low
        sure = s >= acc
        print(f"  {name}: calibrated static_threshold {low:.3f}, static_accept {acc:.3f}; on the other half: "
              f"recall {t[got].sum() / max(t.sum(), 1):.3f} with {int(got.sum()):,} candidate pairs "
              f"({int(t.sum()):,} MiniLM pairs); accepted pairs {int(sure.sum()):,}, precision "
              f"{t[sure].mean() if sure.any() else float('nan'):.3f}, recall {t[sure].sum() / max(t.sum(), 1):.3f}")
        if whole:
            oo = dict(o, static_threshold=round(low, 3), static_accept=round(acc, 3))
            t0 = time.perf_counter()
            sims, nbrs = knn(z, min(int(o["static_neighbors"]) + 1, len(z)), int(o["exact_max_records"]),
                             int(o["nprobe"]))
            ca, cb, _ = candidate_pairs(sims, nbrs, low)
            cand = np.unique(np.concatenate([ca, cb]))
            iu = np.triu_indices(len(ev), 1)
            truth = (x[ev] @ x[ev].T)[iu] >= thr
            ta, tb = idx[ev][iu[0][truth]], idx[ev][iu[1][truth]]
            print(f"    whole corpus: {len(ca):,} candidate pairs, {len(cand):,} records ({len(cand) / len(z):.1%}), "
                  f"search {time.perf_counter() - t0:.0f} s")
            budgeted(z, ca, cb, ta, tb, x[ev], idx[ev], oo, shards=1, unit_done=True, vec_of=_vectors(texts, o))


def budgeted(sv: np.ndarray, a: np.ndarray, b: np.ndarray, ta: np.ndarray, tb: np.ndarray, x: np.ndarray,
             idx: np.ndarray, o: dict, shards: int, unit_done: bool = False, vec_of=None) -> None:
    """The re-scoring budget (the check's own plan, :func:`integrity.checks._semantic_clusters.cluster_static`):
    what MiniLM re-scores, what static similarity decides, and the recall / precision of the sample's
    pairs under that plan (``x``: the sample's MiniLM vectors, ``idx``: the sample's positions in the
    scanned texts; ``vec_of``: MiniLM vectors of other positions, for re-scored partners outside
    the sample). Each budget of ``--budgets`` is run; ``sure_first`` / ``compare_rescored`` as in the policy."""
    for budget in BUDGETS or [{}]:  # each: options that replace the policy's budget ({}: the policy's own)
        _budgeted(sv, a, b, ta, tb, x, idx, dict(o, **budget), shards, unit_done, vec_of)


def _budgeted(sv, a, b, ta, tb, x, idx, o, shards, unit_done, vec_of) -> None:
    from dataclasses import replace

    from integrity.analysis.semantic_candidates import static_clusters
    from integrity.checks._semantic_clusters import _follow_rescored

    thr = float(o["threshold"])
    n_all = len(sv)
    xc = sv if unit_done else static_unit(sv)
    ps = np.einsum("ij,ij->i", xc[a], xc[b])
    budget = rescore_budget(o, shards, n_all)
    rank = np.arange(n_all)
    plan = rescore_plan(n_all, a, b, ps, budget, o["static_accept"], sure_first=o.get("sure_first", True))
    cov = plan.coverage(budget, o["static_accept"])
    scored = np.zeros(n_all, dtype=bool)
    scored[plan.rescore] = True
    # the check's static decisions: static clusters of the sure pairs left out, and contents that
    # follow a re-scored sure partner (re-scored contents stand for themselves here: their own
    # MiniLM clusters are what the sample's MiniLM vectors decide below)
    rep = np.arange(n_all)
    inner = ~scored[plan.accept_a] & ~scored[plan.accept_b]
    if inner.any():
        rep = static_clusters(xc, replace(plan, accept_a=plan.accept_a[inner], accept_b=plan.accept_b[inner]),
                              rank, float(o["static_accept"]))[0]
    _follow_rescored(rep, np.ones(n_all, dtype=np.float32), plan, scored, xc)
    fam = np.where(scored, np.arange(n_all), rep)  # each record's stand-in
    pos = np.full(n_all, -1, dtype=np.int64)
    pos[idx] = np.arange(len(idx))
    units = np.unique(fam[idx])
    have = pos[units] >= 0
    uvec = np.zeros((n_all, x.shape[1]), dtype=np.float32)
    uvec[units[have]] = x[pos[units[have]]]
    if (~have).any():
        if vec_of is None:
            raise SystemExit("re-scored partners outside the sample need MiniLM vectors: no vec_of")
        v = vec_of(units[~have])
        uvec[units[~have]] = v / np.linalg.norm(v, axis=1, keepdims=True)
    # every pair of sample records: what the plan declares (the same stand-in: one static cluster,
    # or both stand-ins re-scored and their MiniLM similarity at the threshold); with
    # compare_rescored the full model's kNN among the re-scored compares them (its k_neighbors
    # ceiling is not simulated), without it only static candidate pairs between them are compared
    iu = np.triu_indices(len(idx), 1)
    fi, fj = fam[idx][iu[0]], fam[idx][iu[1]]
    same = fi == fj
    both = scored[fi] & scored[fj] & ~same
    if not o.get("compare_rescored", True):
        key = set(zip(np.minimum(fam[a], fam[b]).tolist(), np.maximum(fam[a], fam[b]).tolist()))
        both &= np.array([(min(p, q), max(p, q)) in key for p, q in zip(fi.tolist(), fj.tolist())], dtype=bool)
    u = uvec[fam[idx]]  # each sample record's stand-in (itself, or the re-scored sure partner it follows)
    model = both & ((u @ u.T)[iu] >= thr)
    declared = same | model
    truth = (x @ x.T)[iu] >= thr
    n_t = max(int(truth.sum()), 1)
    comp = components(len(idx), iu[0][declared], iu[1][declared])
    linked = (comp[iu[0]] == comp[iu[1]])[truth].mean() if truth.any() else float("nan")
    members = int((fam != np.arange(n_all)).sum())
    print(f"  re-scoring budget (rescore_share {o.get('rescore_share')}, rescore_per_shard {o['rescore_per_shard']} "
          f"x {shards} shard: {budget if budget is not None else 'none'}; static_accept "
          f"{o['static_accept']}, sure_first {o.get('sure_first', True)}, compare_rescored "
          f"{o.get('compare_rescored', True)}): {cov['how']}")
    print(f"    MiniLM embeddings {cov['rescored']:,} ({cov['rescored'] / n_all:.1%} of the records; projected "
          f"{cov['rescored'] / MINILM_PER_CPU_S:,.0f} CPU-s at {MINILM_PER_CPU_S} descriptions per CPU-second) "
          f"instead of {plan.candidates:,} ({plan.candidates / MINILM_PER_CPU_S:,.0f} CPU-s); {members:,} records "
          f"decided statically (a static cluster or a re-scored sure partner)")
    print(f"    pair recall of the sample's MiniLM pairs: {(truth & declared).sum() / n_t:.3f} "
          f"({int((truth & same).sum()):,} statically, {int((truth & model).sum()):,} by MiniLM, of "
          f"{int(truth.sum()):,}); cluster recall (connected by declared pairs) {linked:.3f}")
    via_rep = model & ((fi != idx[iu[0]]) | (fj != idx[iu[1]]))  # a re-scored partner stood in
    rate = lambda m: f"{truth[m].mean():.3f} of {int(m.sum()):,}" if m.any() else "none"  # noqa: E731
    print(f"    precision of the implied pairs inside the sample: {rate(declared)} (static decisions {rate(same)}; "
          f"MiniLM through a re-scored sure partner {rate(via_rep)})")
    if WHOLE and n_all == len(WHOLE["x"]):
        print(f"    every MiniLM pair of the corpus: {whole_recall(fam, fam, scored)}")


def real_scan(texts: list[str], idx: np.ndarray, ref: np.ndarray, o: dict, label: str, shards: int = 1) -> None:
    """The check itself, in a real scan (``integrity.api.scan``, CPU, MiniLM re-scoring) of
    ``texts`` written as ``shards`` Parquet shards (contiguous slices): the clusters it reports, judged on the sample's MiniLM
    pairs (``idx``: the sample's positions in ``texts``, ``ref``: their MiniLM vectors): pair recall
    through reported clusters (both records in one reported cluster), the precision of the pairs
    reported clusters imply inside the sample, and the scan's CPU-seconds."""
    import json
    import resource
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    import integrity.api as api

    thr = float(o["threshold"])
    opts = {k: o[k] for k in ("rescore_per_shard", "rescore_share", "static_accept", "sure_first", "compare_rescored")}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus"
        path.mkdir()
        bounds = np.linspace(0, len(texts), shards + 1).astype(int)
        for i in range(shards):
            lo, hi = bounds[i], bounds[i + 1]
            pq.write_table(pa.table({"id": [f"d{j}" for j in range(lo, hi)], "text": texts[lo:hi]}),
                           path / f"part-{i:03d}.parquet")
        policy = {"checks": {"dedup.semantic": {"enabled": True, "options": {
            "device": "cpu", "report_exact_copies": True, **opts}}}}
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        run = api.scan(str(path), checks=["dedup.semantic"], policy=policy, out=Path(tmp) / "run",
                       state_dir=Path(tmp) / "state")
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        found = pl.read_parquet(run.run_dir / "findings.parquet").filter(pl.col("check") == "dedup.semantic")
        cov = json.loads((run.run_dir / "summary.json").read_text())["counts"]["coverage"].get("dedup.semantic", {})
    lab = np.arange(len(texts))  # reported cluster of each record (its representative), itself if none
    for rid, d in zip(found["record_id"].to_list(), found["detail"].to_list()):
        lab[int(rid[1:])] = int(json.loads(d)["representative"][1:])
    x = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    iu = np.triu_indices(len(idx), 1)
    truth = (x @ x.T)[iu] >= thr
    same = lab[idx][iu[0]] == lab[idx][iu[1]]
    print(f"real scan of {label} ({len(texts):,} descriptions, {shards} shard(s); options {opts}): "
          f"{cpu:,.0f} CPU-s of this process ({time.perf_counter() - t0:,.0f} s wall), "
          f"{found.height:,} records reported in {len(np.unique(lab[lab != np.arange(len(lab))])):,} clusters")
    print(f"  coverage: {cov.get('how', cov)}")
    print(f"  the sample's {int(truth.sum()):,} MiniLM pairs: pair recall through reported clusters "
          f"{same[truth].mean() if truth.any() else float('nan'):.3f}; pairs reported clusters imply inside the "
          f"sample {int(same.sum()):,}, precision {truth[same].mean() if same.any() else float('nan'):.3f}")
    if WHOLE and len(texts) == len(WHOLE["x"]):
        print(f"  every MiniLM pair of the corpus, through reported clusters: {whole_recall(lab)}")
        gpu = gpu_clusters(o)
        print(f"  the same through the leader clusters of exact MiniLM vectors of every record (the GPU path's "
              f"ceiling): {whole_recall(gpu)}")


def gpu_clusters(o: dict) -> np.ndarray:
    """The GPU path's clusters: leader clusters over the exact MiniLM vectors of every record (``WHOLE``), in
    record order, as :func:`integrity.checks._semantic_clusters.cluster_full` builds them."""
    from integrity.analysis.semantic_candidates import leader_clusters

    x = WHOLE["x"]
    sims, nbrs = knn(x, min(int(o["k_neighbors"]) + 1, len(x)), int(o["exact_max_records"]), int(o["nprobe"]))
    rep, _ = leader_clusters(x, sims, nbrs, np.arange(len(x)), float(o["threshold"]))
    return rep


#: the budgets of ``--budgets``, each as the options it sets
BUDGETS: list[dict] = []


def parse_budget(v: str) -> dict:
    """``4096``: that many texts per shard (no share cap); ``share:0.5``: that share of the texts (no per-shard
    cap); ``none``: no budget; ``policy``: the policy's own."""
    v = v.strip().lower()
    if v == "policy":
        return {}
    if v == "none":
        return {"rescore_per_shard": None, "rescore_share": None}
    if v.startswith("share:"):
        return {"rescore_per_shard": None, "rescore_share": float(v.split(":", 1)[1])}
    return {"rescore_per_shard": int(v), "rescore_share": None}


def main() -> int:
    o = dict(SemanticDedup.default_options)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4000, help="descriptions in the recall sample (default 4000)")
    ap.add_argument("--threshold", type=float, default=o["threshold"])
    ap.add_argument("--static-threshold", type=float, default=o["static_threshold"])
    ap.add_argument("--static-neighbors", type=int, default=o["static_neighbors"])
    ap.add_argument("--minilm-cache", default=str(DEFAULT_CACHE),
                    help="directory of cached MiniLM reference vectors (default benchmarks/out/minilm-debian)")
    ap.add_argument("--all-cached", action="store_true",
                    help="the sample is every description with a cached MiniLM vector (at least --n): more pairs")
    ap.add_argument("--fit", action="store_true",
                    help="measure a per-corpus ridge fit and calibrated thresholds (half the sample fits, half judges)")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--whole-corpus", action="store_true",
                    help="also search candidates over the whole corpus (what a scan of it re-scores)")
    ap.add_argument("--rescore-per-shard", type=int, default=o["rescore_per_shard"],
                    help="re-scoring budget per shard (the sample and the whole corpus are one shard each)")
    ap.add_argument("--static-accept", type=float, default=o["static_accept"])
    ap.add_argument("--budgets", default=None,
                    help="comma-separated re-scoring budgets to run the plan with: N texts per shard, share:F of "
                         "the texts, none (no budget) or policy (the policy's own); default: the policy's")
    ap.add_argument("--no-sure-first", action="store_true",
                    help="sure_first: false (sure pairs decided statically, the budget goes to the others)")
    ap.add_argument("--no-compare-rescored", action="store_true",
                    help="compare_rescored: false (re-scored texts compared along static pairs only)")
    ap.add_argument("--scan", choices=("sample", "whole"), default=None,
                    help="also run the check itself in a real scan of the sample or of the whole corpus (MiniLM "
                         "re-scores for real: minutes to an hour of CPU) and judge its reported clusters")
    ap.add_argument("--scan-shards", type=int, default=1,
                    help="the real scan's corpus as this many Parquet shards (the budget is per shard; default 1)")
    ap.add_argument("--rescore-share", type=float, default=o.get("rescore_share"),
                    help="re-scoring budget as a share of the scanned contents (default: the policy's)")
    ap.add_argument("--reference", choices=("sample", "all"), default="sample",
                    help="all: MiniLM vectors of every description (cached; ~10 min on 2 idle cores) and recall "
                         "over every MiniLM pair of the corpus, besides the sample's")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    a = ap.parse_args()
    if not Path(a.data).exists():
        print(f"no data at {a.data} (see ../shared/data/README.md)")
        return 2
    o.update(threshold=a.threshold, static_threshold=a.static_threshold, static_neighbors=a.static_neighbors,
             rescore_per_shard=a.rescore_per_shard, rescore_share=a.rescore_share, static_accept=a.static_accept,
             sure_first=not a.no_sure_first, compare_rescored=not a.no_compare_rescored)
    if a.budgets:
        BUDGETS[:] = [parse_budget(v) for v in a.budgets.split(",")]
    t0 = time.perf_counter()
    model = static_model(None, user_cache_dir())
    print(f"static model ready in {time.perf_counter() - t0:.1f} s (distilled once, then cached)")
    df = pl.read_parquet(a.data, columns=["text"])
    texts = df["text"].to_list()
    if not a.skip_speed:
        speed(model, texts, int(o["max_seq_length"]))
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(texts), min(a.n, len(texts)), replace=False))
    if a.all_cached and Path(a.minilm_cache).is_dir():  # uniform: the seed sample plus uniform extensions
        idx = np.union1d(idx, np.concatenate([np.load(f)["idx"] for f in Path(a.minilm_cache).glob("*.npz")]))
    sample = [texts[i][:2048] for i in idx]
    CACHE[0] = Path(a.minilm_cache) if a.minilm_cache else None
    ref = minilm(texts, idx, CACHE[0], int(o["max_seq_length"]))
    if a.reference == "all":
        t0 = time.perf_counter()
        allv = minilm(texts, np.arange(len(texts)), CACHE[0], int(o["max_seq_length"]))
        WHOLE["x"] = np.ascontiguousarray(allv / np.linalg.norm(allv, axis=1, keepdims=True), dtype=np.float32)
        WHOLE["a"], WHOLE["b"] = truth_pairs(WHOLE["x"], float(o["threshold"]))
        WHOLE["thr"] = np.array([float(o["threshold"])])
        recs = len(np.unique(np.concatenate([WHOLE["a"], WHOLE["b"]])))
        print(f"every description's MiniLM vector: {len(WHOLE['a']):,} MiniLM pairs at >= {o['threshold']} in the "
              f"corpus, {recs:,} records in one ({recs / len(texts):.1%}); {time.perf_counter() - t0:.0f} s")
    recall(model, sample, ref, o)
    if a.whole_corpus:
        full_corpus(model, texts, idx, ref, o)
    if a.fit:
        fit_calibration(model, texts, idx, ref, o, a.whole_corpus)
    if a.scan == "sample":
        real_scan(sample, np.arange(len(idx)), ref, o, "the sample")
    elif a.scan == "whole":
        real_scan([t[:2048] for t in texts], idx, ref, o, "the whole corpus", shards=a.scan_shards)
    return 0


if __name__ == "__main__":
    sys.exit(main())
