"""Cheap per-record text features, vectorized with Polars.

These are the features a reference profile summarizes and that
``distribution.drift`` and ``synthetic.text`` compare against it. Each is one
float per record, computed without a model:

============================  ===============================================
``log_chars``                 log(1 + characters)
``log_words``                 log(1 + words)
``mean_word_len``             mean characters per word
``frac_alpha``/``digit``/...  share of characters that are letters, digits,
                              white space, punctuation, non-ASCII; share of
                              letters that are upper case
``newline_rate``              line breaks per 100 characters
``compression_ratio``         zlib-compressed bytes / UTF-8 bytes (low:
                              repetitive, high: random or dense)
``rep_3gram``                 share of word 3-grams that repeat an earlier one
``distinct_1``/``distinct_2`` distinct words / words, distinct bigrams / bigrams
``stopword_frac``             share of words that are function words of the
                              guessed language: a cheap fluency proxy (keyword
                              spam and gibberish are low, prose ~0.4-0.55)
``sent_len_mean``/``_cv``     words per sentence and its coefficient of
                              variation ("burstiness"; machine text is even)
``comma_rate``                commas per word
``first_person``              share of words that are I/me/my/we/...
``llm_word_rate``             words generators favour ("delve", "crucial",
                              "furthermore", ...) per 100 words
``boilerplate``               generator boilerplate phrases ("As an AI language
                              model", "I hope this helps", ...) found
``lang_conf``                 share of words that are function words of the
                              guessed language
============================  ===============================================

plus the categorical ``language`` (ISO 639-1 code from function words for
en/de/fr/es/it/pt/nl, a script name such as ``cyrillic`` or ``cjk`` for
other scripts, ``und`` when unsure).

:func:`record_text` picks the text a record is judged by: ``text``, else
``prompt`` and ``response`` joined, else ``caption``.
"""
from __future__ import annotations

import math
import re
import zlib

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

#: numeric feature columns, in a fixed order (the profile and the checks rely on it)
NUMERIC_FEATURES: tuple[str, ...] = (
    "log_chars", "log_words", "mean_word_len", "frac_alpha", "frac_digit", "frac_upper", "frac_space",
    "frac_punct", "frac_nonascii", "newline_rate", "compression_ratio", "rep_3gram", "distinct_1",
    "distinct_2", "stopword_frac", "sent_len_mean", "sent_len_cv", "comma_rate", "first_person",
    "llm_word_rate", "boilerplate", "lang_conf",
)
CATEGORICAL_FEATURES: tuple[str, ...] = ("language",)
#: features that carry style rather than topic; what synthetic.text compares
STYLE_FEATURES: tuple[str, ...] = (
    "log_words", "mean_word_len", "frac_upper", "frac_punct", "newline_rate", "compression_ratio",
    "rep_3gram", "distinct_1", "distinct_2", "stopword_frac", "sent_len_mean", "sent_len_cv", "comma_rate",
    "first_person", "llm_word_rate", "boilerplate",
)
MAX_CHARS = 20_000  # characters of a record that features look at (bounded cost per record)

_STOP = {
    "en": "the of and to a in is it that for on with as was be by this are or at from an not have has but "
          "which they you he she we his her their its were been can will would there if all one so what when "
          "do no more also than then these them who into only about other some any could should may such",
    "de": "der die das und ist nicht ein eine zu den von mit sich des auf für im dem ich es auch als an wie "
          "wird oder bei aus sind noch nach einer einem war hat werden wir sie aber nur über",
    "fr": "le la les de des et est un une du en que qui dans pour pas sur au ce il elle avec par plus sont ne "
          "se son sa ses mais ou aux cette nous vous ils été être été",
    "es": "el la los las de del y que en un una es por con no para se su al lo como más pero sus le ya o "
          "este sí porque esta entre cuando muy sin sobre también fue ha son",
    "it": "il lo la gli le di del della e che è un una per non con si da sono nel al ma come anche più se "
          "questo alla dei delle ha ci",
    "pt": "o a os as de do da dos das e que em um uma para com não se por mais como mas foi ao ele ela seu "
          "sua ou são também já está",
    "nl": "de het een en van ik te dat die in is niet op zijn met voor er maar om hij ook als dan aan bij "
          "nog wel naar kan deze dit wordt",
}
STOPWORDS: dict[str, list[str]] = {k: sorted(set(v.split())) for k, v in _STOP.items()}
_FIRST_PERSON = ["i", "me", "my", "mine", "myself", "we", "us", "our", "ours", "i'm", "i've", "i'd", "i'll"]
#: words instruction-tuned generators over-use (style evidence only, never proof)
LLM_WORDS = sorted(set(
    "delve delves delving crucial furthermore additionally moreover overall comprehensive insights "
    "intricate intricacies realm tapestry notably pivotal leverage leveraging showcasing showcase "
    "underscores underscore fostering foster vibrant multifaceted nuanced seamless seamlessly "
    "paramount meticulous meticulously embark testament ultimately essentially significant "
    "significantly enhance enhancing valuable potential various".split()))
