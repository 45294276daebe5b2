"""A shard's synthetic share, for ``synthetic.text``: estimators, the reference's domain, history.

The check (:mod:`integrity.checks.synthetic_text`) gathers per-record evidence;
this module turns a shard's evidence into a share with an interval:

* :func:`estimate_share`: a classifier of known synthetic text, by adjusted
  classify-and-count with its cross-validated rates;
* the zero-shot share (:func:`integrity.analysis.machine_text.calibrate_shard`
  over :func:`zero_shot_scores`), read against the reference's human records;
* :func:`reference_domain`: whether the reference is of the shard's domain at
  all. Both estimators read "unlike the reference's human text" as "machine
  text", so against a reference of another domain they are wrong in either
  direction (human forum posts read as 93-96% machine text against Debian
  package descriptions). The test compares vocabularies, which domain moves
  and a generator answering the domain's own prompts does not (see the
  function); when the shard is out of the reference's domain,
  :func:`shard_share` reports the explicit-marker lower bound with an upper
  bound of 1, says "reference from another domain", and keeps the calibrated
  estimates only as untrusted side information (the check then warns that it
  could not estimate the share, whatever the evidence says);
* :func:`style_lower_bound`: a lower bound on the share of records unlike the
  reference (any drift counts), and :func:`diversity` (the collapse
  signature);
* :class:`ShareHistory`: the estimates over scans.
"""
from __future__ import annotations

import logging
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from integrity.analysis.machine_text import (VOCAB_COLUMNS, ZS_FEATURES, load_model, reference_percentile, wilson,
                                             zero_shot_logit)
from integrity.analysis.profile import Profile

log = logging.getLogger(__name__)

#: a shard is out of the reference's domain when its words' overlap with the reference is below this share
#: of the reference's own overlap (see reference_domain for the figures it was set from)
MIN_OVERLAP_RATIO = 0.65
#: sampled words a shard and the reference need before their overlap is compared
MIN_VOCAB_WORDS = 60


def acc_share(q: float, tpr: float, fpr: float) -> float:
    """Adjusted classify-and-count: the share that makes q = share·TPR + (1 − share)·FPR."""
    if tpr - fpr <= 1e-6:
        return q
    return float(min(1.0, max(0.0, (q - fpr) / (tpr - fpr))))


def estimate_share(scores: np.ndarray, model: dict) -> dict[str, Any]:
    """Synthetic share of a shard from a known-synthetic classifier's scores: adjusted classify-and-count
    at the model's threshold, the interval mapping the positive share's Wilson interval the same way."""
    n = len(scores)
    thr = float(model.get("threshold", 0.5))
    k = int((scores >= thr).sum())
    q = k / max(1, n)
    tpr, fpr = float(model["tpr"]), float(model["fpr"])
    lo, hi = wilson(k, n)
    auroc = float(model.get("cv_auroc", 0.5))
    conf = "high" if auroc >= 0.95 and n >= 100 and tpr - fpr >= 0.8 else \
        "medium" if auroc >= 0.85 and n >= 30 else "low"
    return {"method": "classifier (adjusted classify-and-count)", "estimate": acc_share(q, tpr, fpr),
            "interval": [acc_share(lo, tpr, fpr), acc_share(hi, tpr, fpr)], "raw_positive_share": q,
            "tpr": tpr, "fpr": fpr, "cv_auroc": auroc, "confidence": conf, "records": n}


def zero_shot_scores(df: pl.DataFrame, prof: Profile | None, model: dict | None = None) -> dict[str, Any] | None:
    """The zero-shot detector's logit of each record and its percentile among the reference's human
    records; None without a reference holding the zero-shot features (profiles older than them), since
    an uncalibrated score means different things in different domains."""
    if prof is None or any(f not in prof.features.columns for f in ZS_FEATURES) \
            or any(f not in df.columns for f in ZS_FEATURES):
        return None
    model = model or load_model()
    ref = zero_shot_logit(model, prof.features)
    logit = zero_shot_logit(model, df)
    return {"model": model, "logit": logit, "reference": ref,
            "percentile": np.nan_to_num(reference_percentile(ref, logit), nan=0.0)}


def combined_record_score(clf: np.ndarray | None, model: dict | None, zs: dict[str, Any] | None) -> np.ndarray | None:
    """One machine-likeness score per record from the evidence there is, each read as a percentile among
    human records (the classifier's P among its cross-validated human scores, the zero-shot score among the
    reference's), averaged. Percentiles, not probabilities: a classifier trained on another domain gives
    P near 0 or 1 to everything and would otherwise drown the zero-shot evidence."""
    parts = []
    if clf is not None and model is not None and model.get("cv_scores_human"):
        parts.append(reference_percentile(np.asarray(model["cv_scores_human"], dtype=np.float64), clf))
    if zs is not None:
        parts.append(zs["percentile"])
    return np.mean(parts, axis=0) if parts else None


# --------------------------------------------------------------------------- the reference's domain


