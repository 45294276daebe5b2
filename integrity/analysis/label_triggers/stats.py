"""Association, grouping and multiple-testing statistics of the label-trigger engine.

Split out of :mod:`integrity.analysis.label_triggers.lexical` (which re-exports every
name here, so ``lexical.label_association`` and the like keep working):

* :func:`label_association` gives, per n-gram, its document frequency, its
  most frequent label, the count and share of that label and a one-sided
  binomial log p-value against the label's prior; :func:`purity_evidence`
  how far a share exceeds what strong natural features reach.
* :func:`cooccurrence_groups` merges n-grams that occur in the same records
  (a multi-token trigger, the n-grams of one inserted sentence, several
  triggers used together) with a sparse co-occurrence matrix
  (:func:`membership`).
* :func:`benjamini_hochberg` and :func:`tail_pvalues` are the multiple-testing
  and "what does normal look like in this corpus" tools: a generalized Pareto
  tail fitted on the trimmed upper tail of a statistic over every group, so a
  candidate is judged against the corpus' own strongest natural associations.
* :func:`background_frequency` is an optional reference of ordinary language
  (the ``wordfreq`` package when it is installed; ``None`` otherwise).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy import stats


# --------------------------------------------------------------------------------------------
# association with a label
# --------------------------------------------------------------------------------------------
def label_association(grams: pl.DataFrame, labels: np.ndarray, min_support: int = 5) -> pl.DataFrame:
    """Per n-gram with at least ``min_support`` records: ``df``, its most frequent
    label ``target`` (integer code), ``k`` (records with that label), ``share``
    (k/df), ``p0`` (the label's prior), ``z`` (one-proportion z-score) and
    ``logp`` (natural log of the one-sided binomial p-value of k or more).
    ``labels`` holds one integer code per record (-1: no label, ignored)."""
    lab = pl.Series("label", labels.astype(np.int32))
    valid = labels >= 0
    n_valid = int(valid.sum())
    prior = np.bincount(labels[valid], minlength=int(labels.max(initial=0)) + 1) / max(n_valid, 1)
    g = grams.select("rec", "g", "n").with_columns(label=lab.gather(grams["rec"].cast(pl.Int64)))
    g = g.filter(pl.col("label") >= 0)
    often = g.group_by("g").agg(df=pl.len()).filter(pl.col("df") >= min_support)
    g = g.join(often.select("g"), on="g", how="semi")
    counts = g.group_by(["g", "label"]).agg(c=pl.len(), n=pl.col("n").first())
    per = (counts.with_columns(df=pl.col("c").sum().over("g"))
           .sort(["g", "c", "label"], descending=[False, True, False])
           .group_by("g", maintain_order=True)
           .agg(pl.col("df").first(), target=pl.col("label").first(), k=pl.col("c").first(), n=pl.col("n").first()))
    if per.height == 0:
        return per.with_columns(share=pl.lit(0.0), p0=pl.lit(0.0), z=pl.lit(0.0), logp=pl.lit(0.0))
    k = per["k"].to_numpy().astype(np.float64)
    dfv = per["df"].to_numpy().astype(np.float64)
    p0 = prior[per["target"].to_numpy()]
    share = k / dfv
    z = (share - p0) / np.sqrt(np.maximum(p0 * (1 - p0), 1e-12) / dfv)
    logp = stats.binom.logsf(k - 1, dfv, p0)
    return per.with_columns(share=pl.Series(share), p0=pl.Series(p0), z=pl.Series(z), logp=pl.Series(logp))


def purity_evidence(k: np.ndarray, n: np.ndarray, p0: np.ndarray, rho: float) -> np.ndarray:
    """Evidence (nats, >= 0) that a feature's label share exceeds what strong natural
    features reach: -log P(X >= k), X ~ Binomial(n, p0 + (1 - p0) * rho). ``rho`` is
    the share of the non-target prior that a natural feature still removes."""
    s = np.asarray(p0, dtype=np.float64) + (1 - np.asarray(p0, dtype=np.float64)) * rho
    ev = -stats.binom.logsf(np.asarray(k, dtype=np.float64) - 1, np.asarray(n, dtype=np.float64), s)
    return np.maximum(ev, 0.0)


# --------------------------------------------------------------------------------------------
# grouping of co-occurring n-grams
# --------------------------------------------------------------------------------------------
def membership(grams: pl.DataFrame, cand: pl.DataFrame, n_records: int) -> tuple[sp.csr_matrix, pl.DataFrame]:
    """Binary records x candidates matrix for the n-grams of ``cand`` (columns
    ``g``, ``cid``); also returns the matching (rec, cid, pos) rows."""
    m = grams.join(cand.select("g", "cid"), on="g")
    X = sp.csr_matrix((np.ones(m.height, dtype=np.float32),
                       (m["rec"].to_numpy().astype(np.int64), m["cid"].to_numpy().astype(np.int64))),
                      shape=(n_records, cand.height))
    return X, m


def cooccurrence_groups(X: sp.csr_matrix, support: np.ndarray, target: np.ndarray, n_records: int,
                        min_overlap: float = 0.3, min_lift: float = 25.0, min_count: int = 3,
                        min_size_ratio: float = 0.2) -> np.ndarray:
    """Connected components of candidates that co-occur far beyond chance.

    Two candidates with the same target are linked when they share at least
    ``max(min_count, min_overlap * min(support))`` records, the smaller has at
    least ``min_size_ratio`` of the larger's support (so a rare n-gram spanning a
    trigger and an ordinary word does not chain them) and their co-occurrence is
    ``min_lift`` times what independence predicts (less when the pair covers a
    large share of the corpus). Returns a component id per candidate."""
    c = X.shape[1]
    if c == 0:
        return np.zeros(0, dtype=np.int64)
    co = (X.T @ X).tocoo()
    a, b, cnt = co.row, co.col, co.data
    sa, sb = support[a].astype(np.float64), support[b].astype(np.float64)
    keep = (a < b) & (target[a] == target[b])
    keep &= cnt >= np.maximum(min_count, min_overlap * np.minimum(sa, sb))
    # comparable sizes: a small n-gram that merely touches two features must not bridge them
    keep &= np.minimum(sa, sb) >= min_size_ratio * np.maximum(sa, sb)
    # lift over independence; a pair covering a large share of the corpus cannot reach a big lift
    need = np.minimum(min_lift, 0.5 * n_records / np.maximum(np.maximum(sa, sb), 1.0))
    keep &= cnt * n_records >= need * sa * sb
    graph = sp.coo_matrix((np.ones(int(keep.sum())), (a[keep], b[keep])), shape=(c, c))
    _, comp = sp.csgraph.connected_components(graph, directed=False)
    return comp.astype(np.int64)


# --------------------------------------------------------------------------------------------
# multiple testing and tails
# --------------------------------------------------------------------------------------------
def benjamini_hochberg(logp: np.ndarray, q: float) -> np.ndarray:
    """Boolean mask of the hypotheses rejected at false-discovery rate ``q``
    (``logp``: natural-log p-values)."""
    logp = np.asarray(logp, dtype=np.float64)
    m = len(logp)
    if m == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(logp)
    thresh = np.log(q * np.arange(1, m + 1) / m)
    ok = logp[order] <= thresh
    if not ok.any():
        return np.zeros(m, dtype=bool)
    last = np.nonzero(ok)[0].max()
    out = np.zeros(m, dtype=bool)
    out[order[: last + 1]] = True
    return out


def tail_pvalues(values: np.ndarray, skip_top: int = 5, tail_size: int = 100,
                 min_tail: int = 20, fallback_scale: float = 1.0) -> np.ndarray:
    """Log p-values of each value under the corpus' own upper tail.

    The largest ``skip_top`` values (possible attacks) are left out; the next
    ``tail_size`` are the sample of strong *natural* values. Excesses over the
    smallest of them are fitted with a generalized Pareto distribution (shape
    clipped to [0, 0.5], so a heavy-tailed corpus widens the null); the p-value of
    a value v is the fitted tail probability of v times the share of the values in
    the tail sample. With fewer than ``min_tail`` values, an exponential tail of
    scale ``fallback_scale`` above the largest sample value is assumed."""
    v = np.asarray(values, dtype=np.float64)
    m = len(v)
    if m == 0:
        return np.zeros(0)
    srt = np.sort(v)[::-1]
    sample = srt[skip_top: skip_top + tail_size]
    if len(sample) < min_tail:
        u = float(sample.min()) if len(sample) else 0.0
        frac = max(len(sample), 1) / m
        return np.minimum(0.0, np.log(frac) - np.maximum(v - u, 0) / fallback_scale)
    u = float(sample[-1])
    exc = sample - u
    scale_mom = max(float(exc.mean()), 1e-6)
    try:
        shape, _, scale = stats.genpareto.fit(exc, floc=0)
    except (ValueError, RuntimeError, FloatingPointError):  # pragma: no cover - scipy fit failure
        shape, scale = 0.0, scale_mom
    if not np.isfinite(shape) or not np.isfinite(scale) or scale <= 0:
        shape, scale = 0.0, scale_mom
    shape = float(np.clip(shape, 0.0, 0.5))
    if shape == 0.0:
        scale = max(scale, scale_mom)
    frac = len(sample) / m
    logsf = stats.genpareto.logsf(np.maximum(v - u, 0), shape, 0, scale)
    return np.minimum(0.0, np.log(frac) + logsf)


# --------------------------------------------------------------------------------------------
# background language reference
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _wordfreq():
    try:
        import wordfreq  # noqa: F401
        from wordfreq import word_frequency
    except ImportError:  # not installed: no background reference
        return None
    return word_frequency


def has_background() -> bool:
    """Whether a background language-frequency reference is available."""
    return _wordfreq() is not None


def background_frequency(tokens: Sequence[str], lang: str = "en", floor: float = 1e-8) -> np.ndarray | None:
    """Frequency of each word in ordinary language (per word of running text),
    at least ``floor``; None when no reference is installed. Tokens without a
    letter get NaN (punctuation and numbers are not judged by rarity)."""
    wf = _wordfreq()
    if wf is None:
        return None
    out = np.full(len(tokens), np.nan)
    for i, t in enumerate(tokens):  # only the few tokens of candidate groups
        if t and any(ch.isalpha() for ch in t):
            try:
                out[i] = max(wf(t, lang), floor)
            except (LookupError, ValueError):  # a language wordfreq does not know
                out[i] = floor
    return out


def log10p(logp: float) -> float:
    """A natural-log p-value as log10 (what findings report)."""
    return float(logp) / math.log(10)
