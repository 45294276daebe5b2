"""``distribution.drift``: each shard against a trusted reference profile.

Per shard pass: the cheap text features of every record (:mod:`integrity.analysis.features`),
the label, the fairness lexicon flags (:mod:`integrity.analysis.fairness`), and a
deterministic bottom-k sample of records (``embed_sample`` of them, by a seeded
hash of the record id) to embed: their ids and rows only, never their text (the
features are cached in the state directory, where no record text may be kept).
Nothing is embedded per shard, so a scan without ``--reference`` costs no model
time. The corpus pass re-reads the sampled records from their shard and embeds
them once per shard content and model (``STATE_DIR/drift/embeddings``).

Corpus pass, for every shard against the profile given with ``--reference``
(see :mod:`integrity.analysis.profile`; the statistics are computed by
:func:`integrity.analysis.drift.compare_shard`). **Effect sizes first**, each with a
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
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field

from connectors.schema import TEXT_FIELDS
from integrity.analysis import fairness
from integrity.analysis.features import CATEGORICAL_FEATURES, NUMERIC_FEATURES, cached_batch_features, record_text
from integrity.analysis.drift import compare_shard, dumps
from integrity.analysis.profile import (EMBED_MAX_CHARS, Profile, ProfileError, categorical_shares, embed_texts,
                                        load_profile, sample_key)
from integrity.checks.base import CORPUS_FINDING_COLUMNS, Check, CheckOptions, CheckOutput, CorpusContext

log = logging.getLogger(__name__)

SAMPLE_KIND = "sample"
FEATURE_SCHEMA: dict[str, pl.DataType] = {
    "record_id": pl.Utf8, "row": pl.Int64, "kind": pl.Utf8,
    **{f: pl.Float64 for f in NUMERIC_FEATURES}, "language": pl.Utf8, "label": pl.Utf8,
    **{c: (pl.Int16 if c in ("fair_pos", "fair_neg") else pl.Int8) for c in fairness.COLUMNS},
}


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType] = FEATURE_SCHEMA) -> pl.DataFrame:
    """``df`` with exactly ``schema``'s columns (missing ones null), in order."""
    return df.select([(pl.col(c).cast(t) if c in df.columns else pl.lit(None, dtype=t)).alias(c)
                      for c, t in schema.items()])


# =========================================================================== the check


class DriftCheck(Check):
    name = "distribution.drift"
    report_section = "drift"
    description = ("Shards against a trusted reference profile (--reference): PSI per feature, domain-classifier "
                   "AUC, MMD² and topic shift on MiniLM embeddings, new topics; permutation p-values.")
    requires = TEXT_FIELDS
    default_severity = "info"
    corpus_level = True
    version = 2  # 2: the sample keeps ids and rows, no text
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
        self._sample: list = []  # heap of (-key, row, record_id)

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
                item = (-key, int(row), str(rid))
                if len(self._sample) < k:
                    heapq.heappush(self._sample, item)
                elif -self._sample[0][0] > key:
                    heapq.heapreplace(self._sample, item)
        return CheckOutput(features=conform(df))

    def finish_shard(self) -> CheckOutput:
        if not self._sample:
            return CheckOutput()
        rows = sorted(self._sample, key=lambda t: t[1])
        df = pl.DataFrame({"record_id": [r[2] for r in rows], "row": [r[1] for r in rows]},
                          schema={"record_id": pl.Utf8, "row": pl.Int64}).with_columns(kind=pl.lit(SAMPLE_KIND))
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
        """Embeddings of every shard's sampled records, cached in the state dir by shard content
        and sample; a shard not cached yet has its sampled records re-read (the features keep
        no text)."""
        emb_meta = prof.embedding or {}
        model, seq = emb_meta.get("model", "all-MiniLM-L6-v2"), int(emb_meta.get("max_seq_length", 128))
        tag = hashlib.sha256(json.dumps([model, seq, EMBED_MAX_CHARS, self.options["embed_sample"]]).encode()).hexdigest()[:12]
        cache = Path(ctx.state_dir) / "drift" / "embeddings"
        samples = (features.filter(pl.col("kind") == SAMPLE_KIND).select("shard", "record_id", "row").collect())
        out: dict[str, tuple[list[str], np.ndarray]] = {}
        todo: list[tuple[str, list[str], list[str], Path | None]] = []
        for shard in shards:
            s = samples.filter(pl.col("shard") == shard).sort("row")
            if s.height == 0:
                continue
            ids, rows = s["record_id"].to_list(), s["row"].to_list()
            sha = ctx.shard_sha256.get(shard)
            rows_tag = hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:8]
            path = cache / f"{sha}-{tag}-{rows_tag}.npy" if sha else None
            if path is not None and path.exists():
                vec = np.load(path, allow_pickle=False).astype(np.float32)
                if len(vec) == len(ids):
                    out[shard] = (ids, vec)
                    continue
            texts = read_sample_texts(ctx.shard_uri.get(shard, shard), rows, ctx.mapping, ctx.storage_options)
            kept = [(i, t) for i, t in zip(ids, texts) if t is not None]
            if len(kept) < len(ids):
                log.warning("distribution.drift: %d of %d sampled records of %s could not be re-read for "
                            "embedding", len(ids) - len(kept), len(ids), shard)
                path = None  # a partial sample is not cached
            if kept:
                todo.append((shard, [i for i, _ in kept], [t for _, t in kept], path))
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


def read_sample_texts(uri: str, rows: list[int], mapping: Any, storage_options: dict | None = None
                      ) -> list[str | None]:
    """The text (:func:`record_text`, at most ``EMBED_MAX_CHARS``) of the records at ``rows`` of
    the shard at ``uri``, re-read with the scan's column mapping (:func:`connectors.read_rows`);
    None where the shard cannot be read any more."""
    from connectors import read_rows
    from connectors.errors import ConnectorError
    from connectors.schema import ROW

    out: dict[int, str | None] = {}
    try:
        for batch in read_rows(uri, rows, mapping, storage_options):
            texts = record_text(batch)
            if texts is not None:
                for r, t in zip(batch.column(ROW).to_pylist(), texts.to_pylist()):
                    out[int(r)] = None if t is None else t[:EMBED_MAX_CHARS]
    except (ConnectorError, OSError, ValueError) as e:
        log.warning("distribution.drift: cannot re-read %s for embedding: %s", uri, e)
    return [out.get(int(r)) for r in rows]


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