def _word_sample(df: pl.DataFrame) -> pl.DataFrame:
    """(record, word hash) rows of the per-record word samples (nulls dropped)."""
    return (df.select(VOCAB_COLUMNS).with_row_index("r").unpivot(index="r", value_name="h")
            .drop_nulls("h").select("r", "h"))


def reference_domain(df: pl.DataFrame, prof: Profile | None) -> dict[str, Any] | None:
    """Is the shard of the reference's domain? Compares the shard's content words with the reference's.

    Each record carries a MinHash-style sample of its content words
    (:data:`integrity.analysis.machine_text.VOCAB_COLUMNS`). The reference's own
    overlap is the share of its sampled words that another reference record
    sampled too; the shard's is the share of its sampled words that any reference
    record sampled. Their ratio, averaged over 40-record shards in
    ``benchmarks/drift_synthetic.py --only cross-domain`` (M4 arxiv and reddit
    against each other and against Debian descriptions, references of
    50-2,000 records), was 0.93-1.02 for held-out human text of the
    reference's domain, 0.69 (reddit) and 1.24 (arxiv) for Llama 2 answers to
    that domain's prompts (a generator writes about the topic it is asked
    about, in words of its own), 0.16-0.58 for human text of another domain
    and 0.14-0.70 for Llama 2 text of another domain; the threshold was set
    on these same sets, there is no other. Machine text of the reference's own
    domain can therefore be taken for another domain (38% of all-machine
    reddit shards there). The shard is ``out_of_domain``
    when the ratio is below :data:`MIN_OVERLAP_RATIO`. None when either side
    lacks the word samples (profiles and features older than them) or has
    fewer than :data:`MIN_VOCAB_WORDS` of them.
    """
    if prof is None or any(c not in df.columns or c not in prof.features.columns for c in VOCAB_COLUMNS):
        return None
    ref, cur = _word_sample(prof.features), _word_sample(df)
    if ref.height < MIN_VOCAB_WORDS or cur.height < MIN_VOCAB_WORDS:
        return None
    counts = ref.group_by("h").agg(docs=pl.col("r").n_unique())
    ref_overlap = float(ref.join(counts, on="h", how="left")["docs"].ge(2).mean())
    k = int(cur.join(counts, on="h", how="semi").height)
    overlap = k / cur.height
    ratio = overlap / ref_overlap if ref_overlap > 0 else 0.0
    out = bool(ref_overlap > 0 and ratio < MIN_OVERLAP_RATIO)
    return {"out_of_domain": out, "overlap": overlap, "reference_overlap": ref_overlap,
            "ratio": ratio, "min_ratio": MIN_OVERLAP_RATIO, "words": int(cur.height),
            "reference_words": int(ref.height),
            "method": "content-word overlap with the reference (MinHash-style word samples) against the "
                      "reference's own"}


# --------------------------------------------------------------------------- the estimate


def shard_share(n: int, markers: int, clf_share: dict | None, zs_share: dict | None,
                domain: dict | None) -> dict[str, Any]:
    """The shard's share from the evidence there is: the classifier's (verdict) with the zero-shot one
    beside it, else the zero-shot one, else the explicit markers' lower bound. Explicit markers are a floor
    everywhere. When ``domain`` says the shard is out of the reference's domain, neither calibrated estimate
    is trusted (both read another domain's human text as machine text): the markers' lower bound is
    reported with an upper bound of 1, the calibrated estimates kept under ``not_trusted``."""
    share_m = markers / max(1, n)
    lo_m = wilson(markers, n)[0] if markers else 0.0
    if domain is not None and domain["out_of_domain"] and (clf_share is not None or zs_share is not None):
        untrusted = {k: {f: v[f] for f in ("method", "estimate", "interval")}
                     for k, v in (("classifier", clf_share), ("zero_shot", zs_share)) if v is not None}
        return {"method": "explicit markers (boilerplate, watermark): a lower bound; reference from another "
                          "domain, so the calibrated share is not trusted",
                "estimate": share_m, "interval": [lo_m, 1.0], "confidence": "low", "not_trusted": untrusted,
                "reference_from_another_domain": True,
                "note": (f"reference from another domain: the shard's content words overlap the reference's "
                         f"{domain['ratio']:.0%} as much as the reference's own (below {MIN_OVERLAP_RATIO:.0%}); "
                         "read against another domain's human text, ordinary text of this domain looks machine-"
                         "made (or human), so the calibrated estimates are not used; build the reference from "
                         "human text of this feed")}
    if clf_share is not None:
        est = dict(clf_share)
        if zs_share is not None:
            # a second opinion that does not depend on the known-synthetic sample's domain; the
            # verdict stays with the classifier, whose rates were measured on that sample
            est["zero_shot"] = zs_share
    elif zs_share is not None:
        est = dict(zs_share)
        est["note"] = ("no synthetic classifier in the reference profile: zero-shot evidence read against the "
                       "reference's human records, valid when the reference is of the shard's own domain")
    else:
        return {"method": "explicit markers (boilerplate, watermark): a lower bound", "estimate": share_m,
                "interval": [wilson(markers, n)[0], 1.0], "confidence": "low",
                "note": "no synthetic classifier in the reference profile; records without markers may still be "
                        "machine-generated"}
    est["estimate"] = max(est["estimate"], share_m)
    est["interval"] = [max(est["interval"][0], lo_m), max(est["interval"][1], est["estimate"])]
    return est


