"""Dirty-label evidence of the label-trigger tests: do a group's records read like their label?

A dirty-label attack relabels records of other labels; their content still reads like
the label they came from (split out of :mod:`integrity.analysis.label_triggers.detect`,
which runs :func:`dirty_label_evidence`).
"""
from __future__ import annotations

import math

import numpy as np
import polars as pl
from scipy import stats

from integrity.analysis.label_triggers import lexical as lx


def loo_weights(pairs: pl.DataFrame, tab: pl.DataFrame, p0: float, prior_strength: float = 2.0) -> pl.DataFrame:
    """Leave-one-out naive-Bayes log-odds weight of each (rec, g, y) pair for one
    target: the record's own label is taken out of its n-gram's counts (``tab``:
    ``g``, ``df``, ``kc`` = records with the target label)."""
    a = prior_strength
    p0 = min(max(p0, 1e-6), 1 - 1e-6)
    return (pairs.join(tab, on="g")
            .with_columns(kp=pl.col("kc") - pl.col("y"), np_=pl.col("df") - 1)
            .with_columns(w=((pl.col("kp") + a * p0) / (pl.col("np_") - pl.col("kp") + a * (1 - p0))).log()
                          - math.log(p0 / (1 - p0)))
            .select("rec", "g", "w"))


def dirty_label_evidence(gstat: pl.DataFrame, grec: pl.DataFrame, grams: pl.DataFrame, codes: np.ndarray,
                          opt: dict, sample: int = 4000, max_order: int = 2) -> pl.DataFrame:
    """Content test: do the group's target-label records read like target-label records?

    Every record is scored by a leave-one-out naive-Bayes log-odds of the target
    from its 1-2-grams; n-grams concentrated in the group's records (the trigger,
    its words, the n-grams it touches) are left out of *every* record's score.
    A: the group's target-label records, B: other target-label records, C:
    records of other labels (B and C sampled). Relabelled records read like a
    typical C record: the share of A below C's median, against B's, estimates the
    relabelled share ((rA - rB) / (0.5 - rB)) and a one-sided Fisher test gives
    the p-value (Benjamini-Hochberg over the groups tested)."""
    # groups clean-label by their purity tail need no content test; those clean-label by
    # foreignness alone get it too, so that a relabelled group is reported as dirty-label
    settled = pl.col("clean_ok") & ~pl.col("strong_foreign") & ~pl.col("scattered_ok")
    tested = (gstat.filter((pl.col("eligible") | pl.col("eligible_common") | pl.col("eligible_weak")) & ~settled)
              .sort("logp").head(int(opt["max_groups"])))
    res: dict[int, tuple[float, float]] = {}
    if tested.height == 0:
        return gstat.with_columns(flip=pl.lit(None, dtype=pl.Float64), dirty_logp=pl.lit(None, dtype=pl.Float64),
                                  dirty_ok=pl.lit(False))
    g2 = grams.filter(pl.col("n") <= max_order).select("rec", "g")
    g2 = g2.with_columns(lab=pl.Series(codes[g2["rec"].to_numpy().astype(np.int64)]))
    counts = g2.group_by(["g", "lab"]).agg(c=pl.len())
    dfs = counts.group_by("g").agg(df=pl.col("c").sum()).filter(pl.col("df") >= 2)
    valid = codes >= 0
    rng = np.random.default_rng(0)
    per_target: dict[int, tuple] = {}
    for row in tested.select("grp", "target").iter_rows():  # a few groups
        grp, target = int(row[0]), int(row[1])
        if target not in per_target:
            p0 = float((codes[valid] == target).mean())
            tab = dfs.join(counts.filter(pl.col("lab") == target).select("g", kc=pl.col("c")), on="g", how="left")
            tab = tab.with_columns(pl.col("kc").fill_null(0))
            b_all = np.nonzero(codes == target)[0]
            c_all = np.nonzero(valid & (codes != target))[0]
            b_s = b_all if len(b_all) <= sample else rng.choice(b_all, sample, replace=False)
            c_s = c_all if len(c_all) <= sample else rng.choice(c_all, sample, replace=False)
            bc = np.concatenate([b_s, c_s]).astype(np.uint32)
            pairs = g2.filter(pl.col("rec").is_in(bc)).with_columns(y=(pl.col("lab") == target).cast(pl.Int64))
            per_target[target] = (p0, tab, b_s, c_s, loo_weights(pairs.select("rec", "g", "y"), tab, p0))
        p0, tab, b_s, c_s, w_bc = per_target[target]
        rg = grec.filter(pl.col("grp") == grp)["rec"].to_numpy().astype(np.int64)
        in_g = np.zeros(len(codes), dtype=bool)
        in_g[rg] = True
        a_recs = rg[codes[rg] == target]
        b_recs, c_recs = b_s[~in_g[b_s]], c_s[~in_g[c_s]]
        if len(a_recs) < 3 or len(b_recs) < 3 or len(c_recs) < 3:
            continue
        g_pairs = g2.filter(pl.col("rec").is_in(rg.astype(np.uint32)))
        excl = (g_pairs.group_by("g").agg(c=pl.len()).join(dfs, on="g")
                .filter((pl.col("c") >= pl.col("df")) | ((pl.col("c") >= 0.9 * pl.col("df")) & (pl.col("df") >= 3)))
                .select("g"))
        a_pairs = (g_pairs.filter(pl.col("rec").is_in(a_recs.astype(np.uint32)))
                   .with_columns(y=(pl.col("lab") == target).cast(pl.Int64)).select("rec", "g", "y"))
        w_a = loo_weights(a_pairs, tab, p0)
        s_all = pl.concat([w_a, w_bc]).join(excl, on="g", how="anti").group_by("rec").agg(s=pl.col("w").sum())
        score = np.zeros(len(codes))
        score[s_all["rec"].to_numpy().astype(np.int64)] = s_all["s"].to_numpy()
        A, B, C = score[a_recs], score[b_recs], score[c_recs]
        # records that read like a typical record of another label (below the median of C)
        m = float(np.median(C))
        ra, rb = float((A < m).mean()), float((B < m).mean())
        flip = (ra - rb) / (0.5 - rb) if rb < 0.5 else 0.0
        a_low, b_low = int((A < m).sum()), int((B < m).sum())
        p = stats.fisher_exact([[a_low, len(A) - a_low], [b_low, len(B) - b_low]], alternative="greater").pvalue
        res[grp] = (float(flip), float(np.log(max(p, 1e-300))))
    flips = pl.DataFrame({"grp": list(res), "flip": [v[0] for v in res.values()],
                          "dirty_logp": [v[1] for v in res.values()]},
                         schema={"grp": gstat["grp"].dtype, "flip": pl.Float64, "dirty_logp": pl.Float64})
    gstat = gstat.join(flips, on="grp", how="left")
    lp = gstat["dirty_logp"].fill_null(0.0).to_numpy()
    tested_mask = gstat["dirty_logp"].is_not_null().to_numpy()
    ok = np.zeros(gstat.height, dtype=bool)
    if tested_mask.any():
        ok[tested_mask] = lx.benjamini_hochberg(lp[tested_mask], opt["fdr"])
    # relabelled records drawn from the whole corpus make up about (1 - prior) of a dirty-label
    # group; a natural word that annotators follow "relabels" far fewer
    need = pl.max_horizontal(pl.lit(float(opt["dirty_min_flip"])), float(opt["dirty_flip_ratio"]) * (1 - pl.col("p0")))
    return gstat.with_columns(dirty_ok=pl.Series(ok) & (pl.col("flip").fill_null(0) >= need))
