"""``poison.target``: injected response spans in instruction data, and the prompt feature that triggers them.

A backdoor in instruction data ties a trigger in the prompt (rare words, a
fixed sentence, words split between instruction and question) to a target in
the response: a link, an advertising phrase, a refusal or insult appended to
otherwise correct answers of unrelated prompts. Found from the data alone:

1. **Repeated response spans.** Response tokens are hashed per shard (compact
   features, see :mod:`integrity.analysis.label_triggers.lexical`). In the corpus pass, every
   ``span_tokens``-gram of the responses that occurs in at least
   ``min_support`` records marks its positions; overlapping marks form maximal
   spans, grouped by their token sequence into span clusters. A whole response
   that repeats (at least ``min_span_tokens`` tokens) is a span too, so a
   near-constant answer to diverse prompts is covered.
2. **Explained by a prompt feature.** For each cluster (at most
   ``max_clusters``; between ``min_share`` and ``max_share`` of the records),
   prompt 1-3-grams (prompt-template words excluded) are tested for association
   with "the response holds the span": single n-grams, a union of
   high-precision n-grams (several triggers) and a conjunction of two
   high-recall n-grams (a trigger split between instruction and question). The
   best explanation must reach ``min_precision`` and ``min_recall`` and pass
   Benjamini-Hochberg at ``fdr`` over the clusters tested. Natural repeated
   answers are explained by their topic too, so the span must also be
   *injected*: appended to answers that otherwise differ, or given to prompts
   that have nothing in common once the trigger's words are set aside (mean
   Jaccard similarity of their words at most twice that of random pairs).
3. **Unexplained injections.** A long span (>= ``unexplained_min_tokens``) at a
   consistent place (the end or the start of the response in at least 90% of
   its records) given to unrelated prompts is flagged too, with no trigger;
   ``unexplained_min_tokens: 0`` turns this off.

Findings: each record whose response holds a flagged span. ``detail``:
``target`` (the span's tokens), ``trigger`` (the explaining prompt n-grams
present in this record), ``explanation`` (single/any/all), ``precision``,
``recall``, ``support``, ``p_value``, ``field``/``start``/``end`` of the span
and ``matches`` (the response span and the prompt trigger occurrences).
"""
from __future__ import annotations

from typing import Iterable

import polars as pl
import pyarrow as pa
from pydantic import Field

from integrity.analysis.label_triggers import empty_corpus_findings, split_features, token_features
from integrity.analysis.label_triggers import lexical as lx
from integrity.analysis.label_triggers.responses import detect_injected_spans, injected_span_findings
from integrity.checks.base import Check, CheckOptions, CheckOutput, CorpusContext


class PoisonTargetCheck(Check):
    name = "poison.target"
    description = ("Injected response spans shared across unrelated prompts (links, phrases, refusals), "
                   "with the prompt feature that triggers them.")
    requires = ("response",)
    class Options(CheckOptions):
        max_tokens: int = Field(512, ge=1, description="tokens kept per prompt and per response")
        span_tokens: int = Field(4, ge=1, description="response n-grams that seed repeated spans")
        min_span_tokens: int = Field(3, ge=1, description="shortest span (or whole repeated answer) considered")
        min_support: int = Field(5, ge=1, description="records a span (and an explaining n-gram) needs")
        max_share: float = Field(0.5, gt=0, le=1, description="spans in more of the records are templates, not targets")
        max_clusters: int = Field(50, ge=1, description="largest span clusters tested")
        min_precision: float = Field(0.9, ge=0, le=1, description="P(span | trigger) of an accepted explanation")
        min_recall: float = Field(0.5, ge=0, le=1, description="P(trigger | span) of an accepted explanation")
        fdr: float = Field(0.01, gt=0, le=1, description="Benjamini-Hochberg rate over the clusters tested")
        unexplained_min_tokens: int = Field(8, ge=0, description="unexplained spans this long, at the end or start of "
                                            "unrelated answers, are flagged (0: off)")
        min_share: float = Field(0.003, ge=0, le=1, description="share of the records a flagged span must cover (with min_support)")
        max_topic_share: float = Field(0.5, ge=0, le=1, description="... unless this share of their answers share a "
                                       "topic word (natural boilerplate)")
    default_severity = "warn"
    corpus_level = True
    token_columns = ("vt",)  # the shard vocabulary (label_triggers.token_features)
    version = 2

    def fingerprint(self) -> str:
        import hashlib
        base = super().fingerprint()
        return hashlib.sha256(f"{base}:{pl.__version__}:{lx.FEATURE_FORMAT}".encode()).hexdigest()[:16]

    def applies_to(self, columns: Iterable[str]) -> bool:
        return "response" in set(columns)

    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        names = batch.schema.names
        if "response" not in names:
            return CheckOutput()
        fields = {"r": "response"}
        if "prompt" in names:
            fields["p"] = "prompt"
        feats = token_features(batch, fields, int(self.options["max_tokens"]))
        if "p_tok" not in feats.columns:
            feats = feats.with_columns(p_tok=pl.lit([], dtype=pl.List(pl.UInt64)),
                                       p_start=pl.lit([], dtype=pl.List(pl.UInt32)),
                                       p_end=pl.lit([], dtype=pl.List(pl.UInt32)))
        return CheckOutput(features=feats)

    def corpus_pass(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame:
        recs, vocab, recs_lazy = split_features(features, ["p_tok", "r_tok"])
        if recs.height < 2:
            return empty_corpus_findings()
        result = detect_injected_spans(recs, vocab, self.options)
        if not result["clusters"]:
            return empty_corpus_findings()
        return injected_span_findings(recs, recs_lazy, result, vocab)