#: known generator boilerplate (case-insensitive regexes); strong ones first
BOILERPLATE_STRONG = [
    r"as an ai(?: language)? model", r"as a (?:large )?language model", r"i(?:'m| am) an ai\b",
    r"i cannot (?:fulfill|provide|assist with) (?:that|this|your) request",
    r"i(?:'m| am) sorry,? but (?:as an ai|i (?:can(?:'|no)t|am not able to))",
    r"my knowledge cutoff", r"as of my (?:last )?(?:knowledge )?(?:update|cutoff|training)",
    r"^(?:certainly|sure|absolutely|of course)[!,.] here(?:'s| is| are)",
    r"regenerate response",
]
BOILERPLATE_WEAK = [
    r"i hope this helps", r"let me know if you (?:have any (?:other|more|further) questions|need (?:any )?"
    r"(?:more|further|additional))", r"feel free to ask", r"here(?:'s| is) an? (?:revised|rewritten|"
    r"improved|updated) version", r"it(?:'s| is) (?:important|worth) (?:to note|noting) that",
    r"\bin conclusion,", r"i hope this (?:information|answer)",
]
_BOILER_STRONG_RE = "(?im)" + "|".join(f"(?:{p})" for p in BOILERPLATE_STRONG)
_BOILER_WEAK_RE = "(?i)" + "|".join(f"(?:{p})" for p in BOILERPLATE_WEAK)
_WORD_RE = r"[\p{L}\p{N}]+(?:['’][\p{L}]+)?"
_SCRIPTS = [("cyrillic", r"\p{Cyrillic}"), ("greek", r"\p{Greek}"), ("arabic", r"\p{Arabic}"),
            ("hebrew", r"\p{Hebrew}"), ("devanagari", r"\p{Devanagari}"),
            ("cjk", r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]"), ("thai", r"\p{Thai}")]


def boilerplate_patterns() -> tuple[re.Pattern, re.Pattern]:
    """(strong, weak) compiled Python regexes of the generator boilerplate lists."""
    strong = re.compile("|".join(f"(?:{p})" for p in BOILERPLATE_STRONG), re.I | re.M)
    weak = re.compile("|".join(f"(?:{p})" for p in BOILERPLATE_WEAK), re.I)
    return strong, weak


def record_text(batch: pa.RecordBatch | pa.Table) -> pa.Array | None:
    """The text each record is judged by (None when the batch has no text column)."""
    names = set(batch.schema.names)
    if "text" in names:
        return batch.column("text").cast(pa.large_string())
    if "prompt" in names or "response" in names:
        parts = [batch.column(c).cast(pa.large_string()).fill_null("") for c in ("prompt", "response") if c in names]
        if len(parts) == 1:
            return parts[0]
        return pc.binary_join_element_wise(parts[0], parts[1], pa.scalar("\n", pa.large_string()))
    if "caption" in names:
        return batch.column("caption").cast(pa.large_string())
    return None


def _compression_ratio(texts: list[str | None]) -> list[float | None]:
    out: list[float | None] = []
    for t in texts:
        if not t:
            out.append(None)
            continue
        raw = t.encode("utf-8", "surrogatepass")
        out.append(len(zlib.compress(raw, 1)) / len(raw))
    return out


def _safe_div(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    return pl.when(b > 0).then(a / b).otherwise(None)


def text_features(texts: pa.Array | pl.Series | list[str | None]) -> pl.DataFrame:
    """One row per text with :data:`NUMERIC_FEATURES` (Float64, null for empty texts)
    and ``language`` (Utf8).

    Character-level features are regex counts over each text; word-level ones are
    computed on one long frame of (record, word) rows (exploded once), grouped back
    per record, which keeps the cost near that of a couple of regex passes.
    """
    if isinstance(texts, pl.Series):
        s = texts.cast(pl.Utf8)
    elif isinstance(texts, list):
        s = pl.Series("t", texts, dtype=pl.Utf8)
    else:
        s = pl.from_arrow(texts.cast(pa.large_string()))
        s = s.cast(pl.Utf8) if isinstance(s, pl.Series) else s.to_series().cast(pl.Utf8)
    s = s.alias("t").str.slice(0, MAX_CHARS)
    n_rows = len(s)
    ratio = pl.Series("_ratio", _compression_ratio(s.to_list()), dtype=pl.Float64)
    df = pl.DataFrame({"t": s, "_ratio": ratio}).with_row_index("i")
    t = pl.col("t")
    # ---- word level: one (record, word) row per word
    words = (df.select("i", t.str.to_lowercase().str.extract_all(_WORD_RE).alias("w")).explode("w")
             .drop_nulls("w").with_columns(h=pl.col("w").hash(7)))
    same1 = pl.col("i").shift(-1) == pl.col("i")
    same2 = pl.col("i").shift(-2) == pl.col("i")
    h = pl.col("h")
    words = words.with_columns(
        bi=pl.when(same1).then(h * 1000003 + h.shift(-1)),
        tri=pl.when(same2).then((h * 1000003 + h.shift(-1)) * 1000003 + h.shift(-2)),
        **{f"_sw_{k}": pl.col("w").is_in(v) for k, v in STOPWORDS.items()},
        _fp=pl.col("w").is_in(_FIRST_PERSON), _llm=pl.col("w").is_in(LLM_WORDS),
    )
    per_rec = words.group_by("i").agg(
        _nw=pl.len().cast(pl.Float64),
        _d1=h.n_unique().cast(pl.Float64),
        _nb=pl.col("bi").count().cast(pl.Float64), _d2=pl.col("bi").drop_nulls().n_unique().cast(pl.Float64),
        _nt=pl.col("tri").count().cast(pl.Float64), _d3=pl.col("tri").drop_nulls().n_unique().cast(pl.Float64),
        _wl=pl.col("w").str.len_chars().sum().cast(pl.Float64),
        _fpc=pl.col("_fp").sum().cast(pl.Float64), _llmc=pl.col("_llm").sum().cast(pl.Float64),
        **{f"_sw_{k}": pl.col(f"_sw_{k}").sum().cast(pl.Float64) for k in STOPWORDS},
    )
    # ---- sentences: words per segment between . ! ? and line breaks
    sents = (df.select("i", t.str.extract_all(r"[^.!?\n]+").alias("s")).explode("s").drop_nulls("s")
             .with_columns(k=pl.col("s").str.count_matches(r"\S+").cast(pl.Float64)).filter(pl.col("k") > 0)
             .group_by("i").agg(_sm=pl.col("k").mean(), _ss=pl.col("k").std(), _sc=pl.len()))
    base = (df.lazy().join(per_rec.lazy(), on="i", how="left", maintain_order="left")
            .join(sents.lazy(), on="i", how="left", maintain_order="left"))
    nw = pl.col("_nw").fill_null(0.0)
    n = pl.col("_n")
    letters = pl.col("_letters")
    base = base.with_columns(
        _n=t.str.len_chars().cast(pl.Float64),
        # letters = characters minus non-letters (far fewer matches to count)
        _letters=(t.str.len_chars() - t.str.count_matches(r"\P{L}")).cast(pl.Float64),
        **{f"_sw_{k}": pl.col(f"_sw_{k}").fill_null(0.0) for k in STOPWORDS},
    )
    sw_cols = [f"_sw_{k}" for k in STOPWORDS]
    best = pl.max_horizontal(*[pl.col(c) for c in sw_cols])
    lang_expr = pl.lit("und")
    for k in reversed(list(STOPWORDS)):
        lang_expr = pl.when(pl.col(f"_sw_{k}") == best).then(pl.lit(k)).otherwise(lang_expr)
    script_expr = pl.lit("und")
    for name, pat in reversed(_SCRIPTS):
        script_expr = pl.when(t.str.count_matches(pat).cast(pl.Float64) > 0.3 * letters) \
            .then(pl.lit(name)).otherwise(script_expr)
    feats = base.with_columns(
        log_chars=(n + 1).log(),
        log_words=(nw + 1).log(),
        mean_word_len=_safe_div(pl.col("_wl"), nw),
        frac_alpha=_safe_div(letters, n),
        frac_digit=_safe_div(t.str.count_matches(r"\p{N}").cast(pl.Float64), n),
        frac_upper=_safe_div(t.str.count_matches(r"\p{Lu}").cast(pl.Float64), letters),
        frac_space=_safe_div(t.str.count_matches(r"\s").cast(pl.Float64), n),
        frac_punct=_safe_div(t.str.count_matches(r"[\p{P}\p{S}]").cast(pl.Float64), n),
        frac_nonascii=_safe_div(t.str.count_matches(r"[^\x00-\x7F]").cast(pl.Float64), n),
        newline_rate=_safe_div(100.0 * t.str.count_matches("\n").cast(pl.Float64), n),
        compression_ratio=pl.col("_ratio"),
        rep_3gram=pl.when(pl.col("_nt") > 0).then(1.0 - pl.col("_d3") / pl.col("_nt")).otherwise(0.0),
        distinct_1=_safe_div(pl.col("_d1"), nw),
        distinct_2=_safe_div(pl.col("_d2"), pl.col("_nb")),
        stopword_frac=_safe_div(best, nw),
        sent_len_mean=pl.col("_sm"),
        sent_len_cv=pl.when(pl.col("_sc") > 1).then(pl.col("_ss") / pl.col("_sm")).otherwise(0.0),
        comma_rate=_safe_div(t.str.count_matches(",").cast(pl.Float64), nw),
        first_person=_safe_div(pl.col("_fpc"), nw),
        llm_word_rate=_safe_div(100.0 * pl.col("_llmc"), nw),
        boilerplate=(t.str.count_matches(_BOILER_STRONG_RE) * 2 + t.str.count_matches(_BOILER_WEAK_RE)).cast(pl.Float64),
        lang_conf=_safe_div(best, nw),
        language=pl.when(n.is_null() | (n == 0)).then(pl.lit(None, dtype=pl.Utf8))
        .when((best >= 2) & (best >= 0.08 * nw)).then(lang_expr).otherwise(script_expr),
    )
    out = feats.sort("i").select([pl.col(c).cast(pl.Float64) for c in NUMERIC_FEATURES] + [pl.col("language")]).collect()
    assert out.height == n_rows
    empty = (s.str.len_chars().fill_null(0) == 0)
    # an empty text has no features at all
    return out.with_columns([pl.when(empty).then(None).otherwise(pl.col(c)).alias(c) for c in NUMERIC_FEATURES])


def batch_features(batch: pa.RecordBatch | pa.Table) -> pl.DataFrame | None:
    """``record_id``, ``row`` and :func:`text_features` of a normalized batch (None without text)."""
    texts = record_text(batch)
    if texts is None:
        return None
    feats = text_features(texts)
    ids = pl.from_arrow(batch.column("record_id")).cast(pl.Utf8).alias("record_id")
    rows = pl.from_arrow(batch.column("row")).cast(pl.Int64).alias("row")
    return feats.with_columns(ids, rows).select(["record_id", "row", *feats.columns])


def finite(x: float | None) -> float | None:
    """``x`` or None when it is None/NaN/inf (for JSON details)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# --------------------------------------------------------------------------- sharing between checks

import threading as _threading

_local = _threading.local()


def cached_batch_features(batch: pa.RecordBatch) -> pl.DataFrame | None:
    """:func:`batch_features` of ``batch``, computed once when several checks of one
    shard task read the same batch (a one-entry cache per thread that holds the
    batch itself, so its buffers cannot be reused while the entry lives)."""
    col = batch.column("text") if "text" in batch.schema.names else None
    key = (batch.num_rows, tuple(b.address if b is not None else 0 for b in col.buffers())) if col is not None else None
    hit = getattr(_local, "entry", None)
    if key is not None and hit is not None and hit[0] == key and hit[1] is batch:
        return hit[2]
    feats = batch_features(batch)
    _local.entry = (key, batch, feats) if key is not None else None
    return feats
