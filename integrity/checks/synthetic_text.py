"""``synthetic.text``: evidence of machine-generated text, per record and per shard.

Model collapse (Shumailov et al. 2024; Alemohammad et al. 2024) starts when a
pipeline quietly feeds model output back into training data. This check
reports what cheap, honest signals say; **the absence of a signal never
shows that a text is human**, and every estimate carries its method and a
confidence.

Per record (shard pass, no reference needed):

* known generator boilerplate ("As an AI language model", "Certainly! Here's",
  "I hope this helps", ...; strong and weak lists in :mod:`integrity.analysis.features`),
  with the matched span as evidence;
* a KGW green-list watermark z-test (:mod:`integrity.analysis.watermark`) when the
  policy gives the generator's ``key`` (or ``key_env``) and ``tokenizer``;
* the style and diversity features of :data:`integrity.analysis.features.STYLE_FEATURES`.

Corpus pass, per shard:

* with a reference profile that holds a synthetic classifier (built by
  ``integrity profile TRUSTED --synthetic-sample KNOWN_SYNTHETIC``): each
  record's P(synthetic) from that logistic regression, and the shard's
  synthetic share by *adjusted classify-and-count*,
  share = (q − FPR) / (TPR − FPR), with q the share of records at or above
  the threshold and TPR/FPR from the classifier's cross-validation; the
  interval maps q's Wilson 95% interval the same way;
* with a reference profile (of the shard's own domain) but no classifier: the
  zero-shot detector of :mod:`integrity.analysis.machine_text` (word surprisal
  under a general unigram model, its burstiness, punctuation profile), its
  records read as percentiles of the reference's human records, and the share
  by adjusted classify-and-count at the reference's 80th percentile over a
  *range* of true-positive rates (no machine text of the domain is known), so
  the verdict is ``critical`` only when the whole interval lies above
  ``max_share`` (``warn`` when the estimate does). With a classifier too, the
  zero-shot estimate is reported beside the classifier's as ``zero_shot``, and
  each record's ``zero_shot`` evidence (reference percentile at or above
  ``zero_shot_record_min``) joins the others;
* otherwise the share of records with explicit markers (boilerplate,
  watermark) — a lower bound — and, with any reference profile, a
  style lower bound: the held-out KS distance between a style classifier's
  scores on the shard and on the human reference, minus its 95% critical
  value. A shard that is a mix (1 − π)·human + π·other has total-variation
  distance at most π from the human reference, so this bounds the share of
  records *unlike the reference* from below (any drift counts, not only
  machine text);
* diversity against the reference (the collapse signature): mean distinct-n
  and repetition, and the share of records in the reference's 5% tails.

Verdict: ``critical`` when the estimate is above ``max_share`` (the shard's
verdict becomes warn and the gate fails), ``warn`` when only the interval
reaches above it (report only), else ``info``; the finding's score is the
estimate. Record findings are ``warn`` for strong evidence (strong
boilerplate, watermark z >= ``z_threshold``) and ``info`` otherwise. Each
scan appends the shard estimates to ``STATE_DIR/synthetic/history.parquet``
and the shard finding carries the last nights, for the report.
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
import pyarrow as pa
from pydantic import Field

from connectors.schema import TEXT_FIELDS
from integrity.analysis.drift import dumps
from integrity.analysis.features import STYLE_FEATURES, boilerplate_patterns, cached_batch_features, record_text
from integrity.analysis.machine_text import (ZS_FEATURES, calibrate_shard, load_model, reference_percentile,
                                             zero_shot_features, zero_shot_logit, wilson)
from integrity.analysis.profile import Profile, ProfileError, classifier_scores, load_profile
from integrity.checks.base import CORPUS_FINDING_COLUMNS, Check, CheckConfigError, CheckOptions, CheckOutput, CorpusContext
from integrity.checks.options import Severity

log = logging.getLogger(__name__)

FEATURE_SCHEMA: dict[str, pl.DataType] = {
    "record_id": pl.Utf8, "row": pl.Int64, **{f: pl.Float64 for f in STYLE_FEATURES},
    "bp_strong": pl.Int16, "bp_weak": pl.Int16, "bp_phrase": pl.Utf8, "bp_start": pl.Int32, "bp_end": pl.Int32,
    "wm_tokens": pl.Int32, "wm_green": pl.Int32, "wm_z": pl.Float64, **{f: pl.Float64 for f in ZS_FEATURES},
}
_STRONG, _WEAK = boilerplate_patterns()


def acc_share(q: float, tpr: float, fpr: float) -> float:
    """Adjusted classify-and-count: the share that makes q = share·TPR + (1 − share)·FPR."""
    if tpr - fpr <= 1e-6:
        return q
    return float(min(1.0, max(0.0, (q - fpr) / (tpr - fpr))))


def estimate_share(scores: np.ndarray, model: dict) -> dict[str, Any]:
    """Synthetic share of a shard from classifier scores (see the module docstring)."""
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


class SyntheticTextCheck(Check):
    name = "synthetic.text"
    report_section = "synthetic_text"
    description = ("Machine-generated text: generator boilerplate, KGW watermark z-test, a classifier trained on "
                   "the reference vs known synthetic text, zero-shot evidence read against the reference's human "
                   "records; per-shard synthetic share against a policy maximum.")
    requires = TEXT_FIELDS
    default_severity = "info"
    corpus_level = True
    version = 1

    class Options(CheckOptions):
        max_share: float = Field(0.2, ge=0, le=1, description="highest acceptable synthetic share of a shard")
        record_min_score: float = Field(0.5, ge=0, le=1, description="records with weaker evidence are not reported")
        classifier_record_severity: Severity = Field("info", description="severity of a record flagged by the classifier alone")
        z_threshold: float = Field(4.0, description="watermark z at which a record counts as watermarked")
        watermark: dict[str, Any] | None = Field(None, description="e.g. {key_env: WM_KEY, tokenizer: "
                                                 "/models/gen/tokenizer.json, gamma: 0.25, scheme: prf | kgw-torch, "
                                                 "vocab_size: 32000}")
        max_reference_records: int = Field(2000, ge=1, description="reference records the classifier trains on")
        history_nights: int = Field(14, ge=0, description="past estimates shown per shard in the report")
        zero_shot: bool = Field(True, description="zero-shot evidence (word surprisal, burstiness, punctuation) read "
                                "against the reference's human records; needs --reference")
        zero_shot_record_min: float = Field(0.99, ge=0, le=1, description="reference percentile at which a record gets "
                                            "zero_shot evidence")
        zero_shot_model: str | None = Field(None, description="a detector of your own (benchmarks/fit_machine_text.py); "
                                            "null: shipped")

    def __init__(self, options=None, shard=None):
        super().__init__(options, shard)
        wm = self.options.get("watermark")
        self._wm = None
        if wm:
            from integrity.analysis.watermark import WatermarkConfigError, WatermarkDetector

            try:
                self._wm = WatermarkDetector.from_options({k: v for k, v in wm.items() if k != "z_threshold"})
            except WatermarkConfigError as e:
                raise CheckConfigError(f"check {self.name!r}: option 'watermark': {e}", check=self.name,
                                       problems=[("watermark", str(e))]) from None
        self._zs_model = None
        if self.options.get("zero_shot_model"):
            try:
                self._zs_model = load_model(Path(self.options["zero_shot_model"]).expanduser())
            except (OSError, ValueError) as e:
                problem = (f"{self.options['zero_shot_model']}: cannot be read ({e}); write one with "
                           "benchmarks/fit_machine_text.py or remove the option to use the shipped detector")
                raise CheckConfigError(f"check {self.name!r}: option 'zero_shot_model': {problem}", check=self.name,
                                       problems=[("zero_shot_model", problem)]) from None

    # -- per shard ----------------------------------------------------------
    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        feats = cached_batch_features(batch)
        if feats is None:
            return CheckOutput()
        texts = record_text(batch).to_pylist()
        n = len(texts)
        strong = np.zeros(n, np.int16)
        weak = np.zeros(n, np.int16)
        phrase: list[str | None] = [None] * n
        start: list[int | None] = [None] * n
        end: list[int | None] = [None] * n
        candidates = np.flatnonzero(feats["boilerplate"].fill_null(0).to_numpy() > 0)
        for i in candidates:
            t = texts[i][:20_000]
            ms = list(_STRONG.finditer(t))
            mw = list(_WEAK.finditer(t))
            strong[i], weak[i] = len(ms), len(mw)
            first = (ms or mw)[0] if (ms or mw) else None
            if first is not None:
                phrase[i], start[i], end[i] = first.group(0)[:80], first.start(), first.end()
        cols: dict[str, Any] = {"bp_strong": strong, "bp_weak": weak, "bp_phrase": phrase, "bp_start": start,
                                "bp_end": end}
        if self._wm is not None:
            scores = [self._wm.score(t) for t in texts]
            cols["wm_tokens"] = [s.tokens for s in scores]
            cols["wm_green"] = [s.green for s in scores]
            cols["wm_z"] = [s.z for s in scores]
        extra = pl.DataFrame(cols, schema={k: FEATURE_SCHEMA[k] for k in cols})
        parts = [feats.select("record_id", "row", *STYLE_FEATURES), extra]
        if self.options["zero_shot"]:
            parts.append(zero_shot_features(pl.Series("t", texts, dtype=pl.Utf8)))
        df = pl.concat(parts, how="horizontal")
        return CheckOutput(features=df.select([(pl.col(c).cast(t) if c in df.columns else pl.lit(None, dtype=t)).alias(c)
                                               for c, t in FEATURE_SCHEMA.items()]))

    # -- corpus -----------------------------------------------------------------
    def corpus_pass(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame | None:
        prof: Profile | None = None
        if ctx.reference is not None:
            try:
                prof = load_profile(ctx.reference)
            except ProfileError as e:
                raise ProfileError(f"synthetic.text: {e}") from None
        shards = features.select("shard", "shard_index").unique().sort("shard_index").collect()["shard"].to_list()
        history = _History(Path(ctx.state_dir), int(self.options["history_nights"]))
        rows: list[dict] = []
        estimates: list[dict] = []
        for i, shard in enumerate(shards):
            df = ctx.shard_frame(self.name, shard, features).collect()
            res, recs = self.assess_shard(df, prof, seed=i)
            if prof is None and not recs and "watermark" not in res:
                continue  # nothing was measured: no reference, no marker, no watermark test
            estimates.append({"shard": shard, "scan_id": ctx.scan_id, "estimate": res["estimate"],
                              "lower": res["interval"][0], "upper": res["interval"][1], "method": res["method"]})
            res["history"] = history.for_shard(shard)
            rows.append({"shard": shard, "record_id": None, "score": res["estimate"], "severity": res["severity"],
                         "detail": dumps(res)})
            rows.extend({**r, "shard": shard} for r in recs)
        history.append(estimates)
        return pl.DataFrame(rows, schema=CORPUS_FINDING_COLUMNS) if rows else None

    def assess_shard(self, df: pl.DataFrame, prof: Profile | None, seed: int = 0) -> tuple[dict, list[dict]]:
        """(shard-level result, record findings) for one shard's features."""
        o = self.options
        n = df.height
        zthr = float((o.get("watermark") or {}).get("z_threshold", o["z_threshold"]))
        strong_bp = df["bp_strong"].fill_null(0).to_numpy() > 0
        weak_bp = df["bp_weak"].fill_null(0).to_numpy() > 0
        wm_z = df["wm_z"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        wm_hit = np.nan_to_num(wm_z, nan=-np.inf) >= zthr
        model = prof.synthetic_classifier if prof is not None else None
        clf = classifier_scores(model, df) if model else None
        zs = zero_shot_scores(df, prof, self._zs_model) if o["zero_shot"] else None
        zs_hit = zs["percentile"] >= float(o["zero_shot_record_min"]) if zs is not None else np.zeros(n, bool)
        # ---- record evidence
        score = np.where(strong_bp, 0.95, 0.0)
        score = np.maximum(score, np.where(weak_bp, 0.6, 0.0))
        score = np.maximum(score, np.where(wm_hit, 0.99, 0.0))
        if clf is not None:
            score = np.maximum(score, np.where(clf >= float(model.get("threshold", 0.5)), clf, 0.0))
        if zs is not None:
            score = np.maximum(score, np.where(zs_hit, zs["percentile"], 0.0))
        recs: list[dict] = []
        ids = df["record_id"].to_list()
        phrase, bs, be = df["bp_phrase"].to_list(), df["bp_start"].to_list(), df["bp_end"].to_list()
        for i in np.flatnonzero(score >= float(o["record_min_score"])):
            ev: list[dict] = []
            if phrase[i] is not None:
                ev.append({"kind": "boilerplate", "strength": "strong" if strong_bp[i] else "weak",
                           "phrase": phrase[i]})
            if wm_hit[i]:
                ev.append({"kind": "watermark", "z": float(wm_z[i]), "tokens": int(df["wm_tokens"][int(i)] or 0)})
            if clf is not None and clf[i] >= float(model.get("threshold", 0.5)):
                ev.append({"kind": "classifier", "p_synthetic": float(clf[i]), "cv_auroc": model.get("cv_auroc")})
            if zs_hit[i]:
                ev.append({"kind": "zero_shot", "reference_percentile": float(zs["percentile"][i]),
                           "logit": float(zs["logit"][i])})
            strong = bool(strong_bp[i] or wm_hit[i])
            detail: dict[str, Any] = {"evidence": ev, "strong": strong,
                                      "note": "evidence of machine generation, not proof"}
            if phrase[i] is not None and bs[i] is not None:
                detail["matches"] = [{"start": int(bs[i]), "end": int(be[i]), "field": "text"}]
            sev = "warn" if strong else (o["classifier_record_severity"] if clf is not None and clf[i] >= 0.5 else "info")
            recs.append({"record_id": ids[i], "score": float(score[i]), "severity": sev, "detail": dumps(detail)})
        # ---- shard estimate
        markers = int((strong_bp | wm_hit).sum())
        lo_m, hi_m = wilson(markers, n)
        res: dict[str, Any] = {"kind": "shard", "records": n, "max_share": float(o["max_share"]),
                               "markers": {"strong_boilerplate": int(strong_bp.sum()), "weak_boilerplate": int(weak_bp.sum()),
                                           "watermarked": int(wm_hit.sum()), "share": markers / max(1, n)}}
        if self._wm is not None or np.isfinite(wm_z).any():
            tok = df["wm_tokens"].fill_null(0).sum()
            green = df["wm_green"].fill_null(0).sum()
            from integrity.analysis.watermark import p_from_z, z_score

            gamma = float((o.get("watermark") or {}).get("gamma", 0.25))
            shard_z = z_score(int(green), int(tok), gamma)  # not `zs`: that name holds the zero-shot scores
            res["watermark"] = {"tokens": int(tok), "green": int(green), "gamma": gamma, "shard_z": shard_z,
                                "p_value": p_from_z(shard_z), "z_threshold": zthr}
        zs_share = calibrate_shard(zs["model"], zs["logit"], zs["reference"]) if zs is not None else None
        if zs_share is not None and zs_share["estimate"] is None:
            zs_share = None
        if clf is not None:
            est = estimate_share(clf, model)
            if zs_share is not None:
                # a second opinion that does not depend on the known-synthetic sample's domain; the
                # verdict stays with the classifier, whose rates were measured on that sample
                est["zero_shot"] = zs_share
            # explicit markers are a floor for the estimate
            est["estimate"] = max(est["estimate"], markers / max(1, n))
            est["interval"] = [max(est["interval"][0], lo_m if markers else 0.0), max(est["interval"][1], est["estimate"])]
        elif zs_share is not None:
            est = dict(zs_share)
            est["estimate"] = max(est["estimate"], markers / max(1, n))
            est["interval"] = [max(est["interval"][0], lo_m if markers else 0.0), max(est["interval"][1], est["estimate"])]
            est["note"] = ("no synthetic classifier in the reference profile: zero-shot evidence read against the "
                           "reference's human records, valid when the reference is of the shard's own domain")
        else:
            est = {"method": "explicit markers (boilerplate, watermark): a lower bound", "estimate": markers / max(1, n),
                   "interval": [lo_m, 1.0], "confidence": "low",
                   "note": "no synthetic classifier in the reference profile; records without markers may still be "
                           "machine-generated"}
        res.update(est)
        if o["zero_shot"] and prof is not None and zs is None:
            res["zero_shot_note"] = ("the reference profile has no zero-shot features (built before they existed): "
                                     "rebuild it with `integrity profile` to get zero-shot evidence")
        if prof is not None:
            rng = np.random.default_rng(seed)
            ref = prof.features
            if ref.height > int(o["max_reference_records"]):
                ref = ref.sample(int(o["max_reference_records"]), seed=seed)
            cols = [c for c in STYLE_FEATURES if c in ref.columns]
            lb = style_lower_bound(df.select(cols).to_numpy().astype(float), ref.select(cols).to_numpy().astype(float), rng)
            if lb is not None:
                res["unlike_reference"] = lb
            res["diversity"] = _diversity(df, prof)
        # ---- verdict
        mx = float(o["max_share"])
        lower = float(res["interval"][0])
        upper = float(res["interval"][1])
        # critical (verdict warn, gate fails) when the estimate is above the maximum; warn (report
        # only) when the interval reaches above it
        if clf is None and zs_share is not None:
            # the zero-shot rate of true positives is an assumed range: only an interval wholly above the
            # maximum fails the gate; an estimate above it is reported
            res["severity"] = "critical" if lower > mx else "warn" if res["estimate"] > mx else "info"
        else:
            res["severity"] = "critical" if res["estimate"] > mx else "warn" if upper > mx and res.get("confidence") != "low" else "info"
        res["reasons"] = ([f"estimated synthetic share {res['estimate']:.1%} (95% interval {lower:.1%}–"
                           f"{upper:.1%}, {res['method']}) "
                           + ("above" if res["severity"] == "critical" else "may be above") + f" max_share {mx:.0%}"]
                          if res["severity"] != "info" else [])
        res["note"] = "an absent signal does not show human origin; estimates carry their method and confidence"
        return res, recs


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


def _diversity(df: pl.DataFrame, prof: Profile) -> dict[str, Any]:
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


class _History:
    """Synthetic share per shard over scans, in ``STATE_DIR/synthetic/history.parquet``."""

    SCHEMA = {"at": pl.Utf8, "scan_id": pl.Utf8, "shard": pl.Utf8, "estimate": pl.Float64, "lower": pl.Float64,
              "upper": pl.Float64, "method": pl.Utf8}

    def __init__(self, state_dir: Path, nights: int):
        self.path = state_dir / "synthetic" / "history.parquet"
        self.nights = nights
        self._frame: pl.DataFrame | None = None

    def frame(self) -> pl.DataFrame:
        if self._frame is None:
            try:
                self._frame = pl.read_parquet(self.path) if self.path.exists() else pl.DataFrame(schema=self.SCHEMA)
            except Exception:  # a damaged history must not stop a scan
                log.warning("synthetic history %s is unreadable; starting a new one", self.path)
                self._frame = pl.DataFrame(schema=self.SCHEMA)
        return self._frame

    def for_shard(self, shard: str) -> list[dict]:
        f = self.frame().filter(pl.col("shard") == shard).sort("at").tail(self.nights)
        return f.select("at", "scan_id", "estimate", "lower", "upper").to_dicts()

    def append(self, rows: list[dict]) -> None:
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
