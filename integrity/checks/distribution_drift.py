"""``distribution.drift``: each shard against a trusted reference profile.

Per shard pass: the cheap text features of every record (:mod:`integrity.analysis.features`),
the label, the fairness lexicon flags (:mod:`integrity.analysis.fairness`), and a
deterministic bottom-k sample of record texts (``embed_sample`` of them, by a
seeded hash of the record id) kept for embedding. Nothing is embedded per
shard, so a scan without ``--reference`` costs no model time.

Corpus pass, for every shard against the profile given with ``--reference``
(see :mod:`integrity.analysis.profile`). **Effect sizes first**, each with a
permutation p-value computed as (k + 1) / (n + 1), never 0:

* per feature: PSI over the reference's decile bins (p-value by permuting the
  pooled records), plus the Wasserstein-1 distance in units of the reference's
  robust spread (reported, not thresholded);
* language mix and label mix: PSI over categories;
* domain-classifier AUC: a logistic regression told to separate shard records
  from reference records on their text features, trained on one half and
  scored on the other half (held-out AUC; the p-value permutes the held-out
  labels, which is exact for a model fitted on the other half). When a share
  p of the shard is perfectly separable the AUC is at most 0.5 + p/2;
* on the MiniLM embeddings of the sampled records, when the profile has
  embeddings: MMD² (unbiased, RBF kernel with the reference's median
  bandwidth); the topic-mass shift, Jensen–Shannon divergence (base 2) of the
  shares of records nearest each reference k-means centroid; and *novelty*:
  each record's mean cosine distance to its ``novelty_k`` nearest reference
  records (the reference's own records leave themselves out), compared by the
  one-sided KS distance D+ = max_t F_ref(t) − F_shard(t). D+ is a lower bound
  on the share of shard records lying beyond where reference records lie
  (content injected into a feed). Shard records beyond the reference's
  ``far_quantile`` distance are clustered and each cluster of at least
  ``new_cluster_min_size`` is reported with example records (info findings).

Per-feature p-values are adjusted for testing every feature (single-step
max-T over the same permutations). Large shards make every p-value tiny, so **verdicts use effect sizes**: an
effect counts only when its p-value is at most ``alpha`` *and* it reaches the
policy threshold. The shard finding's ``score`` is the largest counted effect
as a multiple of its warn threshold (>= 1 is drift); its severity is
``critical`` when a counted effect reaches its critical threshold, ``warn``
when one reaches its warn threshold, else ``info`` (the info finding still
carries the dashboard data: histograms of the shard against the reference).

Without ``--reference`` the check compares against *history* when
``history: true`` (a sample of the features of shards approved by earlier
scans, kept in the state directory), else it reports one info finding saying
that drift was not measured.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field

from connectors.schema import TEXT_FIELDS
from integrity.analysis import fairness
from integrity.analysis.features import CATEGORICAL_FEATURES, NUMERIC_FEATURES, cached_batch_features, finite, record_text
from integrity.analysis.profile import (EMBED_MAX_CHARS, Profile, ProfileError, bin_index, categorical_shares,
                                        embed_texts, load_profile, nearest_centroid, sample_key)
from integrity.checks.base import CORPUS_FINDING_COLUMNS, Check, CheckOptions, CheckOutput, CorpusContext

log = logging.getLogger(__name__)

SAMPLE_KIND = "sample"
FEATURE_SCHEMA: dict[str, pl.DataType] = {
    "record_id": pl.Utf8, "row": pl.Int64, "kind": pl.Utf8,
    **{f: pl.Float64 for f in NUMERIC_FEATURES}, "language": pl.Utf8, "label": pl.Utf8,
    **{c: (pl.Int16 if c in ("fair_pos", "fair_neg") else pl.Int8) for c in fairness.COLUMNS},
    "sample_text": pl.Utf8,
}
SEV_RANK = {"info": 0, "warn": 1, "critical": 2}


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType] = FEATURE_SCHEMA) -> pl.DataFrame:
    """``df`` with exactly ``schema``'s columns (missing ones null), in order."""
    return df.select([(pl.col(c).cast(t) if c in df.columns else pl.lit(None, dtype=t)).alias(c)
                      for c, t in schema.items()])


# =========================================================================== statistics


def perm_pvalue(null_stats: np.ndarray, observed: float) -> float:
    """(k + 1) / (n + 1) with k the permutation statistics at least as large as the observed one."""
    null_stats = np.asarray(null_stats, dtype=np.float64)
    k = int(np.sum(null_stats >= observed - 1e-12))
    return (k + 1) / (len(null_stats) + 1)


