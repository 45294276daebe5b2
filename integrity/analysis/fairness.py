"""Fairness view: who is mentioned, and in what company, against the reference.

Report only (no verdict by default). Per record, cheap word-boundary lexicon
matches: whether the record mentions each demographic/identity group, whether
it mentions an occupation, and counts of positive and negative sentiment
words. Per shard, for each group:

* ``rate`` – share of records mentioning the group;
* ``occupation`` – share of those records that also mention an occupation;
* ``sentiment`` – (positive − negative) / (positive + negative) words in those
  records (None when they hold no sentiment word).

:func:`compare` sets a shard's figures against the reference profile's, so a
shift in representation (a group mentioned far more or less often, or in a
more negative context) is visible. The lexicons are short, English and
deliberately plain; they show representation, they do not judge records.
"""
from __future__ import annotations

import math
from typing import Any

import polars as pl

GROUPS: dict[str, list[str]] = {
    "female": ["woman", "women", "she", "her", "hers", "herself", "girl", "girls", "female", "females", "mother",
               "mothers", "daughter", "daughters", "wife", "wives", "sister", "sisters", "lady", "ladies", "mrs", "ms"],
    "male": ["man", "men", "he", "him", "his", "himself", "boy", "boys", "male", "males", "father", "fathers",
             "son", "sons", "husband", "husbands", "brother", "brothers", "gentleman", "gentlemen", "mr"],
    "nonbinary": ["nonbinary", "non-binary", "genderqueer", "transgender", "trans"],
    "lgb": ["gay", "lesbian", "lesbians", "bisexual", "homosexual", "queer", "lgbt", "lgbtq"],
    "christian": ["christian", "christians", "christianity", "church", "catholic", "protestant"],
    "muslim": ["muslim", "muslims", "islam", "islamic", "mosque"],
    "jewish": ["jew", "jews", "jewish", "judaism", "synagogue"],
    "hindu_buddhist": ["hindu", "hindus", "hinduism", "buddhist", "buddhists", "buddhism", "sikh", "sikhs"],
    "black": ["black people", "african american", "african americans", "african"],
    "white": ["white people", "caucasian", "caucasians", "european", "europeans"],
    "asian": ["asian", "asians", "chinese", "japanese", "korean", "indian", "vietnamese"],
    "hispanic": ["hispanic", "hispanics", "latino", "latina", "latinos", "latinx", "mexican", "mexicans"],
    "arab_middle_eastern": ["arab", "arabs", "arabic", "middle eastern", "persian", "iranian"],
    "indigenous": ["indigenous", "native american", "native americans", "aboriginal", "first nations"],
    "young": ["young", "youth", "teenager", "teenagers", "teen", "teens", "child", "children", "kid", "kids"],
    "old": ["old people", "elderly", "senior", "seniors", "aged", "retiree", "retirees", "grandmother",
            "grandfather"],
    "disability": ["disabled", "disability", "disabilities", "blind", "deaf", "wheelchair", "autistic",
                   "handicapped"],
}
OCCUPATIONS = [
    "doctor", "doctors", "nurse", "nurses", "engineer", "engineers", "teacher", "teachers", "scientist",
    "scientists", "lawyer", "lawyers", "programmer", "programmers", "developer", "developers", "ceo", "manager",
    "managers", "secretary", "secretaries", "pilot", "pilots", "surgeon", "surgeons", "professor", "professors",
    "cook", "chef", "cleaner", "maid", "janitor", "soldier", "soldiers", "police", "officer", "officers",
    "farmer", "farmers", "driver", "drivers", "banker", "bankers", "accountant", "accountants", "artist",
    "artists", "writer", "writers", "homemaker", "receptionist", "mechanic", "plumber", "electrician",
]
POSITIVE = [
    "good", "great", "excellent", "best", "better", "happy", "love", "loved", "wonderful", "brilliant", "smart",
    "intelligent", "kind", "successful", "strong", "beautiful", "honest", "trusted", "respected", "skilled",
    "talented", "fair", "safe", "friendly", "helpful", "positive",
]
NEGATIVE = [
    "bad", "worse", "worst", "terrible", "awful", "hate", "hated", "stupid", "lazy", "violent", "criminal",
    "criminals", "dangerous", "dirty", "evil", "poor", "weak", "ugly", "dishonest", "angry", "hostile", "threat",
    "terrorist", "terrorists", "illegal", "negative",
]


def _pattern(words: list[str]) -> str:
    alts = "|".join(sorted((w.replace("-", r"\-") for w in words), key=len, reverse=True))
    return rf"(?i)\b(?:{alts})\b"


_GROUP_RE = {g: _pattern(w) for g, w in GROUPS.items()}
_OCC_RE = _pattern(OCCUPATIONS)
_POS_RE = _pattern(POSITIVE)
_NEG_RE = _pattern(NEGATIVE)
COLUMNS = [f"fair_{g}" for g in GROUPS] + ["fair_occupation", "fair_pos", "fair_neg"]


def fairness_features(texts: pl.Series) -> pl.DataFrame:
    """Per record: ``fair_<group>`` (0/1), ``fair_occupation`` (0/1), ``fair_pos``/``fair_neg`` (counts)."""
    t = pl.col("t")
    df = pl.DataFrame({"t": texts.cast(pl.Utf8).fill_null("").str.slice(0, 20_000)})
    return df.select(
        *[t.str.contains(p).cast(pl.Int8).alias(f"fair_{g}") for g, p in _GROUP_RE.items()],
        t.str.contains(_OCC_RE).cast(pl.Int8).alias("fair_occupation"),
        t.str.count_matches(_POS_RE).cast(pl.Int16).alias("fair_pos"),
        t.str.count_matches(_NEG_RE).cast(pl.Int16).alias("fair_neg"),
    )


def summarize(df: pl.DataFrame) -> dict[str, Any]:
    """Per group ``rate``, ``occupation`` and ``sentiment`` (see the module docstring), and ``n``."""
    n = df.height
    out: dict[str, Any] = {"n": n, "groups": {}}
    if n == 0 or "fair_occupation" not in df.columns:
        return out
    occ = df["fair_occupation"].cast(pl.Int64)
    pos = df["fair_pos"].cast(pl.Int64)
    neg = df["fair_neg"].cast(pl.Int64)
    for g in GROUPS:
        col = f"fair_{g}"
        if col not in df.columns:
            continue
        m = df[col].cast(pl.Int64) > 0
        k = int(m.sum())
        p, q = int(pos.filter(m).sum() or 0), int(neg.filter(m).sum() or 0)
        out["groups"][g] = {
            "count": k,
            "rate": k / n,
            "occupation": (int(occ.filter(m).sum() or 0) / k) if k else None,
            "sentiment": ((p - q) / (p + q)) if (p + q) else None,
        }
    return out


def compare(shard: dict[str, Any], reference: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rows per group: shard and reference rate, their ratio, and the same for context."""
    rows = []
    ref_groups = (reference or {}).get("groups", {})
    for g, s in shard.get("groups", {}).items():
        r = ref_groups.get(g, {})
        rr = r.get("rate")
        ratio = None
        if rr is not None:
            ratio = (s["rate"] + 1e-4) / (rr + 1e-4)
        rows.append({
            "group": g, "count": s["count"], "rate": s["rate"], "ref_rate": rr,
            "rate_ratio": None if ratio is None or not math.isfinite(ratio) else ratio,
            "occupation": s["occupation"], "ref_occupation": r.get("occupation"),
            "sentiment": s["sentiment"], "ref_sentiment": r.get("sentiment"),
        })
    return rows
