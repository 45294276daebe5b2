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

Corpus pass, per shard (the estimators live in :mod:`integrity.analysis.synthetic_share`):

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
* **the reference's domain**: both calibrated estimates read "unlike the
  reference's human text" as machine text, so each shard's content words are
  compared with the reference's first
  (:func:`integrity.analysis.synthetic_share.reference_domain`). A shard out of
  the reference's domain gets the explicit-marker lower bound with an upper
  bound of 1, its method says "reference from another domain", the calibrated
  estimates are kept under ``not_trusted``, and no classifier or zero-shot
  record evidence is reported (markers still are); the finding is a `warn`
  (report only) saying the share cannot be estimated against that reference;
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

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field

from connectors.schema import TEXT_FIELDS
from integrity.analysis.drift import dumps
from integrity.analysis.features import STYLE_FEATURES, boilerplate_patterns, cached_batch_features, record_text
from integrity.analysis.machine_text import (VOCAB_COLUMNS, ZS_FEATURES, calibrate_shard, load_model,
                                             zero_shot_features)
from integrity.analysis.profile import Profile, ProfileError, classifier_scores, load_profile
from integrity.analysis.synthetic_share import (ShareHistory, diversity, estimate_share, reference_domain, shard_share,
                                                style_lower_bound, zero_shot_scores)
from integrity.checks.base import CORPUS_FINDING_COLUMNS, Check, CheckConfigError, CheckOptions, CheckOutput, CorpusContext
from integrity.checks.options import Severity

FEATURE_SCHEMA: dict[str, pl.DataType] = {
    "record_id": pl.Utf8, "row": pl.Int64, **{f: pl.Float64 for f in STYLE_FEATURES},
    "bp_strong": pl.Int16, "bp_weak": pl.Int16, "bp_phrase": pl.Utf8, "bp_start": pl.Int32, "bp_end": pl.Int32,
    "wm_tokens": pl.Int32, "wm_green": pl.Int32, "wm_z": pl.Float64, **{f: pl.Float64 for f in ZS_FEATURES},
    **{f: pl.UInt32 for f in VOCAB_COLUMNS},
}
_STRONG, _WEAK = boilerplate_patterns()


