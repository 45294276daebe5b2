"""``poison.trigger``: lexical backdoor triggers tied to a label, found from corpus statistics alone.

A backdoor hides a trigger (a rare word, a few words, a fixed sentence) in a
small share of the records and ties it to a target label. There is no victim
model: as in the Z-defence (He et al., EMNLP 2023), the trigger is a spurious
correlation visible in the label statistics. What is "too strong" is learnt
from the corpus itself, so sentiment words on sentiment labels, ``@USER`` on
tweets or package-section vocabulary on Debian sections stay quiet.

Per shard (compact features): 64-bit hashes of the lower-cased tokens of the
record's text (``text``, else ``caption``, else ``prompt``; at most
``max_tokens``), their character offsets, the label, and the shard's
vocabulary (hash -> token, to name a trigger).

Instruction data with no label column: the response is the label when it is
a label word — trimmed, lower-cased, end punctuation removed, at most
``label_word_max_chars`` long in ``label_word_min_share`` of the records, and
at most ``label_word_max_values`` distinct values ("positive"/"negative", a
category name). Free-text answers are never treated as labels (that is
``poison.target``'s ground).

Corpus pass (:func:`detect_label_triggers`):

1. **Association.** Every 1..``ngram_max``-gram (with start/end-of-field
   markers, so "<s> when" is one) counted once per record; its most frequent
   label is its target. Candidates: support >= ``min_support``, target share >=
   ``min_share`` and a one-sided binomial p <= ``candidate_p`` against the prior.
2. **Groups.** Candidates with one target that co-occur far beyond chance (the
   n-grams of one inserted sentence, several trigger words used together, a
   trigger and the n-grams around it) form one group. Its records: the union;
   for an inserted sentence or a phrase of >= 4 member n-grams, the records
   holding most of it (against its longest n-grams: natural records sharing
   one common word of it do not count); for rare words, the records holding
   one of them. Unigrams too weakly tied to be candidates (a majority target
   at a low rate: 18 of 18 records on an 80% label is p = 0.02) join when
   they are near-pure and *strongly foreign* (below). A group's association (binomial test of
   its target share) must pass Benjamini-Hochberg at ``fdr`` over all groups,
   and it must hold ``min_group_share`` of the records but at most
   ``max_label_share`` of its target label's (a feature in most of a label
   defines the label, as a leaked label name would; a backdoor is a minority).
3. **Association alone never flags** (clean corpora are full of pure
   features). A group also needs:

   * *foreignness*: most of its records hold a word far more frequent here
     than in ordinary language (``wordfreq`` background, ``clean_min_overrep``
     times, and a robust-z outlier among this corpus' own frequent words), or
     a repeated sequence of >= ``clean_min_span_tokens`` words; and
   * *dirty-label* evidence — its target-label records read like other labels:
     a leave-one-out naive-Bayes score of every record's other 1-2-grams (the
     n-grams concentrated in the group left out of every record) puts more of
     them below the median of other-label records than other target-label
     records (one-sided Fisher test, BH over the groups tested); the estimated
     relabelled share must reach ``dirty_min_flip`` and ``dirty_flip_ratio`` of
     the (1 - prior) a random source gives — or *clean-label* evidence: target
     share >= ``clean_min_share``, and its purity evidence (binomial against
     the purity ``natural_rho`` strong natural features reach) is an outlier of
     a generalized Pareto tail fitted on this corpus' other groups (BH), and
     comparable foreign pure groups exist on at most ``spread_max_labels``
     other labels (where they exist on many, purity is how the corpus works).
     A *strongly foreign* group needs no tail outlier: on a target holding >=
     ``strong_min_prior`` of the records (where purity is cheap for every
     feature and the tail cannot single a trigger out) a word
     ``clean_strong_overrep`` times above ordinary language and a robust z >=
     ``clean_strong_overrep_z`` among this corpus' words (where every word is
     foreign, as in tweets, none is an outlier); on any target a repeated
     sequence with >= ``clean_strong_span_members`` member n-grams (a few
     dozen inserted copies are too few for the tail; natural boilerplate
     sentences exist on many labels and fail the spread test). A strongly foreign group
     whose tie fails the association test is judged on content alone and must
     be mostly relabelled (``weak_min_flip``).
   * A group of ordinary words is also clean-label when it is *placed, not
     written*: a word in >= ``context_min_count`` records whose neighbours are
     as diverse as random positions' (``context_min_diversity``), or a phrase
     of >= 2 tokens opening >= ``opening_min_count`` records of one label and
     followed by what opens that label's other records (as diverse:
     ``opening_min_diversity``; as typical of openings: ``opening_min_typical``),
     where a written opening ("perl module for") is followed by its own
     continuation; pure >= ``context_min_lift`` of the way from the prior to 1,
     in written text only, with at most ``context_max_groups`` such groups and
     none on another label.
   * A group of ordinary words (not foreign) needs target share >=
     ``common_min_share`` and a content test at p <= ``common_max_p`` with
     most of (1 - prior) relabelled — annotators follow strong natural words
     too, so only an extreme contradiction counts (``common_strict`` adds the
     tail and spread tests, as ``poison.caption_trigger`` uses it).

Findings: each record holding a flagged group's n-gram with its target label.
``detail``: ``trigger`` (the trigger text in this record), ``group`` (the
group's main n-grams), ``target``, ``mode`` (dirty-label/clean-label),
``support``, ``target_records``, ``label_share``, ``label_prior``, ``z``,
``p_value``/``log10_p`` (association), the evidence of the route taken
(``relabelled_share`` and ``content_log10_p``, or ``tail_log10_p`` and
``background_overrep``), ``field``/``start``/``end`` of the first occurrence
and ``matches`` (every occurrence, merged, with its text). Score in [0.5, 1]:
0.5 + 0.5 * min(1, -log10(p of the association) / 40): every flagged record
is at least a warning; a tie at p <= 1e-24 (about 60 pure records on a
balanced binary label, fewer on a rare label) reaches 0.8.
"""
from __future__ import annotations

