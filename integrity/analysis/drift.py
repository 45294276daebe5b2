"""Drift statistics of one shard against a reference profile (pure: no check, engine or report).

:func:`compare_shard` computes every statistic that ``distribution.drift``
(:mod:`integrity.checks.distribution_drift`, whose docstring describes the method) turns into
findings: PSI and Wasserstein per feature, PSI of the language and label mix, the held-out
domain-classifier AUC, and on embeddings MMD², the topic-mass shift and novelty (one-sided KS
D+ of the k-nearest-reference distances) with clusters of the far records. Every test returns
its effect size with a permutation p-value, (k + 1) / (n + 1), never 0.
:func:`dumps` writes such results as JSON with NaN/inf as null.
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import polars as pl

from integrity.analysis.features import NUMERIC_FEATURES, finite
from integrity.analysis.profile import Profile, bin_index, categorical_shares, nearest_centroid

SEV_RANK = {"info": 0, "warn": 1, "critical": 2}


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

    ``cur`` has the per-record feature columns
    (:data:`integrity.checks.distribution_drift.FEATURE_SCHEMA`, feature rows only); ``cur_emb`` the unit-norm embeddings of the shard's sampled
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


# =========================================================================== JSON


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
