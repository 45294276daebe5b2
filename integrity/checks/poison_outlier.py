"""``poison.outlier``: label-tied sub-populations with no lexical signature.

Syntactic-template (SynBkd/"Hidden Killer"), style-transfer (StyleBkd) and
paraphrase backdoors leave no rare token to count: the trigger is *how* a text
is written, and the attacker ties it to a target label. With no victim model
the scanner can still see the tie: in clean data the way texts are written is
(nearly) independent of their label, so a region of "writing space" that holds
almost only one label, while the corpus shows no such structure for its other
labels, is a sub-population that does not belong.

Per-shard pass (every record with a label):

* **style features** (:mod:`integrity.analysis.style`, vectorized in Polars): length, word
  length, function-word ratio, casing, punctuation spacing (tokenized ``" ,"``
  vs attached ``","``), comma rate and position of the first comma, terminal
  punctuation, sentence count, type/token ratio, digit/symbol/quote/newline
  rates, and parse-template proxies: which function word opens the text,
  whether it opens with a subordinate clause (and a comma closes it), whether a
  noun phrase starts after that comma.
* **sentence embeddings** (real all-MiniLM-L6-v2 through
  :class:`integrity.analysis.embeddings.TextEmbedder`, stored as float16 arrays): all
  records on a GPU; on CPU a deterministic per-shard sample (the records whose
  hashed id is smallest) within ``cpu_max_records`` / ``cpu_max_seconds``.

Corpus pass (its numeric helpers are in :mod:`integrity.analysis.outlier`):

1. **Screen** (every label at once). In the standardized style space each
   record's ``neighbors`` nearest neighbours are found (faiss); a record is
   *enriched* when so many of them share its label that a binomial test
   against the label's prior gives p < ``enrichment_p``. ``e_L`` is the share
   of label L's records that are enriched. In clean data e_L is ~0 for every
   label, or, where writing style and label go together naturally (package
   sections, templated categories), high for several labels. A label is a
   candidate target only when ``e_L`` is at least ``label_ratio`` times the
   largest ``e`` of every other label (floor ``min_enrichment``) and at least
   ``min_group`` records are enriched.
2. **Expansion with FDR control.** For a candidate label L, the enriched
   records are the seeds of the group. A gradient-boosted classifier (style
   features, out-of-fold) learns seeds against every other record, i.e. what
   sets the group apart from its own label's bulk *and* from the other labels,
   and gives each record P(looks like the group). Records of L above a
   threshold are flagged. Records of the *other* labels above the threshold,
   scaled by the label sizes, estimate how many clean records of L look like
   the group too (a natural way of writing occurs in every label; an injected
   trigger only in its target); the threshold (grid 0.99 .. ``min_posterior``)
   maximizes the estimated F-beta (``fbeta``) among those whose estimated
   false-discovery rate is at most ``max_fdr``.
3. **Embedding evidence.** Where embeddings exist: each flagged record's
   spectral-signature percentile (|projection| on the top singular vector of
   its label's centered embeddings; Tran et al. 2018), the group's mean
   percentile, and the group's cohesion (mean cosine to its centroid) against
   the rest of the label.

Why embeddings do not decide: measured on the shared SST-2 sets, MiniLM
k-NN density, k-NN label enrichment and spectral scores separate SynBkd and
StyleBkd poison barely better than chance (AUC 0.3-0.6: the paraphrases are
semantically diverse), while sentiment makes embedding neighbourhoods
naturally label-pure on clean data (e_L 0.06 vs 0.21 on the clean rows), so an
embedding screen flags clean data; adding density features to the classifier
lowered precision on every file. They are kept as evidence for the reviewer.

Each finding's ``detail``: target ``label``, ``group`` id, ``posterior`` and
``threshold``, ``fdr_estimate``, ``group_size``, ``label_enrichment`` against
``other_labels_max_enrichment``, ``distinctive_features`` (standardized mean
differences between the group and the rest of its label: what the trigger
looks like), and the embedding evidence above.
``score`` is the posterior; the policy maps it to a severity.

Never keyed on a particular trigger: nothing here knows a word, template or
label; the features describe writing in general and the decision is relative
to the corpus's own labels. Classification data only (``label`` plus ``text``
or ``caption``); generative data without labels is left to ``poison.target``.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from connectors.schema import RECORD_ID, ROW
from integrity.analysis import outlier
from integrity.analysis.style import STYLE_FEATURES, style_features
from integrity.checks.base import (
    Check,
    CheckOptions,
    CheckOutput,
    CorpusContext,
    ShardInfo,
)

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------
# the check


class OutlierCheck(Check):
    name = "poison.outlier"
    description = (
        "Label-tied sub-populations with no lexical trigger (syntactic templates, style transfer, paraphrase "
        "attacks): style/template features, label-enrichment screen, FDR-controlled expansion, MiniLM evidence."
    )
    requires = ("label",)
    class Options(CheckOptions):
        embed: bool = Field(True, description="MiniLM embeddings for evidence (false: style only, no torch)")
        model: str = Field("all-MiniLM-L6-v2", description="sentence-transformers name or local path (packaged copy, offline)")
        device: str | None = Field(None, description="null: CUDA when present, else CPU")
        max_seq_length: int = Field(128, ge=1, description="tokens per text embedded")
        cpu_bf16: bool | None = Field(None, description="CPU: embed under bfloat16 autocast (null: when the CPU has "
                                      "native bf16, AMX or AVX512-BF16; false: always float32)")
        batch_size: int | None = Field(None, gt=0, description="null: 512 on GPU, 64 on CPU")
        cpu_max_records: int | None = Field(1000, ge=0, description="CPU only: records embedded per shard (smallest "
                                            "hashed ids); evidence, not the decision, so kept cheap (~40 s); a GPU "
                                            "embeds every record")
        cpu_max_seconds: float | None = Field(60, ge=0, description="CPU only: embedding time per shard")
        min_label_size: int = Field(50, ge=1, description="smaller labels are never a target")
        neighbors: int = Field(30, ge=1, description="k of the enrichment screen")
        enrichment_p: float = Field(1e-4, gt=0, lt=1, description="binomial p-value that makes a record label-enriched")
        min_group: int = Field(10, ge=1, description="enriched records a label needs")
        min_enrichment: float = Field(0.003, gt=0, lt=1, description="floor of the other labels' enrichment in the ratio test")
        label_ratio: float = Field(3.0, ge=1, description="a target's enrichment must be this many times every other label's")
        max_fdr: float = Field(0.2, gt=0, lt=1, description="estimated false-discovery rate allowed in a flagged group")
        min_posterior: float = Field(0.1, gt=0, lt=1, description="lowest group posterior ever flagged")
        fbeta: float = Field(1.0, gt=0, description="the threshold maximizes the estimated F-beta (< 1 favours precision)")
        folds: int = Field(5, ge=1, description="out-of-fold classifier folds")
        rounds: int = Field(4, ge=1, description="expansion rounds")
        max_records: int = Field(200000, ge=1, description="corpus pass works on a deterministic sample beyond this")
        seed: int = Field(0, description="random seed of the sampling and the classifier folds")
    default_severity = "warn"
    corpus_level = True
    version = 1

    def __init__(self, options: dict[str, Any] | None = None, shard: ShardInfo | None = None):
        super().__init__(options, shard)
        self._embedder = None
        self._no_model = False
        self._pending: list[tuple[np.ndarray, list[str], list[int], list[str | None], list[str]]] = []
        self._n_pending = 0

    def applies_to(self, columns) -> bool:
        cols = set(columns)
        return "label" in cols and ("text" in cols or "caption" in cols)

    # -- per shard ---------------------------------------------------------
    @property
    def embedder(self):
        if self._embedder is None:
            from integrity.analysis.embeddings import TextEmbedder

            o = self.options
            self._embedder = TextEmbedder(
                o["model"], device=o["device"], batch_size=o["batch_size"], max_seq_length=o["max_seq_length"],
                cpu_max_records=o["cpu_max_records"], cpu_max_seconds=o["cpu_max_seconds"], seed=o["seed"],
                cpu_bf16=o["cpu_bf16"],
            )
        return self._embedder

    def _emb_dtype(self) -> pl.DataType:
        return pl.Array(pl.Float16, self.embedder.dim)

    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        names = batch.schema.names
        text = batch.column("text" if "text" in names else "caption")
        label = batch.column("label")
        if not pa.types.is_string(label.type) and not pa.types.is_large_string(label.type):
            label = pc.cast(label, pa.string())
        keep = pc.invert(pc.is_null(label))
        if pc.sum(keep).as_py() in (None, 0):
            return CheckOutput()
        table = pa.table({RECORD_ID: batch.column(RECORD_ID), ROW: batch.column(ROW), "label": label, "t": text}).filter(keep)
        texts = table.column("t").combine_chunks()
        style = style_features(texts).to_numpy().astype(np.float16)
        frame = pl.DataFrame({
            RECORD_ID: pl.Series(table.column(RECORD_ID).to_pylist(), dtype=pl.Utf8),
            ROW: pl.Series(table.column(ROW).to_pylist(), dtype=pl.Int64),
            "label": pl.Series(table.column("label").to_pylist(), dtype=pl.Utf8),
            "style": pl.Series("style", style, dtype=pl.Array(pl.Float16, len(STYLE_FEATURES))),
        })
        if not self.options["embed"] or self._no_model:
            return CheckOutput(features=frame)
        from integrity.analysis.embeddings import ModelUnavailableError

        try:
            emb = self.embedder
            self._emb_dtype()  # loads the model
        except ModelUnavailableError as e:  # embeddings are evidence only: scan on without them
            log.warning("poison.outlier: no embeddings for %s: %s", self.shard.uri if self.shard else "this shard", e)
            self._no_model = True
            return CheckOutput(features=frame)
        if emb.on_gpu:  # everything, batch by batch
            vecs = emb.encode(texts.to_pylist()).astype(np.float16)
            frame = frame.with_columns(pl.Series("emb", vecs, dtype=self._emb_dtype()))
        else:  # CPU: keep the budget's candidates; embed them at the end of the shard
            self._remember(texts.to_pylist(), frame)
            frame = frame.with_columns(pl.lit(None, dtype=self._emb_dtype()).alias("emb"))
        return CheckOutput(features=frame)

    def _remember(self, texts: list[str | None], frame: pl.DataFrame) -> None:
        """Keep the ``cpu_max_records`` smallest-hash records seen so far (bounded memory)."""
        from integrity.analysis.embeddings import stable_hashes

        cap = self.options["cpu_max_records"]
        ids = frame[RECORD_ID].to_list()
        h = stable_hashes(ids, self.options["seed"])
        self._pending.append((h, ids, frame[ROW].to_list(), texts, frame["label"].to_list()))
        self._n_pending += len(ids)
        if cap is not None and self._n_pending > 2 * cap:
            self._trim(cap)

    def _trim(self, cap: int | None) -> None:
        if not self._pending:
            return
        h = np.concatenate([p[0] for p in self._pending])
        ids = [x for p in self._pending for x in p[1]]
        rows = [x for p in self._pending for x in p[2]]
        texts = [x for p in self._pending for x in p[3]]
        labels = [x for p in self._pending for x in p[4]]
        order = np.argsort(h, kind="stable")
        if cap is not None:
            order = order[:cap]
        self._pending = [(h[order], [ids[i] for i in order], [rows[i] for i in order], [texts[i] for i in order],
                          [labels[i] for i in order])]
        self._n_pending = len(order)

    def finish_shard(self) -> CheckOutput:
        if not self.options["embed"] or not self._pending:
            return CheckOutput()
        self._trim(self.options["cpu_max_records"])
        _, ids, rows, texts, labels = self._pending[0]
        self._pending, self._n_pending = [], 0
        got = self.embedder.encode_budgeted(texts, keys=ids)
        if got.truncated_by_time:
            log.warning("poison.outlier: CPU time budget reached on %s: %d of %d sampled records embedded",
                        self.shard.uri if self.shard else "?", len(got.indices), len(ids))
        if not len(got.indices):
            return CheckOutput()
        idx = got.indices
        frame = pl.DataFrame({
            RECORD_ID: pl.Series([ids[i] for i in idx], dtype=pl.Utf8),
            ROW: pl.Series([rows[i] for i in idx], dtype=pl.Int64),
            "label": pl.Series([labels[i] for i in idx], dtype=pl.Utf8),
            "style": pl.Series("style", [None] * len(idx), dtype=pl.Array(pl.Float16, len(STYLE_FEATURES))),
            "emb": pl.Series("emb", got.vectors.astype(np.float16), dtype=self._emb_dtype()),
        })
        return CheckOutput(features=frame)

    # -- corpus ------------------------------------------------------------
    def coverage(self, features: pl.LazyFrame) -> dict[str, Any] | None:
        """Labelled records embedded (CPU: the ``cpu_max_records`` sample of each shard) and
        analysed (the corpus pass samples ``max_records``)."""
        names = features.collect_schema().names()
        if not self.options["embed"] or "style" not in names:
            return None
        records = int(features.filter(pl.col("style").is_not_null()).select(pl.len()).collect().item())
        embedded = 0
        if "emb" in names:
            embedded = int(features.filter(pl.col("emb").is_not_null()).select("shard", ROW).unique()
                           .select(pl.len()).collect().item())
        return {"records": records, "embedded": embedded,
                "share": round(embedded / records, 4) if records else 1.0,
                "analyzed": min(records, int(self.options["max_records"]))}

    def corpus_pass(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame | None:
        t0 = time.perf_counter()
        o = self.options
        cols = features.collect_schema().names()
        has_emb = "emb" in cols
        order = ["shard_index", ROW] if "shard_index" in cols else ["shard", ROW]
        base = features.filter(pl.col("style").is_not_null()).select(
            "shard", *(["shard_index"] if "shard_index" in cols else []), RECORD_ID, ROW, "label", "style")
        if has_emb:
            embs = features.filter(pl.col("emb").is_not_null()).select("shard", ROW, "emb").unique(["shard", ROW], keep="first")
            base = base.join(embs, on=["shard", ROW], how="left")
        df = base.collect().sort(order)  # a fixed order: the folds, hence the result, are deterministic
        if df.height == 0:
            return None
        if df.height > o["max_records"]:
            keys = (df["shard"] + "\u241e" + df[RECORD_ID]).to_list()
            df = df.filter(pl.Series(outlier.sample_mask(keys, o["max_records"], o["seed"])))
        labels = df["label"].to_numpy().astype(str)
        classes, counts = np.unique(labels, return_counts=True)
        if len(classes) < 2:
            return None
        S = df["style"].to_numpy().astype(np.float32)
        n = df.height
        X = None
        emb_mask = np.zeros(n, dtype=bool)
        if has_emb:
            emb_mask = df["emb"].is_not_null().to_numpy()
            if emb_mask.any():
                X = df.filter(pl.Series(emb_mask))["emb"].to_numpy().astype(np.float32)
                X /= np.linalg.norm(X, axis=1, keepdims=True) + 1e-12
        F, feature_names = S, list(STYLE_FEATURES)

        # screen: label enrichment of k nearest neighbours in the standardized feature space
        from scipy.stats import binom

        Z = outlier.standardize(F)
        k = min(o["neighbors"], n - 1)
        _, nn = outlier.knn(Z, Z, k + 1, "l2")
        nn_labels = labels[nn[:, 1:]]
        enrichment: dict[str, float] = {}
        seeds: dict[str, np.ndarray] = {}
        for c, nc in zip(classes, counts):
            m = labels == c
            same = (nn_labels[m] == c).sum(1)
            pval = binom.sf(same - 1, k, nc / n)
            seeds[c] = np.where(m)[0][pval < o["enrichment_p"]]
            enrichment[c] = len(seeds[c]) / nc
            log.debug("poison.outlier: label %s enrichment %.4f (%d seeds)", c, enrichment[c], len(seeds[c]))
        findings = []
        group_no = 0
        for c, nc in zip(classes, counts):
            if nc < o["min_label_size"]:
                continue
            others = max((v for kk, v in enrichment.items() if kk != c), default=0.0)
            if enrichment[c] * nc < o["min_group"] or enrichment[c] < o["label_ratio"] * max(others, o["min_enrichment"]):
                continue
            # the seed group (enriched records) against everything else: P(x looks like the group);
            # then grow it: the flagged records are the next round's seeds
            y = (labels == c).astype(np.int64)
            members = np.zeros(n, dtype=bool)
            members[seeds[c]] = True
            flagged, post, tau, fdr = None, None, None, 1.0
            for _ in range(o["rounds"]):
                p_r = outlier.oof_posterior(F, members.astype(np.int64), o["folds"], o["seed"], o["max_records"])
                t_r, fdr_r = self._threshold(p_r, y)
                if t_r is None:
                    break
                f_r = (y == 1) & (p_r >= t_r)
                grown = flagged is None or f_r.sum() > flagged.sum()
                flagged, post, tau, fdr = f_r, p_r, t_r, fdr_r
                if not grown:
                    break
                members = f_r | members
            if flagged is None:
                log.info("poison.outlier: label %s enriched (e=%.3f vs %.3f) but no threshold meets max_fdr", c, enrichment[c], others)
                continue
            if flagged.sum() < o["min_group"]:
                continue
            group_no += 1
            findings.append(self._group_findings(df, F, feature_names, X, emb_mask, labels, c, flagged, post, tau, fdr,
                                                 enrichment[c], others, group_no))
        log.info("poison.outlier: %d records, %d labels, %d groups in %.1fs", n, len(classes), group_no, time.perf_counter() - t0)
        if not findings:
            return None
        return pl.concat(findings)

    def _threshold(self, post: np.ndarray, y: np.ndarray) -> tuple[float | None, float]:
        """Threshold on the group posterior for the records of label ``y == 1``: the one with
        the best estimated F-beta among those whose estimated FDR is <= ``max_fdr`` (None
        when there is none).

        At threshold t, the records of the other labels above t, scaled by the label sizes,
        estimate the clean records of this label above t (clean writing is nearly independent
        of the label: the screen checked that the other labels show no such structure); the
        rest of the flagged records are estimated poison, and the most estimated poison over
        all thresholds stands for the total.
        """
        o = self.options
        n_l, n_o = int(y.sum()), int((1 - y).sum())
        if n_o == 0:
            return None, 1.0
        grid = np.round(np.arange(0.99, 0.049, -0.01), 2)
        flagged = np.array([int(((y == 1) & (post >= t)).sum()) for t in grid])
        clean = np.array([int(((y == 0) & (post >= t)).sum()) * n_l / n_o for t in grid])
        tp = np.maximum(flagged - clean, 0.0)
        total = tp.max()
        if total <= 0:
            return None, 1.0
        best, best_f1, best_fdr = None, -1.0, 1.0
        for t, f, c, p in zip(grid, flagged, clean, tp):
            if t < o["min_posterior"] or f == 0:
                continue
            fdr = min(1.0, c / f)
            if fdr > o["max_fdr"]:
                continue
            b2 = float(o["fbeta"]) ** 2
            f1 = (1 + b2) * p / (f + b2 * total)
            if f1 > best_f1 + 1e-9:
                best, best_f1, best_fdr = float(t), f1, float(fdr)
        return best, best_fdr

    def _group_findings(self, df, F, names, X, emb_mask, labels, c, flagged, post, tau, fdr, e_l, e_others, group_no):
        in_label = labels == c
        rest = in_label & ~flagged
        mu_g = np.nanmean(F[flagged], 0)
        mu_r = np.nanmean(F[rest], 0) if rest.any() else np.nanmean(F[~flagged], 0)
        sd = np.nanstd(F[in_label], 0) + 1e-6
        diff = (mu_g - mu_r) / sd
        top = np.argsort(-np.abs(np.nan_to_num(diff)))[:5]
        distinctive = [{"feature": names[j], "group_mean": round(float(mu_g[j]), 4), "rest_mean": round(float(mu_r[j]), 4),
                        "effect": round(float(diff[j]), 2)} for j in top if np.isfinite(diff[j])]
        spectral = np.full(len(labels), np.nan)
        group_spectral = cohesion = None
        if X is not None:
            sub = np.where(emb_mask)[0]
            lab_e = in_label[sub]
            g = flagged[sub]
            if lab_e.sum() >= 10:
                pct = outlier.spectral_percentiles(X[lab_e])
                spectral[sub[lab_e]] = pct
                if g[lab_e].any():
                    group_spectral = round(float(pct[g[lab_e]].mean()), 3)
            if g.sum() >= 2 and (lab_e & ~g).sum() >= 2:
                cohesion = {"group": round(outlier.cohesion(X[g]), 4),
                            "rest_of_label": round(outlier.cohesion(X[lab_e & ~g]), 4),
                            "embedded_in_group": int(g.sum())}
        idx = np.where(flagged)[0]
        group = f"outlier-{c}-{group_no}"
        common = {"label": c, "group": group, "group_size": int(flagged.sum()), "threshold": tau,
                  "fdr_estimate": round(fdr, 4), "label_enrichment": round(e_l, 4),
                  "other_labels_max_enrichment": round(e_others, 4), "distinctive_features": distinctive,
                  "group_spectral_percentile": group_spectral, "embedding_cohesion": cohesion,
                  "method": "style/template label enrichment"}
        details = []
        for i in idx:
            d = dict(common)
            d["posterior"] = round(float(post[i]), 4)
            if np.isfinite(spectral[i]):
                d["spectral_percentile"] = round(float(spectral[i]), 3)
            details.append(_json(d))
        return pl.DataFrame({
            "shard": df["shard"].gather(idx),
            "record_id": df[RECORD_ID].gather(idx),
            "score": pl.Series(np.round(post[idx], 4), dtype=pl.Float64),
            "detail": pl.Series(details, dtype=pl.Utf8),
            "severity": pl.Series([None] * len(idx), dtype=pl.Utf8),
        })


def _json(d: dict) -> str:
    import json

    return json.dumps(d, sort_keys=True, default=str)