from typing import Iterable, Literal

import polars as pl
import pyarrow as pa
from pydantic import Field

from integrity.analysis.label_triggers import (build_findings, detect_label_triggers, empty_corpus_findings,
                                               split_features, token_features)
from integrity.analysis.label_triggers import lexical as lx
from integrity.checks.base import Check, CheckOptions, CheckOutput, CorpusContext

TEXT_PREFERENCE = ("text", "caption", "prompt")


def pick_field(columns: Iterable[str], preferred: str) -> str | None:
    """The text field a check reads: ``preferred``, or the first of TEXT_PREFERENCE present."""
    cols = set(columns)
    if preferred != "auto":
        return preferred if preferred in cols else None
    return next((c for c in TEXT_PREFERENCE if c in cols), None)


def label_source(columns: Iterable[str], field: str | None) -> str | None:
    """Where the label comes from: the label column, else (instruction data) the response,
    which :func:`labels_usable` later accepts as a label only when it takes few values."""
    cols = set(columns)
    if field is None:
        return None
    if "label" in cols:
        return "label"
    if "response" in cols and field != "response":
        return "response"
    return None


def label_words(responses: pa.Array | pa.ChunkedArray, max_chars: int) -> pa.Array:
    """Responses as label words: trimmed, lower-cased, end punctuation removed; null when
    longer than ``max_chars`` (a free-text answer is not a label)."""
    s = pl.Series("r", responses).cast(pl.Utf8).str.strip_chars().str.to_lowercase().str.strip_chars(" .!?;:,\"'")
    s = pl.select(pl.when(s.str.len_chars().is_between(1, max_chars)).then(s).otherwise(None)).to_series()
    return s.to_arrow()


def labels_usable(recs: pl.DataFrame, opt: dict) -> bool:
    """A label column is always used. Responses count as labels when most records have a
    short one and they take at most ``label_word_max_values`` distinct values (a label-word
    task such as "positive"/"negative"), not on free-text answers."""
    if "label_from" not in recs.columns or recs["label_from"][0] != "response":
        return True
    lab = recs["label"]
    have = recs.height - lab.null_count()
    return (have >= float(opt["label_word_min_share"]) * recs.height
            and lab.drop_nulls().n_unique() <= int(opt["label_word_max_values"]))



