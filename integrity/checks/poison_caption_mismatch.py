"""``poison.caption_mismatch``: image-caption pairs far below the corpus's own alignment.

Mismatched pairs are how concept poisoning works on text-to-image and CLIP
training (Nightshade needs under 100 images to corrupt one SDXL concept):
pictures of one thing captioned as another. Each pair is scored with an
image-text model (:mod:`integrity.analysis.clip`: open_clip with the weights the
policy names, batched, CUDA and autocast when present; or a scorer plugged in
by import path), and the per-shard pass keeps only that score.

The corpus pass judges each pair against the corpus's own distribution, not a
fixed cut-off (CLIP similarities depend on the model and the domain): robust
z = (median - score) / (1.4826 x MAD) (the standard deviation when most
scores are equal and the MAD is 0), and pairs with z >= ``min_z`` are
findings (score = z), or below ``max_score`` when that absolute floor is set.
With fewer than ``min_records`` scored pairs there is no distribution to judge
against and nothing is reported. The detail carries the pair's similarity,
the corpus median and MAD, the model, and for the worst few a thumbnail with
the caption.

No weights are downloaded here: ``pretrained`` must name an open_clip
pretrained tag available locally (or from the hub where allowed) or a local
``.safetensors``/``.pt`` checkpoint, which is loaded without pickle.
"""
from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field

from connectors.schema import RECORD_ID, ROW
from integrity.analysis.clip import AlignmentScorer, ScorerConfigError, scorer_from_options
from integrity.checks.base import CheckConfigError, CheckOutput, CorpusContext
from integrity.checks.image_base import ImageCheck, ImageOptions


class CaptionMismatch(ImageCheck):
    name = "poison.caption_mismatch"
    description = ("Image-caption pairs whose CLIP alignment is far below the corpus's own distribution "
                   "(mismatched captions, concept poisoning).")
    requires = ("image",)
    class Options(ImageOptions):
        model: str = Field("ViT-B-32", description="open_clip architecture")
        pretrained: str | None = Field(None, description="e.g. laion2b_s34b_b79k or /models/clip-vit-b-32.safetensors")
        scorer: Any = Field(None, description="or 'module:factory' returning a scorer (see integrity/analysis/clip.py)")
        device: str = Field("auto", description="auto (CUDA when present) | cuda | cpu")
        batch_size: int = Field(64, ge=1, description="pairs per forward pass")
        precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
            "auto", description="auto (bf16/fp16 autocast on CUDA, fp32 on CPU) | fp32 | fp16 | bf16")
        min_z: float = Field(3.5, description="robust z below the corpus median that flags a pair")
        max_score: float | None = Field(None, description="optional absolute similarity floor")
        min_records: int = Field(50, ge=1, description="scored pairs needed before judging anything")
        thumbnails: int = Field(12, ge=0, description="findings that carry a thumbnail for the report")
    default_severity = "warn"
    corpus_level = True

    def __init__(self, options=None, shard=None):
        super().__init__(options, shard)
        self._scorer: AlignmentScorer | None = None

    @property
    def scorer(self) -> AlignmentScorer:
        """The model (built on first use, shared by every shard of the process)."""
        if self._scorer is None:
            try:
                self._scorer = scorer_from_options(self.options)
            except ScorerConfigError as exc:
                raise CheckConfigError(f"check {self.name!r}: {exc}") from exc
        return self._scorer

    @scorer.setter
    def scorer(self, value: AlignmentScorer) -> None:
        self._scorer = value

    def applies_to(self, columns) -> bool:
        cols = set(columns)
        return "image" in cols and "caption" in cols

    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        if "caption" not in batch.schema.names:
            return CheckOutput()
        images = batch.column("image").to_pylist()
        captions = batch.column("caption").to_pylist()
        scores = self.scorer.score(images, captions)
        ok = np.isfinite(scores)
        if not ok.any():
            return CheckOutput()
        idx = pa.array(np.flatnonzero(ok))
        return CheckOutput(features=pl.DataFrame({
            RECORD_ID: pl.Series(batch.column(RECORD_ID).take(idx).to_pylist(), dtype=pl.Utf8),
            ROW: pl.Series(batch.column(ROW).take(idx).to_pylist(), dtype=pl.Int64),
            "uri": pl.Series([self.shard_uri] * len(idx), dtype=pl.Utf8),
            "clip_score": pl.Series(scores[ok], dtype=pl.Float32),
            "model": pl.Series([self.scorer.name] * len(idx), dtype=pl.Utf8),
        }))

    def corpus_pass(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame | None:
        df = features.collect()
        if df.height < int(self.options["min_records"]):
            return None
        s = df["clip_score"].to_numpy().astype(np.float64)
        med = float(np.median(s))
        mad = float(np.median(np.abs(s - med))) * 1.4826
        if mad <= 1e-6 * max(1.0, abs(med)):  # over half the pairs score the same: MAD says nothing
            mad = float(np.std(s))
        z = (med - s) / max(mad, 1e-9)
        flag = z >= float(self.options["min_z"])
        if self.options["max_score"] is not None:
            flag |= s <= float(self.options["max_score"])
        idx = np.flatnonzero(flag)
        if len(idx) == 0:
            return None
        sel = df[idx]
        pct = (np.searchsorted(np.sort(s), s[idx], side="right") / len(s))
        details = [json.dumps({"clip_score": round(float(s[i]), 4), "corpus_median": round(med, 4),
                               "corpus_mad": round(mad, 4), "z": round(float(z[i]), 2),
                               "percentile": round(float(p) * 100, 2), "model": m, "row": int(r)}, sort_keys=True)
                   for i, p, m, r in zip(idx, pct, sel["model"].to_list(), sel[ROW].to_list())]
        return pl.DataFrame({
            "shard": sel["shard"], RECORD_ID: sel[RECORD_ID],
            "score": pl.Series(np.round(z[idx], 3), dtype=pl.Float64),
            "detail": details, "severity": pl.Series([None] * len(idx), dtype=pl.Utf8),
            # where the image is (the detail names the row already): the engine fetches a few thumbnails
            "uri": sel["uri"], ROW: sel[ROW].cast(pl.Int64),
        })
