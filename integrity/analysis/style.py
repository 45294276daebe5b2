"""Writing-style features of texts: how a text is written, not what it says.

One row of :data:`STYLE_FEATURES` per text, computed column-wise in Polars: length, word
length, function-word ratio, casing, punctuation spacing (tokenized ``" ,"`` vs attached
``","``), comma rate and position of the first comma, terminal punctuation, sentence count,
type/token ratio, digit/symbol/quote/newline rates, and parse-template proxies (which function
word opens the text, whether it opens with a subordinate clause and a comma closes it, whether
a noun phrase starts after that comma). ``poison.outlier``
(:mod:`integrity.checks.poison_outlier`) looks for label-tied regions of this space.
Not to be confused with :data:`integrity.analysis.features.STYLE_FEATURES`, the
synthetic-text style features.
"""
from __future__ import annotations

import polars as pl
import pyarrow as pa

FUNCTION_WORDS = frozenset(["the", "a", "an", "and", "or", "but", "if", "when", "while", "as", "since", "because", "although", "though", "unless", "until", "after", "before", "once", "whether", "so", "that", "which", "who", "whom", "whose", "what", "where", "why", "how", "i", "you", "he", "she", "it", "we", "they", "me", "him", "her", "us", "them", "my", "your", "his", "its", "our", "their", "this", "these", "those", "there", "here", "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "have", "has", "had", "will", "would", "shall", "should", "can", "could", "may", "might", "must", "of", "in", "on", "at", "by", "for", "with", "from", "to", "into", "about", "over", "under", "through", "between", "against", "without", "within", "not", "no", "nor", "very", "too", "also", "just", "only", "even", "then", "than", "such", "all", "any", "some", "each", "every", "more", "most", "much", "many", "few", "both", "either", "neither"])
SUBORDINATORS = ("if", "when", "while", "as", "since", "because", "although", "though", "unless", "until", "after",
                 "before", "once", "whether", "whenever", "whereas", "even")
OPENERS = ("the", "a", "an", "this", "that", "it", "i", "you", "he", "she", "they", "we", "there", "what", "how",
           "but", "and", "so", "in", "for", "with", "not", "one", "as", "if", "when", "while", "though", "although",
           "because", "since")
NP_STARTS = ("the", "a", "an", "this", "that", "these", "those", "it", "i", "you", "he", "she", "they", "we", "there",
             "his", "her", "its", "their", "my", "your", "our")

_CONTINUOUS = (
    "log_tokens", "mean_word_len", "function_word_ratio", "capitalized_ratio", "starts_upper", "upper_char_ratio",
    "spaced_punct_ratio", "attached_punct_ratio", "comma_rate", "first_comma_pos", "ends_terminal", "sentences",
    "type_token_ratio", "digit_ratio", "symbol_ratio", "newline_rate", "quote_paren_rate", "starts_subordinate",
    "sub_then_comma", "np_after_comma",
)
STYLE_FEATURES: tuple[str, ...] = _CONTINUOUS + tuple(f"opener_{w}" for w in OPENERS)


def style_features(texts: pa.Array | pl.Series | list) -> pl.DataFrame:
    """One row of :data:`STYLE_FEATURES` (float32) per text, computed column-wise in Polars."""
    if isinstance(texts, pl.Series):
        s = texts.cast(pl.Utf8)
    elif isinstance(texts, (pa.Array, pa.ChunkedArray)):
        s = pl.Series("t", texts).cast(pl.Utf8)
    else:
        s = pl.Series("t", list(texts), dtype=pl.Utf8)
    s = s.fill_null("")
    f32 = pl.Float32
    low = s.str.to_lowercase()
    words = low.str.extract_all(r"[a-z']+")
    nw = words.list.len().cast(f32).clip(1)
    toks = s.str.split(" ").list.len().cast(f32).clip(1)
    nch = s.str.len_chars().cast(f32).clip(1)
    first = words.list.first().fill_null("")
    after_comma = low.str.extract(r",\s*([a-z']+)", 1).fill_null("")
    comma_pos = low.str.find(",").cast(f32)
    cols: dict[str, pl.Series] = {
        "log_tokens": (toks + 1).log(),
        "mean_word_len": s.str.count_matches(r"[A-Za-z]").cast(f32) / nw,
        "function_word_ratio": words.list.eval(pl.element().is_in(list(FUNCTION_WORDS))).list.sum().cast(f32) / nw,
        "capitalized_ratio": s.str.count_matches(r"\b[A-Z][a-z]").cast(f32) / nw,
        "starts_upper": s.str.contains(r"^\s*[A-Z]").cast(f32),
        "upper_char_ratio": s.str.count_matches(r"[A-Z]").cast(f32) / nch,
        "spaced_punct_ratio": s.str.count_matches(r"\s[,.;:!?]").cast(f32) / toks,
        "attached_punct_ratio": s.str.count_matches(r"\w[,.;:!?]").cast(f32) / toks,
        "comma_rate": s.str.count_matches(",").cast(f32) / toks,
        "first_comma_pos": (comma_pos / nch).fill_null(1.0),
        "ends_terminal": s.str.contains(r"[.!?]\s*$").cast(f32),
        "sentences": (s.str.count_matches(r"[.!?](\s|$)").cast(f32) + 1).log(),
        "type_token_ratio": words.list.n_unique().cast(f32) / nw,
        "digit_ratio": s.str.count_matches(r"[0-9]").cast(f32) / nch,
        "symbol_ratio": s.str.count_matches(r"[^\w\s]").cast(f32) / nch,
        "newline_rate": s.str.count_matches("\n").cast(f32) / toks,
        "quote_paren_rate": s.str.count_matches(r"[\"'`()\[\]]").cast(f32) / toks,
        "starts_subordinate": first.is_in(list(SUBORDINATORS)).cast(f32),
        "sub_then_comma": (first.is_in(list(SUBORDINATORS)) & comma_pos.is_not_null()).cast(f32),
        "np_after_comma": after_comma.is_in(list(NP_STARTS)).cast(f32),
    }
    for w in OPENERS:
        cols[f"opener_{w}"] = (first == w).cast(f32)
    return pl.DataFrame(cols).select(pl.all().cast(f32).fill_nan(0.0).fill_null(0.0))