class SyntheticTextCheck(Check):
    name = "synthetic.text"
    report_section = "synthetic_text"
    description = ("Machine-generated text: generator boilerplate, KGW watermark z-test, a classifier trained on "
                   "the reference vs known synthetic text, zero-shot evidence read against the reference's human "
                   "records; per-shard synthetic share against a policy maximum.")
    requires = TEXT_FIELDS
    default_severity = "info"
    corpus_level = True
    version = 2  # 2: per-record content-word samples (zs_vocab_*) for the reference-domain test

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
            parts.append(zero_shot_features(pl.Series("t", texts, dtype=pl.Utf8), vocabulary=True))
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
        history = ShareHistory(Path(ctx.state_dir), int(self.options["history_nights"]))
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
        wm_z = df["wm_z"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        wm_hit = np.nan_to_num(wm_z, nan=-np.inf) >= zthr
        model = prof.synthetic_classifier if prof is not None else None
        clf = classifier_scores(model, df) if model else None
        zs = zero_shot_scores(df, prof, self._zs_model) if o["zero_shot"] else None
        domain = reference_domain(df, prof) if clf is not None or zs is not None else None
        out_of_domain = bool(domain and domain["out_of_domain"])
        # against another domain's human text the calibrated per-record scores say "unlike that domain",
        # not "machine-made": only explicit markers are reported then
        recs = self._record_findings(df, strong_bp, wm_z, wm_hit, None if out_of_domain else clf, model,
                                     None if out_of_domain else zs)
        # ---- shard estimate
        markers = int((strong_bp | wm_hit).sum())
        res: dict[str, Any] = {"kind": "shard", "records": n, "max_share": float(o["max_share"]),
                               "markers": {"strong_boilerplate": int(strong_bp.sum()),
                                           "weak_boilerplate": int((df["bp_weak"].fill_null(0).to_numpy() > 0).sum()),
                                           "watermarked": int(wm_hit.sum()), "share": markers / max(1, n)}}
        if self._wm is not None or np.isfinite(wm_z).any():
            res["watermark"] = self._shard_watermark(df, zthr)
        zs_share = calibrate_shard(zs["model"], zs["logit"], zs["reference"]) if zs is not None else None
        if zs_share is not None and zs_share["estimate"] is None:
            zs_share = None
        res.update(shard_share(n, markers, estimate_share(clf, model) if clf is not None else None, zs_share, domain))
        if domain is not None:
            res["reference_domain"] = domain
        if o["zero_shot"] and prof is not None and zs is None:
            res["zero_shot_note"] = ("the reference profile has no zero-shot features (built before they existed): "
                                     "rebuild it with `integrity profile` to get zero-shot evidence")
        if prof is not None:
            ref = prof.features
            if ref.height > int(o["max_reference_records"]):
                ref = ref.sample(int(o["max_reference_records"]), seed=seed)
            cols = [c for c in STYLE_FEATURES if c in ref.columns]
            lb = style_lower_bound(df.select(cols).to_numpy().astype(float), ref.select(cols).to_numpy().astype(float),
                                   np.random.default_rng(seed))
            if lb is not None:
                res["unlike_reference"] = lb
            res["diversity"] = diversity(df, prof)
        res["severity"] = self._verdict(res, zero_shot_only=clf is None and zs_share is not None and not out_of_domain)
        res["reasons"] = self._reasons(res)
        if out_of_domain and res["severity"] == "info":
            # the check could not do its job on this shard: say so (report only), whatever the evidence says
            res["severity"] = "warn"
            res["reasons"] = [f"reference from another domain, or text of another kind: this shard's content words "
                              f"overlap the reference's {domain['ratio']:.0%} as much as the reference's own (below "
                              f"{domain['min_ratio']:.0%}), so its synthetic share cannot be estimated against this "
                              "reference (the calibrated estimates are kept under not_trusted); build the reference "
                              "from human text of this feed, or check a sample by hand if it is this feed's"]
        res["note"] = "an absent signal does not show human origin; estimates carry their method and confidence"
        return res, recs

    def _verdict(self, res: dict, zero_shot_only: bool) -> str:
        """critical (verdict warn, gate fails) when the estimate is above the maximum; warn (report only)
        when the interval reaches above it. The zero-shot rate of true positives is an assumed range: with
        that estimate only an interval wholly above the maximum fails the gate; an estimate above it warns."""
        mx = float(self.options["max_share"])
        lower, upper = float(res["interval"][0]), float(res["interval"][1])
        if zero_shot_only:
            return "critical" if lower > mx else "warn" if res["estimate"] > mx else "info"
        return "critical" if res["estimate"] > mx else "warn" if upper > mx and res.get("confidence") != "low" else "info"

    def _reasons(self, res: dict) -> list[str]:
        if res["severity"] == "info":
            return []
        lower, upper = res["interval"]
        return [f"estimated synthetic share {res['estimate']:.1%} (95% interval {lower:.1%}–{upper:.1%}, "
                f"{res['method']}) " + ("above" if res["severity"] == "critical" else "may be above")
                + f" max_share {float(self.options['max_share']):.0%}"]

    def _shard_watermark(self, df: pl.DataFrame, zthr: float) -> dict[str, Any]:
        """The shard's pooled watermark z-test over all its tokens."""
        from integrity.analysis.watermark import p_from_z, z_score

        tok = int(df["wm_tokens"].fill_null(0).sum())
        green = int(df["wm_green"].fill_null(0).sum())
        gamma = float((self.options.get("watermark") or {}).get("gamma", 0.25))
        shard_z = z_score(green, tok, gamma)
        return {"tokens": tok, "green": green, "gamma": gamma, "shard_z": shard_z, "p_value": p_from_z(shard_z),
                "z_threshold": zthr}

    def _record_findings(self, df: pl.DataFrame, strong_bp: np.ndarray, wm_z: np.ndarray, wm_hit: np.ndarray,
                         clf: np.ndarray | None, model: dict | None, zs: dict[str, Any] | None) -> list[dict]:
        """Record findings from the evidence given (markers always; classifier and zero-shot when passed)."""
        o = self.options
        weak_bp = df["bp_weak"].fill_null(0).to_numpy() > 0
        zs_hit = zs["percentile"] >= float(o["zero_shot_record_min"]) if zs is not None else np.zeros(df.height, bool)
        thr = float(model.get("threshold", 0.5)) if model else 0.5
        score = np.where(strong_bp, 0.95, 0.0)
        score = np.maximum(score, np.where(weak_bp, 0.6, 0.0))
        score = np.maximum(score, np.where(wm_hit, 0.99, 0.0))
        if clf is not None:
            score = np.maximum(score, np.where(clf >= thr, clf, 0.0))
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
            if clf is not None and clf[i] >= thr:
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
        return recs