def perm_masks(n_cur: int, n_ref: int, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """(n_perm, n_cur + n_ref) float masks, each with n_cur ones: random relabellings of the pool."""
    n = n_cur + n_ref
    keys = rng.random((n_perm, n))
    idx = np.argpartition(keys, n_cur - 1, axis=1)[:, :n_cur] if 0 < n_cur < n else None
    masks = np.zeros((n_perm, n), dtype=np.float64)
    if idx is not None:
        masks[np.arange(n_perm)[:, None], idx] = 1.0
    elif n_cur >= n:
        masks[:] = 1.0
    return masks


def _psi_rows(cur_counts: np.ndarray, ref_counts: np.ndarray) -> np.ndarray:
    """PSI of each row of counts (shard vs reference), add-0.5 smoothed."""
    k = cur_counts.shape[-1]
    p = (cur_counts + 0.5) / (cur_counts.sum(axis=-1, keepdims=True) + 0.5 * k)
    q = (ref_counts + 0.5) / (ref_counts.sum(axis=-1, keepdims=True) + 0.5 * k)
    return np.sum((p - q) * np.log(p / q), axis=-1)


def psi(cur_bins: np.ndarray, ref_bins: np.ndarray, n_bins: int) -> float:
    """Population stability index of two arrays of bin ids."""
    return float(_psi_rows(np.bincount(cur_bins, minlength=n_bins)[None].astype(float),
                           np.bincount(ref_bins, minlength=n_bins)[None].astype(float))[0])


def binned_test(cur_bins: np.ndarray, ref_bins: np.ndarray, n_bins: int, masks: np.ndarray,
                return_null: bool = False):
    """(PSI, permutation p-value) of bin ids; ``masks`` from :func:`perm_masks` over [cur, ref].
    With ``return_null`` also the PSI of every permutation (for max-statistic adjustment)."""
    pooled = np.concatenate([cur_bins, ref_bins])
    onehot = np.zeros((len(pooled), n_bins))
    onehot[np.arange(len(pooled)), pooled] = 1.0
    total = onehot.sum(axis=0)
    obs = float(_psi_rows(onehot[: len(cur_bins)].sum(0)[None], onehot[len(cur_bins):].sum(0)[None])[0])
    cur_perm = masks @ onehot
    null = _psi_rows(cur_perm, total[None] - cur_perm)
    if return_null:
        return obs, perm_pvalue(null, obs), null
    return obs, perm_pvalue(null, obs)


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon divergence (base 2, in [0, 1]) of two count or share vectors."""
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    p = p / p.sum() if p.sum() > 0 else p
    q = q / q.sum() if q.sum() > 0 else q
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return 0.5 * kl(p) + 0.5 * kl(q)


def _js_rows(cur: np.ndarray, ref: np.ndarray) -> np.ndarray:
    p = cur / np.maximum(cur.sum(axis=-1, keepdims=True), 1e-12)
    q = ref / np.maximum(ref.sum(axis=-1, keepdims=True), 1e-12)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log2(p / m), 0.0)
        b = np.where(q > 0, q * np.log2(q / m), 0.0)
    return 0.5 * a.sum(-1) + 0.5 * b.sum(-1)


def categorical_js_test(cur_ids: np.ndarray, ref_ids: np.ndarray, k: int, masks: np.ndarray) -> tuple[float, float]:
    """(JS divergence, permutation p-value) of category ids in [0, k)."""
    pooled = np.concatenate([cur_ids, ref_ids])
    onehot = np.zeros((len(pooled), k))
    onehot[np.arange(len(pooled)), pooled] = 1.0
    total = onehot.sum(axis=0)
    obs = float(_js_rows(onehot[: len(cur_ids)].sum(0)[None], onehot[len(cur_ids):].sum(0)[None])[0])
    cur_perm = masks @ onehot
    return obs, perm_pvalue(_js_rows(cur_perm, total[None] - cur_perm), obs)


def wasserstein_effect(cur: np.ndarray, ref: np.ndarray) -> float | None:
    """Wasserstein-1 distance in units of the reference's robust spread (IQR / 1.349, or std)."""
    from scipy.stats import wasserstein_distance

    cur, ref = cur[np.isfinite(cur)], ref[np.isfinite(ref)]
    if cur.size == 0 or ref.size == 0:
        return None
    q75, q25 = np.quantile(ref, [0.75, 0.25])
    scale = (q75 - q25) / 1.349
    if scale <= 1e-12:
        scale = float(ref.std())
    if scale <= 1e-12:
        scale = max(abs(float(ref.mean())), 1.0)
    return float(wasserstein_distance(cur, ref) / scale)


def rbf_bandwidth(ref: np.ndarray, max_points: int = 500) -> float:
    """Median pairwise squared distance of (up to ``max_points``) reference rows."""
    r = ref[:max_points].astype(np.float64)
    sq = np.maximum(np.sum(r * r, 1)[:, None] + np.sum(r * r, 1)[None] - 2 * r @ r.T, 0)
    iu = np.triu_indices(len(r), 1)
    med = float(np.median(sq[iu])) if len(iu[0]) else 1.0
    return med if med > 1e-12 else 1.0


def mmd2_test(x: np.ndarray, y: np.ndarray, masks: np.ndarray, sigma2: float | None = None) -> tuple[float, float]:
    """(unbiased MMD², permutation p-value) of rows ``x`` (shard) against ``y`` (reference)
    with the RBF kernel exp(-d² / sigma2) (sigma2: median heuristic on ``y``)."""
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        return 0.0, 1.0
    z = np.vstack([x, y]).astype(np.float64)
    sigma2 = sigma2 or rbf_bandwidth(y)
    sq = np.maximum(np.sum(z * z, 1)[:, None] + np.sum(z * z, 1)[None] - 2 * z @ z.T, 0)
    k = np.exp(-sq / sigma2)
    np.fill_diagonal(k, 0.0)  # unbiased: drop i == j terms

    def stat(a: np.ndarray) -> np.ndarray:  # a: (B, N) indicator of the shard group
        ka = a @ k
        sxx = np.sum(ka * a, axis=1)
        row = k.sum(axis=1)
        s_all = row.sum()
        a_row = a @ row
        sxy = a_row - sxx
        syy = s_all - 2 * a_row + sxx
        return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * sxy / (n * m)

    obs = float(stat(np.r_[np.ones(n), np.zeros(m)][None])[0])
    return obs, perm_pvalue(stat(masks), obs)


def auc_from_scores(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (ties count half) of ``scores`` for binary ``labels``."""
    from scipy.stats import rankdata

    r = rankdata(scores)
    n1 = int(labels.sum())
    n0 = len(labels) - n1
    if n1 == 0 or n0 == 0:
        return 0.5
    return float((r[labels == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def domain_classifier_test(x_cur: np.ndarray, x_ref: np.ndarray, n_perm: int, rng: np.random.Generator,
                           c: float = 0.5) -> tuple[float, float]:
    """(held-out AUC, permutation p-value) of a logistic regression separating the shard from the reference.

    Trained on a random half of each side, scored on the other half; the p-value
    permutes the held-out labels (exact for a model fitted on the other half).
    """
    from scipy.stats import rankdata
    from sklearn.linear_model import LogisticRegression

    n, m = len(x_cur), len(x_ref)
    if n < 10 or m < 10:
        return 0.5, 1.0
    x = np.vstack([x_cur, x_ref])
    y = np.r_[np.ones(n), np.zeros(m)]
    half = np.zeros(n + m, dtype=bool)
    half[rng.permutation(n)[: n // 2]] = True
    half[n + rng.permutation(m)[: m // 2]] = True
    mu, sd = x[half].mean(0), x[half].std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    z = (x - mu) / sd
    lr = LogisticRegression(C=c, max_iter=2000, class_weight="balanced")
    lr.fit(z[half], y[half])
    s = lr.decision_function(z[~half])
    yt = y[~half]
    obs = auc_from_scores(s, yt)
    r = rankdata(s)
    n1 = int(yt.sum())
    n0 = len(yt) - n1
    masks = perm_masks(n1, n0, n_perm, rng)
    null = (masks @ r - n1 * (n1 + 1) / 2) / (n1 * n0)
    return obs, perm_pvalue(null, obs)


def knn_distances(x: np.ndarray, ref: np.ndarray, k: int, leave_one_out: bool = False) -> np.ndarray:
    """Mean cosine distance of each unit-norm row of ``x`` to its ``k`` nearest rows of ``ref``
    (``leave_one_out``: ``x`` is ``ref`` and a row is not its own neighbour)."""
    sims = x.astype(np.float32) @ ref.astype(np.float32).T
    if leave_one_out:
        np.fill_diagonal(sims, -np.inf)
    k = max(1, min(k, sims.shape[1] - (1 if leave_one_out else 0)))
    top = np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:]
    return (1.0 - top.mean(axis=1)).astype(np.float64)


def one_sided_ks_test(cur: np.ndarray, ref: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    """(D+, permutation p-value): D+ = max_t F_ref(t) − F_cur(t), how much more of the shard
    lies above a threshold than of the reference; ``masks`` over [cur, ref]."""
    pooled = np.concatenate([cur, ref])
    order = np.argsort(pooled, kind="stable")
    n, m = len(cur), len(ref)

    def stat(a: np.ndarray) -> np.ndarray:  # a: (B, N) shard indicator
        s = a[:, order]
        f_cur = np.cumsum(s, axis=1) / n
        f_ref = np.cumsum(1 - s, axis=1) / m
        return np.max(f_ref - f_cur, axis=1)

    obs = float(stat(np.r_[np.ones(n), np.zeros(m)][None])[0])
    return max(obs, 0.0), perm_pvalue(stat(masks), obs)


# =========================================================================== comparing one shard


def _numeric_matrix(df: pl.DataFrame, medians: np.ndarray) -> np.ndarray:
    x = df.select(NUMERIC_FEATURES).to_numpy().astype(np.float64)
    return np.where(np.isfinite(x), x, medians)


def _take(df: pl.DataFrame, k: int, seed: int) -> pl.DataFrame:
    """A deterministic sample of at most ``k`` rows."""
    return df if df.height <= k else df.sample(k, seed=seed)


def _new_topic_clusters(emb: np.ndarray, far: np.ndarray, ids: list[str], centroid_dist: np.ndarray,
                        min_size: int, examples: int) -> list[dict]:
    """Clusters (average-linkage, cosine) of the far records, largest first, with examples."""
    idx = np.flatnonzero(far)
    if len(idx) < max(2, min_size):
        return []
    from sklearn.cluster import AgglomerativeClustering

    x = emb[idx]
    labels = AgglomerativeClustering(n_clusters=None, distance_threshold=0.5, metric="cosine",
                                     linkage="average").fit(x).labels_
    out = []
    for lab in np.unique(labels):
        members = idx[labels == lab]
        if len(members) < min_size:
            continue
        centre = emb[members].mean(0)
        centre /= max(np.linalg.norm(centre), 1e-12)
        order = members[np.argsort(-(emb[members] @ centre))]
        out.append({"size": int(len(members)),
                    "examples": [ids[i] for i in order[:examples]],
                    "mean_distance_to_reference": float(centroid_dist[members].mean())})  # kNN distance
    return sorted(out, key=lambda c: -c["size"])


def compare_shard(cur: pl.DataFrame, prof: Profile, options: dict[str, Any], cur_emb: np.ndarray | None = None,
                  cur_emb_ids: list[str] | None = None, seed: int = 0) -> dict[str, Any]:
    """Every drift statistic of one shard's feature rows against ``prof``.

    ``cur`` has the per-record feature columns (:data:`FEATURE_SCHEMA`, feature
    rows only); ``cur_emb`` the unit-norm embeddings of the shard's sampled
    records (ids ``cur_emb_ids``) or None. Returns a JSON-able dict with the
    effects, p-values, the verdict (``severity``, ``score``, ``reasons``) and
    the dashboard data (histograms per feature).
    """
    o = options
    rng = np.random.default_rng(seed)
    n_perm = int(o["permutations"])
    alpha = float(o["alpha"])
    full_n = cur.height
    cur = _take(cur, int(o["max_shard_records"]), seed)
    ref = _take(prof.features, int(o["max_reference_records"]), seed + 1)
    n, m = cur.height, ref.height
    masks = perm_masks(n, m, n_perm, rng)
    effects: list[dict[str, Any]] = []
    feats: list[dict[str, Any]] = []

    def effect(name: str, value: float, p: float, warn: float, crit: float, **extra: Any) -> dict:
        e = {"effect": name, "value": float(value), "p_value": float(p), "warn": warn, "critical": crit,
             "significant": bool(p <= alpha), **extra}
        e["level"] = ("critical" if value >= crit else "warn" if value >= warn else "info") if e["significant"] else "info"
        effects.append(e)
        return e

    # ---- numeric features: PSI with permutation p-values adjusted for testing every feature
    # (single-step max-T: a feature's p-value is the share of permutations whose largest PSI over
    # all features reaches its PSI), W1 effect reported alongside
    psi_w, psi_c = float(o["psi_warn"]), float(o["psi_critical"])
    nulls = []
    for f in NUMERIC_FEATURES:
        edges = prof.edges(f)
        nb = len(edges) + 2
        cv = cur[f].cast(pl.Float64).to_numpy().astype(np.float64)
        rv = ref[f].cast(pl.Float64).to_numpy().astype(np.float64)
        cv, rv = np.where(np.isfinite(cv), cv, np.nan), np.where(np.isfinite(rv), rv, np.nan)
        cb, rb = bin_index(cv, edges), bin_index(rv, edges)
        value, p_raw, null = binned_test(cb, rb, nb, masks, return_null=True)
        nulls.append(null)
        counts = np.bincount(cb, minlength=nb)
        ref_counts = np.asarray(prof.meta["features"][f]["counts"], dtype=float)
        feats.append({"feature": f, "psi": value, "p_raw": p_raw, "wasserstein": finite(wasserstein_effect(cv, rv)),
                      "shard_median": finite(np.nanmedian(cv)) if np.isfinite(cv).any() else None,
                      "ref_median": finite(prof.meta["features"][f]["quantiles"].get("q50")),
                      "edges": edges, "counts": counts.tolist(),
                      "ref_shares": (ref_counts / max(ref_counts.sum(), 1)).round(5).tolist()})
    max_null = np.max(np.vstack(nulls), axis=0)
    for fv in feats:
        fv["p_value"] = perm_pvalue(max_null, fv["psi"])
        value, p = fv["psi"], fv["p_value"]
        fv["level"] = ("critical" if value >= psi_c else "warn" if value >= psi_w else "info") if p <= alpha else "info"
    worst = max(feats, key=lambda r: (r["p_value"] <= alpha, r["psi"]))
    effect("feature_psi", worst["psi"], worst["p_value"], psi_w, psi_c, feature=worst["feature"],
           adjusted="max-T over features")

    # ---- categorical: language, label
    def cat_ids(cur_vals: list, ref_vals: list) -> tuple[np.ndarray, np.ndarray, list[str]]:
        cats = sorted({"(null)" if v is None else str(v) for v in cur_vals + ref_vals})
        ix = {c: i for i, c in enumerate(cats)}
        conv = lambda vals: np.asarray([ix["(null)" if v is None else str(v)] for v in vals], dtype=np.int64)
        return conv(cur_vals), conv(ref_vals), cats

    ci, ri, cats = cat_ids(cur["language"].to_list(), ref["language"].to_list())
    value, p = binned_test(ci, ri, len(cats), masks)
    effect("language_psi", value, p, psi_w, psi_c, shard=categorical_shares(cur["language"].to_list()),
           reference=prof.meta.get("languages"))
    cur_labels = cur["label"].drop_nulls().to_list() if "label" in cur.columns else []
    ref_labels = ref["label"].drop_nulls().to_list() if "label" in ref.columns else []
    if len(cur_labels) >= 10 and len(ref_labels) >= 10:
        ci, ri, cats = cat_ids(cur_labels, ref_labels)
        lm = perm_masks(len(ci), len(ri), n_perm, rng)
        value, p = categorical_js_test(ci, ri, len(cats), lm)
        effect("label_js", value, p, float(o["label_js_warn"]), float(o["label_js_critical"]),
               shard=categorical_shares(cur_labels), reference=prof.meta.get("labels"),
               new_labels=sorted(set(map(str, cur_labels)) - set(map(str, ref_labels)))[:20])

    # ---- domain classifier on the text features of every compared record
    medians = np.nanmedian(_numeric_matrix(ref, np.zeros(len(NUMERIC_FEATURES))), axis=0)
    medians = np.where(np.isfinite(medians), medians, 0.0)
    auc, p = domain_classifier_test(_numeric_matrix(cur, medians), _numeric_matrix(ref, medians), n_perm, rng)
    effect("domain_auc", auc, p, float(o["auc_warn"]), float(o["auc_critical"]), inputs="text features",
           n_shard=n, n_reference=m)

    # ---- embeddings: MMD², topic mass, novelty (kNN distance to the reference), new topics
    topics: dict[str, Any] | None = None
    have_emb = cur_emb is not None and prof.embeddings is not None and len(cur_emb) >= 10
    if have_emb:
        emb_meta = prof.embedding or {}
        ref_emb = prof.embeddings[: int(o["max_reference_embeddings"])]
        mm = perm_masks(len(cur_emb), len(ref_emb), n_perm, rng)
        value, p = mmd2_test(cur_emb, ref_emb, mm)
        effect("mmd2", value, p, float(o["mmd_warn"]), float(o["mmd_critical"]), n_shard=len(cur_emb),
               n_reference=len(ref_emb))
        k = len(prof.centroids)
        assign, _ = nearest_centroid(cur_emb, prof.centroids)
        ref_assign = nearest_centroid(ref_emb, prof.centroids)[0]
        tm = perm_masks(len(assign), len(ref_assign), n_perm, rng)
        value, p = categorical_js_test(assign, ref_assign, k, tm)
        shard_mass = np.bincount(assign, minlength=k) / max(1, len(assign))
        effect("topic_js", value, p, float(o["topic_js_warn"]), float(o["topic_js_critical"]))
        # novelty: mean cosine distance to the k nearest reference records (the reference's own
        # scores leave the record itself out); effect = one-sided KS distance, a lower bound on
        # the share of shard records lying beyond where reference records lie
        kn = int(o["novelty_k"])
        cur_nov, ref_nov = knn_distances(cur_emb, ref_emb, kn), knn_distances(ref_emb, ref_emb, kn, leave_one_out=True)
        value, p = one_sided_ks_test(cur_nov, ref_nov, perm_masks(len(cur_nov), len(ref_nov), n_perm, rng))
        thr = float(np.quantile(ref_nov, float(o["far_quantile"])))
        far = cur_nov > thr
        clusters = _new_topic_clusters(cur_emb, far, list(cur_emb_ids or []), cur_nov,
                                       int(o["new_cluster_min_size"]), int(o["examples_per_cluster"]))
        effect("novelty", value, p, float(o["novelty_warn"]), float(o["novelty_critical"]),
               far_share=float(far.mean()), reference_far_share=float(1 - float(o["far_quantile"])),
               far_distance=thr, clusters=len(clusters))
        topics = {"shard_mass": shard_mass.round(4).tolist(),
                  "reference_mass": [round(float(x), 4) for x in emb_meta.get("topic_mass", [])],
                  "far_share": float(far.mean()), "far_distance": thr, "clusters": clusters}

    # ---- verdict on effect sizes
    counted = [e for e in effects if e["level"] != "info"]
    score = max([e["value"] / e["warn"] for e in effects if e["significant"] and e["warn"] > 0] + [0.0])
    severity = max((e["level"] for e in effects), key=SEV_RANK.__getitem__, default="info")
    reasons = [f"{e['effect']}{'(' + e['feature'] + ')' if e.get('feature') else ''} = {e['value']:.3g} "
               f"(p = {e['p_value']:.3g}; warn at {e['warn']:g}, critical at {e['critical']:g})" for e in counted]
    return {
        "kind": "shard", "reference": prof.version, "profile_id": prof.profile_id[:16],
        "records": full_n, "compared": n, "reference_records": m, "embedded": 0 if cur_emb is None else len(cur_emb),
        "severity": severity, "score": float(score), "reasons": reasons,
        "effects": effects, "features": feats, "topics": topics, "permutations": n_perm, "alpha": alpha,
    }


# =========================================================================== the check


class DriftCheck(Check):
    name = "distribution.drift"
    report_section = "drift"
    description = ("Shards against a trusted reference profile (--reference): PSI per feature, domain-classifier "
                   "AUC, MMD² and topic shift on MiniLM embeddings, new topics; permutation p-values.")
    requires = TEXT_FIELDS
    default_severity = "info"
    corpus_level = True
    version = 1
    class Options(CheckOptions):
        alpha: float = Field(0.01, gt=0, le=1, description="an effect counts only when its p-value is at most this")
        permutations: int = Field(200, ge=1, description="permutations per test (smallest p-value 1/201)")
        psi_warn: float = Field(0.25, ge=0, description="PSI of one feature (0.1-0.25 moderate, > 0.25 major shift)")
        psi_critical: float = Field(1.0, ge=0, description="PSI of one feature that is critical")
        auc_warn: float = Field(0.65, ge=0, le=1, description="held-out AUC of shard-vs-reference on text features")
        auc_critical: float = Field(0.8, ge=0, le=1, description="critical AUC (a share p of separable records gives at most 0.5 + p/2)")
        mmd_warn: float = Field(0.002, ge=0, description="MMD^2 on MiniLM embeddings (RBF, median bandwidth)")
        mmd_critical: float = Field(0.01, ge=0, description="critical MMD^2")
        topic_js_warn: float = Field(0.1, ge=0, le=1, description="JS divergence (base 2) of reference-topic shares")
        topic_js_critical: float = Field(0.3, ge=0, le=1, description="critical topic JS divergence")
        novelty_warn: float = Field(0.1, ge=0, le=1, description="share of the shard beyond the reference (lower bound)")
        novelty_critical: float = Field(0.3, ge=0, le=1, description="critical novel share")
        novelty_k: int = Field(10, ge=1, description="neighbours for the novelty distance")
        far_quantile: float = Field(0.99, gt=0, lt=1, description="records beyond this reference quantile are 'new topic' examples")
        label_js_warn: float = Field(0.05, ge=0, le=1, description="JS divergence of the label mix")
        label_js_critical: float = Field(0.2, ge=0, le=1, description="critical label-mix JS divergence")
        embed_sample: int = Field(256, ge=0, description="records per shard embedded (bottom-k by id hash; cached by content)")
        min_records: int = Field(30, ge=1, description="smaller shards are not compared (info finding)")
        max_shard_records: int = Field(5000, ge=1, description="records per shard used by the tests (a deterministic sample)")
        max_reference_records: int = Field(2000, ge=1, description="reference records used by the tests (a deterministic sample)")
        max_reference_embeddings: int = Field(1000, ge=0, description="reference records embedded")
        new_cluster_min_size: int = Field(3, ge=1, description="far records grouped into a new topic need at least this many")
        examples_per_cluster: int = Field(3, ge=0, description="examples shown per new topic")
        fairness: bool = Field(True, description="identity-term counts and context vs the reference (no verdict)")
        history: bool = Field(False, description="without --reference: compare with earlier approved shards")
        history_sample: int = Field(10000, ge=1, description="records kept in that history")

    def __init__(self, options=None, shard=None):
        super().__init__(options, shard)
        self._sample: list = []  # heap of (-key, row, record_id, text)

    # -- per shard ----------------------------------------------------------
    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        feats = cached_batch_features(batch)
        if feats is None:
            return CheckOutput()
        cols = [feats]
        if "label" in batch.schema.names:
            cols.append(pl.from_arrow(batch.column("label")).cast(pl.Utf8).alias("label").to_frame())
        texts = record_text(batch)
        if self.options["fairness"]:
            cols.append(fairness.fairness_features(pl.from_arrow(texts).cast(pl.Utf8)))
        df = pl.concat(cols, how="horizontal").with_columns(kind=pl.lit("record"))
        k = int(self.options["embed_sample"])
        if k > 0:
            shard = self.shard.shard if self.shard else ""
            for rid, row, t in zip(batch.column("record_id").to_pylist(), batch.column("row").to_pylist(),
                                   texts.to_pylist()):
                if not t:
                    continue
                key = sample_key(shard, str(rid))
                item = (-key, int(row), str(rid), t[:EMBED_MAX_CHARS])
                if len(self._sample) < k:
                    heapq.heappush(self._sample, item)
                elif -self._sample[0][0] > key:
                    heapq.heapreplace(self._sample, item)
        return CheckOutput(features=conform(df))

    def finish_shard(self) -> CheckOutput:
        if not self._sample:
            return CheckOutput()
        rows = sorted(self._sample, key=lambda t: t[1])
        df = pl.DataFrame({"record_id": [r[2] for r in rows], "row": [r[1] for r in rows],
                           "sample_text": [r[3] for r in rows]}).with_columns(kind=pl.lit(SAMPLE_KIND))
        return CheckOutput(features=conform(df))

    # -- corpus ---------------------------------------------------------------
    def _reference(self, ctx: CorpusContext) -> tuple[Profile | None, str]:
        if ctx.reference is not None:
            return load_profile(ctx.reference), "reference"
        if self.options["history"]:
            d = history_dir(ctx.state_dir)
            if (d / "LATEST").exists():
                return load_profile(d), "history"
        return None, ""

    def corpus_pass(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame | None:
        try:
            prof, basis = self._reference(ctx)
        except ProfileError as e:
            raise ProfileError(f"distribution.drift: {e}") from None
        shards = (features.select("shard", "shard_index").unique().sort("shard_index").collect()["shard"].to_list())
        if not shards:
            return None
        if prof is None:
            detail = {"kind": "skipped", "reason": "no reference profile: pass --reference REF_DIR (built with "
                      "`integrity profile TRUSTED_CORPUS --out REF_DIR`) or set history: true to compare with "
                      "earlier approved shards; drift was not measured"}
            return pl.DataFrame({"shard": [shards[0]], "record_id": [None], "score": [0.0],
                                 "detail": [json.dumps(detail)], "severity": ["info"]}, schema=CORPUS_FINDING_COLUMNS)
        embeddings = self._embed_samples(features, shards, prof, ctx) if prof.embeddings is not None else {}
        rows: list[dict] = []
        for i, shard in enumerate(shards):
            cur = ctx.shard_frame(self.name, shard, features).filter(pl.col("kind") == "record").collect()
            rows.extend(self._shard_findings(shard, cur, prof, basis, embeddings.get(shard), seed=i))
        return pl.DataFrame(rows, schema=CORPUS_FINDING_COLUMNS) if rows else None

    def _shard_findings(self, shard: str, cur: pl.DataFrame, prof: Profile, basis: str,
                        emb: tuple[list[str], np.ndarray] | None, seed: int) -> list[dict]:
        o = self.options
        if cur.height < int(o["min_records"]):
            d = {"kind": "skipped", "reason": f"{cur.height} records, fewer than min_records = {o['min_records']}"}
            return [{"shard": shard, "record_id": None, "score": 0.0, "detail": json.dumps(d), "severity": "info"}]
        ids, vecs = emb if emb is not None else (None, None)
        res = compare_shard(cur, prof, o, vecs, ids, seed=seed)
        res["basis"] = basis
        out = [{"shard": shard, "record_id": None, "score": res["score"], "severity": res["severity"],
                "detail": dumps(res)}]
        for f in res["features"]:
            if f["level"] != "info":
                d = {"kind": "feature", "feature": f["feature"], "psi": f["psi"], "p_value": f["p_value"],
                     "wasserstein": f["wasserstein"], "shard_median": f["shard_median"],
                     "ref_median": f["ref_median"], "basis": basis}
                out.append({"shard": shard, "record_id": None, "score": f["psi"] / float(o["psi_warn"]),
                            "severity": f["level"], "detail": dumps(d)})
        topics = res.get("topics") or {}
        for ci, cl in enumerate(topics.get("clusters") or []):
            for rid in cl["examples"]:
                d = {"kind": "new_topic_example", "cluster": f"{shard}#topic{ci}", "cluster_size": cl["size"],
                     "distance_to_reference": cl["mean_distance_to_reference"],
                     "far_distance": topics.get("far_distance")}
                out.append({"shard": shard, "record_id": rid, "score": cl["mean_distance_to_reference"],
                            "severity": "info", "detail": dumps(d)})
        if o["fairness"] and "fair_occupation" in cur.columns and cur["fair_occupation"].null_count() < cur.height:
            summary = fairness.summarize(cur.select(fairness.COLUMNS))
            d = {"kind": "fairness", "records": cur.height, "basis": basis,
                 "groups": fairness.compare(summary, prof.fairness)}
            out.append({"shard": shard, "record_id": None, "score": 0.0, "severity": "info",
                        "detail": dumps(d)})
        return out

    def _embed_samples(self, features: pl.LazyFrame, shards: list[str], prof: Profile,
                       ctx: CorpusContext) -> dict[str, tuple[list[str], np.ndarray]]:
        """Embeddings of every shard's sampled texts, cached in the state dir by shard content."""
        emb_meta = prof.embedding or {}
        model, seq = emb_meta.get("model", "all-MiniLM-L6-v2"), int(emb_meta.get("max_seq_length", 128))
        tag = hashlib.sha256(json.dumps([model, seq, EMBED_MAX_CHARS, self.options["embed_sample"]]).encode()).hexdigest()[:12]
        cache = Path(ctx.state_dir) / "drift" / "embeddings"
        samples = (features.filter(pl.col("kind") == SAMPLE_KIND).select("shard", "record_id", "row", "sample_text")
                   .collect())
        out: dict[str, tuple[list[str], np.ndarray]] = {}
        todo: list[tuple[str, list[str], list[str], Path | None]] = []
        for shard in shards:
            s = samples.filter(pl.col("shard") == shard).sort("row")
            if s.height == 0:
                continue
            ids, texts = s["record_id"].to_list(), s["sample_text"].to_list()
            sha = ctx.shard_sha256.get(shard)
            path = cache / f"{sha}-{tag}.npy" if sha else None
            if path is not None and path.exists():
                vec = np.load(path, allow_pickle=False).astype(np.float32)
                if len(vec) == len(ids):
                    out[shard] = (ids, vec)
                    continue
            todo.append((shard, ids, texts, path))
        if todo:
            allt = [t for _, _, texts, _ in todo for t in texts]
            vecs = embed_texts(allt, model, seq)
            pos = 0
            for shard, ids, texts, path in todo:
                v = vecs[pos: pos + len(texts)]
                pos += len(texts)
                out[shard] = (ids, v)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_name(path.name + ".tmp.npy")
                    np.save(tmp, v.astype(np.float16), allow_pickle=False)
                    tmp.replace(path)
        return out

    def after_verdicts(self, features: pl.LazyFrame, approved: list[str], ctx: CorpusContext) -> None:
        """With ``history: true``: fold the approved shards' features into the history profile."""
        if not self.options["history"] or not approved:
            return
        update_history(features.filter(pl.col("shard").is_in(approved) & (pl.col("kind") == "record")),
                       ctx.state_dir, int(self.options["history_sample"]))


def history_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "drift" / "history"


def update_history(features: pl.LazyFrame, state_dir: Path, k: int) -> None:
    """Keep a bottom-k sample (by hash of shard and record id) of approved records' features
    as a features-only profile in ``state_dir/drift/history``."""
    from integrity.analysis.profile import _write_version, feature_summary, list_versions

    d = history_dir(state_dir)
    new = features.with_columns(
        _key=pl.struct("shard", "record_id").map_elements(lambda s: sample_key(s["shard"], str(s["record_id"])),
                                                          return_dtype=pl.UInt64)
    ).sort("_key").head(k).collect()
    keep = [*NUMERIC_FEATURES, *CATEGORICAL_FEATURES, "label", *fairness.COLUMNS]
    new = new.select([c for c in ["_key", *keep] if c in new.columns])
    old_path = None
    if (d / "LATEST").exists():
        try:
            old = load_profile(d)
            old_path = old.path
            if "_key" in old.features.columns:
                new = pl.concat([old.features, new], how="diagonal_relaxed").unique("_key").sort("_key").head(k)
        except ProfileError:
            pass
    if new.height == 0:
        return
    meta = {"format": 1, "source": "history of approved shards", "note": "drift history (features only)",
            "n_records": int(new.height), "n_sample": int(new.height), "features": feature_summary(new),
            "languages": categorical_shares(new["language"].to_list()),
            "labels": (categorical_shares(new["label"].drop_nulls().to_list())
                       if "label" in new.columns and new["label"].drop_nulls().len() else None),
            "fairness": fairness.summarize(new.select([c for c in fairness.COLUMNS if c in new.columns]))}
    import datetime as _dt

    meta["created_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    _write_version(d, meta, new, None, None)
    # keep the two latest history versions only
    import shutil

    for v in list_versions(d)[:-2]:
        shutil.rmtree(d / "versions" / v, ignore_errors=True)
    _ = old_path


def _clean(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def dumps(o: Any) -> str:
    """JSON with NaN/inf as null (details must be valid JSON)."""
    return json.dumps(_clean(o), default=_json_default, allow_nan=False)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
