"""Label-trigger analysis: token n-grams tied to a label far beyond chance (backdoor triggers).

The engine of the lexical poisoning checks (``poison.trigger``,
``poison.target``, ``poison.caption_trigger``), pure (no check, engine or
report import):

* :mod:`integrity.analysis.label_triggers.lexical` – tokens with character
  offsets, n-grams, repeated spans, context diversity (reusable for any text
  field), re-exporting :mod:`integrity.analysis.label_triggers.stats` –
  association, grouping, multiple-testing and background-language tools;
* :mod:`integrity.analysis.label_triggers.features` – the per-record token
  features a check stores per shard, and reading every shard's back in the
  corpus pass;
* :mod:`integrity.analysis.label_triggers.detect` – :func:`detect_label_triggers`,
  the association and grouping, running the evidence tests of
  :mod:`integrity.analysis.label_triggers.clean_label` and
  :mod:`integrity.analysis.label_triggers.dirty_label`;
* :mod:`integrity.analysis.label_triggers.findings` – the findings a flagged
  group becomes;
* :mod:`integrity.analysis.label_triggers.responses` – ``poison.target``'s
  injected response spans and the prompt features that explain them.
"""
from integrity.analysis.label_triggers.detect import core_records, detect_label_triggers, label_codes
from integrity.analysis.label_triggers.features import split_features, token_features
from integrity.analysis.label_triggers.findings import (build_findings, empty_corpus_findings, gram_labels,
                                                        offsets_for, score_of)

__all__ = ["build_findings", "core_records", "detect_label_triggers", "empty_corpus_findings", "gram_labels",
           "label_codes", "offsets_for", "score_of", "split_features", "token_features"]