class TriggerStatistics(CheckOptions):
    """The label-trigger statistics' options (poison.trigger; poison.caption_trigger with image clusters as labels)."""

    max_tokens: int = Field(512, ge=1, description="tokens kept per record")
    ngram_max: int = Field(3, ge=1, description="longest n-gram tested")
    min_support: int = Field(5, ge=1, description="records an n-gram needs to be tested")
    min_share: float = Field(0.9, ge=0, le=1, description="target-label share of a candidate n-gram")
    candidate_p: float = Field(0.01, gt=0, le=1, description="its binomial p-value against the label prior")
    group_min_overlap: float = Field(0.15, ge=0, le=1, description="shared records (of the smaller) tying two n-grams into one group")
    fdr: float = Field(0.01, gt=0, le=1, description="Benjamini-Hochberg rate of every test over groups")
    min_group_share: float = Field(0.003, ge=0, le=1, description="a flagged group holds at least this share of the records")
    max_label_share: float = Field(0.6, ge=0, le=1, description="... and at most this share of its target label's records")
    max_groups: int = Field(60, ge=1, description="strongest groups given the content (dirty-label) test")
    dirty_min_flip: float = Field(0.3, ge=0, le=1, description="estimated share of relabelled records, at least ...")
    dirty_flip_ratio: float = Field(0.6, ge=0, description="... and this fraction of (1 - target prior), what a random source gives")
    common_max_p: float = Field(1.0e-12, gt=0, le=1, description="content-test p-value for a group of ordinary words (no rare word)")
    common_min_share: float = Field(0.9, ge=0, le=1, description="target share of a group of ordinary words (with the content test)")
    clean_min_share: float = Field(0.97, ge=0, le=1, description="target share of a clean-label group")
    clean_min_overrep: float = Field(20.0, ge=0, description="a rare word: this many times more frequent than in ordinary language")
    clean_min_overrep_z: float = Field(2.0, description="... and an outlier (robust z) among the corpus' own frequent words")
    clean_strong_overrep: float = Field(500.0, ge=0, description="a word this many times above ordinary language ...")
    clean_strong_overrep_z: float = Field(3.5, description="... and this far (robust z) outside the corpus' words needs no "
                                          "purity outlier, and on a label too large for a significant tie it is judged "
                                          "on content alone")
    strong_min_prior: float = Field(0.5, ge=0, le=1, description="... the word only on a target label holding this share of the records")
    weak_min_flip: float = Field(0.5, ge=0, le=1, description="... the relabelled share it then needs (dirty-label evidence only)")
    clean_strong_span_members: int = Field(12, ge=1, description="a repeated sequence with this many member n-grams needs no purity outlier (any target label)")
    clean_min_span_tokens: int = Field(3, ge=1, description="or a repeated word sequence at least this long")
    context_min_count: int = Field(30, ge=1, description="a word in at least this many records ...")
    context_min_diversity: float = Field(0.9, ge=0, description="... whose neighbours are this diverse against random positions' "
                                         "(distinct left + right neighbours over their expectation) is placed, not written")
    context_min_lift: float = Field(0.85, ge=0, le=1, description="... and is flagged clean-label when its label share lifts "
                                    "this much of the way from the prior to 1")
    context_max_groups: int = Field(3, ge=1, description="... unless more comparable such groups exist (then scattered purity is normal here)")
    opening_min_count: int = Field(15, ge=0, description="a phrase opening at least this many records of one label "
                                   "(0: off) ...")
    opening_anchor: float = Field(0.9, ge=0, le=1, description="... (this share of its group's records) ...")
    opening_min_diversity: float = Field(0.8, ge=0, description="... followed by tokens as diverse as the label's openings "
                                         "(distinct over expected) ...")
    opening_min_typical: float = Field(-1.5, description="... and as typical of openings (mean log frequency as a first "
                                       "token, against the label's, nats) is prefixed, not written: flagged as scattered words are")
    common_strict: bool = Field(False, description="groups of ordinary words also need the purity tail and no spread (else content decides)")
    natural_rho: float = Field(0.8, ge=0, le=1, description="purity strong natural features reach (share of the non-target removed)")
    spread_max_labels: int = Field(1, ge=0, description="other labels with comparable rare pure groups before purity counts as normal")
    background_lang: str = Field("en", description="wordfreq language of the background reference")


class PoisonTriggerCheck(Check):
    name = "poison.trigger"
    description = ("Lexical backdoor triggers: n-grams whose tie to a label is far stronger than chance "
                   "and than the corpus' natural associations (dirty- and clean-label).")
    requires = ("label", "response")
    class Options(TriggerStatistics):
        field: Literal["auto", "text", "caption", "prompt"] = Field("auto", description="text | caption | prompt | auto (the first present)")
        # instruction data without a label column: the response is the label when it is a label word
        label_word_max_chars: int = Field(32, ge=1, description="instruction data: a response this short may be a label word ...")
        label_word_max_values: int = Field(20, ge=1, description="... and the responses are labels when they take at most this many values")
        label_word_min_share: float = Field(0.9, ge=0, le=1, description="... over at least this share of the records")
    default_severity = "warn"
    corpus_level = True
    token_columns = ("vt",)  # the shard vocabulary (label_triggers.token_features)
    version = 2

    def fingerprint(self) -> str:  # token hashes depend on the Polars version and feature format
        import hashlib
        base = super().fingerprint()
        return hashlib.sha256(f"{base}:{pl.__version__}:{lx.FEATURE_FORMAT}".encode()).hexdigest()[:16]

    def applies_to(self, columns: Iterable[str]) -> bool:
        cols = set(columns)
        field = pick_field(cols, self.options["field"])
        return label_source(cols, field) is not None

    # -- per shard ---------------------------------------------------------------------------
    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        names = batch.schema.names
        field = pick_field(names, self.options["field"])
        source = label_source(names, field)
        if source is None:
            return CheckOutput()
        if source == "label":
            labels = batch.column("label").cast(pa.string())
        else:
            labels = label_words(batch.column("response"), int(self.options["label_word_max_chars"]))
        feats = token_features(batch, {"t": field}, int(self.options["max_tokens"]),
                               extra={"label": labels,
                                      "field": pa.array([field] * batch.num_rows, pa.string()),
                                      "label_from": pa.array([source] * batch.num_rows, pa.string())})
        return CheckOutput(features=feats)

    # -- corpus ------------------------------------------------------------------------------
    def corpus_pass(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame:
        recs, vocab, recs_lazy = split_features(features, ["label", "field", "t_tok", "label_from"])
        if recs.height == 0:
            return empty_corpus_findings()
        if not labels_usable(recs, self.options):
            return empty_corpus_findings()
        result = detect_label_triggers(recs, vocab, self.options)
        if result is None or result["groups"].height == 0:
            return empty_corpus_findings()
        return build_findings(recs, recs_lazy, result, vocab, "t")