def style_lower_bound(cur: np.ndarray, ref: np.ndarray, rng: np.random.Generator) -> dict[str, Any] | None:
    """Held-out KS distance of a style classifier's scores, minus its 95% critical value:
    a lower bound on the share of shard records unlike the reference."""
    from sklearn.linear_model import LogisticRegression

    n, m = len(cur), len(ref)
    if n < 20 or m < 20:
        return None
    x = np.vstack([cur, ref])
    med = np.nanmedian(x, axis=0)
    x = np.where(np.isfinite(x), x, np.where(np.isfinite(med), med, 0.0))
    y = np.r_[np.ones(n), np.zeros(m)]
    half = np.zeros(n + m, dtype=bool)
    half[rng.permutation(n)[: n // 2]] = True
    half[n + rng.permutation(m)[: m // 2]] = True
    mu, sd = x[half].mean(0), x[half].std(0)
    z = (x - mu) / np.where(sd > 1e-12, sd, 1.0)
    lr = LogisticRegression(C=0.5, max_iter=2000, class_weight="balanced").fit(z[half], y[half])
    s = lr.decision_function(z[~half])
    yt = y[~half]
    a, b = np.sort(s[yt == 1]), np.sort(s[yt == 0])
    grid = np.concatenate([a, b])
    d = float(np.max(np.abs(np.searchsorted(a, grid, side="right") / len(a)
                            - np.searchsorted(b, grid, side="right") / len(b))))
    crit = 1.36 * math.sqrt((len(a) + len(b)) / (len(a) * len(b)))
    return {"method": "style classifier KS distance minus 95% critical value",
            "ks": d, "critical": crit, "lower_bound": max(0.0, d - crit)}


def diversity(df: pl.DataFrame, prof: Profile) -> dict[str, Any]:
    """Shard vs reference on diversity features, and the share of records in the reference's 5% tails
    (collapsing data loses its tails: that share falls below 10%)."""
    out: dict[str, Any] = {}
    tails = []
    for f in ("distinct_1", "distinct_2", "rep_3gram", "compression_ratio", "sent_len_cv", "log_words"):
        if f not in df.columns:
            continue
        meta = prof.meta["features"].get(f, {})
        v = df[f].cast(pl.Float64).drop_nulls().to_numpy()
        q = meta.get("quantiles", {})
        if v.size == 0 or "q05" not in q:
            continue
        tail = float(((v < q["q05"]) | (v > q["q95"])).mean())
        tails.append(tail)
        out[f] = {"shard_mean": float(v.mean()), "ref_mean": meta.get("mean"), "tail_share": tail}
    out["mean_tail_share"] = float(np.mean(tails)) if tails else None
    out["expected_tail_share"] = 0.10
    return out


class ShareHistory:
    """Synthetic share per shard over scans, in ``STATE_DIR/synthetic/history.parquet``."""

    SCHEMA = {"at": pl.Utf8, "scan_id": pl.Utf8, "shard": pl.Utf8, "estimate": pl.Float64, "lower": pl.Float64,
              "upper": pl.Float64, "method": pl.Utf8}

    def __init__(self, state_dir: Path, nights: int):
        self.path = state_dir / "synthetic" / "history.parquet"
        self.nights = nights
        self._frame: pl.DataFrame | None = None

    def frame(self) -> pl.DataFrame:
        """Every stored estimate (empty when there is no history or it is unreadable)."""
        if self._frame is None:
            try:
                self._frame = pl.read_parquet(self.path) if self.path.exists() else pl.DataFrame(schema=self.SCHEMA)
            except Exception:  # a damaged history must not stop a scan
                log.warning("synthetic history %s is unreadable; starting a new one", self.path)
                self._frame = pl.DataFrame(schema=self.SCHEMA)
        return self._frame

    def for_shard(self, shard: str) -> list[dict]:
        """The shard's last ``nights`` estimates, oldest first."""
        f = self.frame().filter(pl.col("shard") == shard).sort("at").tail(self.nights)
        return f.select("at", "scan_id", "estimate", "lower", "upper").to_dicts()

    def append(self, rows: list[dict]) -> None:
        """Add this scan's estimates (atomic write)."""
        if not rows:
            return
        at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        new = pl.DataFrame([{**r, "at": at} for r in rows], schema=self.SCHEMA)
        keep = 400 * max(1, new.height)  # bounded: a few hundred scans of this many shards
        frame = pl.concat([self.frame(), new]).tail(keep)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".parquet.tmp")
        frame.write_parquet(tmp)
        os.replace(tmp, self.path)
        self._frame = frame
