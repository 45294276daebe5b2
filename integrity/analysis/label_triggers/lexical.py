"""Lexical engine: tokens, n-grams, repeated spans and context diversity.

Model-free building blocks shared by the lexical poisoning checks
(``poison.trigger``, ``poison.target``) and reusable for any text field
(classification text, prompts, responses, image captions):

* :func:`tokenize` turns a text column into per-record lists of 64-bit token
  hashes with the character offsets of each token in the *original* string,
  so a finding can point at the exact span (vectorized in Polars: the text is
  cut into word / punctuation / whitespace pieces whose lengths add up to the
  string, and offsets are cumulative sums of piece lengths).
* :class:`TokenTable` holds the exploded tokens of a corpus as flat NumPy
  arrays; :meth:`TokenTable.ngrams` derives n-gram hashes by mixing adjacent
  token hashes, and :func:`doc_ngrams` counts each n-gram once per record.
* :func:`repeated_spans` finds maximal token spans shared by many records (an
  inserted sentence, an injected response suffix) from frequent L-grams.
* :func:`context_diversity` tells a word placed at random positions from a
  written one by the variety of its neighbours.
* The association, grouping, multiple-testing and background-language tools
  (:func:`label_association`, :func:`cooccurrence_groups`,
  :func:`benjamini_hochberg`, :func:`tail_pvalues`, :func:`background_frequency`,
  ...) live in :mod:`integrity.analysis.label_triggers.stats` and are
  re-exported here.

Memory: only integer arrays (hashes, record and position indices) are held;
token strings are kept in a per-shard vocabulary and looked up for the few
n-grams a finding names. No Python loop runs over records or n-grams in the
hot paths.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

# re-exported: callers use ``lexical.<name>`` for the whole engine
from integrity.analysis.label_triggers.stats import (  # noqa: F401
    background_frequency, benjamini_hochberg, cooccurrence_groups, has_background, label_association, log10p,
    membership, purity_evidence, tail_pvalues)

#: one token: a CJK/kana character, a run of other word characters, or a run of punctuation/symbols
_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}"
TOKEN_PATTERN = rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]+"
#: the same plus whitespace runs: the pieces tile the whole string, so their lengths give offsets
_PIECE_PATTERN = rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]+|\s+"
_SEED = 0x5EED_1E71  # token hashing seed (part of the feature format)
_U64 = np.uint64
_M1 = _U64(0x9E3779B97F4A7C15)
_M2 = _U64(0xBF58476D1CE4E5B9)
_M3 = _U64(0x94D049BB133111EB)
#: sentinel token hashes marking the start and end of a field (for n-grams such as "<s> when")
BOS = _U64(0x0B05_0B05_0B05_0B05)
EOS = _U64(0x0E05_0E05_0E05_0E05)
BOUNDARY_TOKENS = {int(BOS): "<s>", int(EOS): "</s>"}
FEATURE_FORMAT = 1  # bump when tokenization or hashing changes


# --------------------------------------------------------------------------------------------
# tokenization
# --------------------------------------------------------------------------------------------
def hash_tokens(tokens: pl.Series) -> pl.Series:
    """Stable (for one Polars version) 64-bit hash of each lower-cased token string."""
    return tokens.str.to_lowercase().hash(seed=_SEED).alias("h")


def _list_array(offsets: np.ndarray, values: np.ndarray, value_type: pa.DataType) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values, type=value_type))


def tokenize(texts: pl.Series | pa.Array | Sequence[str | None], max_tokens: int = 1024,
             vocabulary: bool = True) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Tokenize a text column.

    Returns ``(tokens, vocab)``: ``tokens`` has one row per input text with
    ``tok`` (list[u64] hashes of the lower-cased tokens), ``start`` and ``end``
    (list[u32] character offsets into the original string); at most
    ``max_tokens`` tokens are kept per text. ``vocab`` maps each distinct hash to
    its lower-cased token (``h``, ``token``), or is None when not asked for.
    A null text gives empty lists.
    """
    if isinstance(texts, (pa.Array, pa.ChunkedArray)):
        texts = pl.Series("t", texts)
    elif not isinstance(texts, pl.Series):
        texts = pl.Series("t", list(texts), dtype=pl.Utf8)
    texts = texts.cast(pl.Utf8).fill_null("")
    n = texts.len()
    pieces = texts.str.extract_all(_PIECE_PATTERN)
    counts = pieces.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = pieces.explode().drop_nulls()
    plen = flat.str.len_chars().to_numpy().astype(np.int64)
    gstart = np.cumsum(plen) - plen
    piece_off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=piece_off[1:])
    rec = np.repeat(np.arange(n, dtype=np.int64), counts)
    first = np.zeros(n, dtype=np.int64)
    has = counts > 0
    first[has] = gstart[piece_off[:-1][has]]
    start = gstart - first[rec] if len(rec) else gstart
    is_tok = ~flat.str.contains(r"^\s").to_numpy()
    rec, start, plen = rec[is_tok], start[is_tok], plen[is_tok]
    toks = flat.filter(pl.Series(is_tok))
    # cap tokens per record
    tcounts = np.bincount(rec, minlength=n) if len(rec) else np.zeros(n, dtype=np.int64)
    toff = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(tcounts, out=toff[1:])
    idx_in_rec = np.arange(len(rec), dtype=np.int64) - toff[:-1][rec] if len(rec) else np.zeros(0, np.int64)
    keep = idx_in_rec < max_tokens
    if not keep.all():
        rec, start, plen = rec[keep], start[keep], plen[keep]
        toks = toks.filter(pl.Series(keep))
        tcounts = np.bincount(rec, minlength=n)
        np.cumsum(tcounts, out=toff[1:])
    hashes = hash_tokens(toks).to_numpy().astype(np.uint64)
    start32 = start.astype(np.uint32)
    end32 = (start + plen).astype(np.uint32)
    frame = pl.from_arrow(pa.table({
        "tok": _list_array(toff, hashes, pa.uint64()),
        "start": _list_array(toff, start32, pa.uint32()),
        "end": _list_array(toff, end32, pa.uint32()),
    }))
    vocab = None
    if vocabulary:
        vocab = pl.DataFrame({"h": pl.Series(hashes, dtype=pl.UInt64),
                              "token": toks.str.to_lowercase().str.slice(0, 64)}).unique("h")
    return frame, vocab


# --------------------------------------------------------------------------------------------
# hashing helpers (NumPy, wrapping uint64 arithmetic)
# --------------------------------------------------------------------------------------------
def mix(a: np.ndarray, b: np.ndarray | np.uint64) -> np.ndarray:
    """Order-dependent combination of two uint64 hash arrays (splitmix-style finalizer)."""
    with np.errstate(over="ignore"):
        x = (a * _M1) ^ (b + _M2)
        x ^= x >> _U64(30)
        x *= _M2
        x ^= x >> _U64(27)
        x *= _M3
        x ^= x >> _U64(31)
    return x


# --------------------------------------------------------------------------------------------
# exploded corpus tokens
# --------------------------------------------------------------------------------------------
@dataclass
class TokenTable:
    """Every token of a corpus field as flat arrays, records contiguous and in order.

    ``rec`` (record index), ``pos`` (token index in the record; boundary tokens
    have positions -1 and len), ``tok`` (uint64 hash); ``n_records`` records.
    """

    rec: np.ndarray
    pos: np.ndarray
    tok: np.ndarray
    n_records: int

    @classmethod
    def from_lists(cls, tok_lists: pl.Series, boundaries: bool = True) -> "TokenTable":
        """Build from a list[u64] column (one row per record); with ``boundaries``,
        a start and an end sentinel are added to every non-empty record."""
        n = tok_lists.len()
        lens = tok_lists.list.len().fill_null(0).to_numpy().astype(np.int64)
        flat = tok_lists.explode().drop_nulls().to_numpy().astype(np.uint64)
        rec = np.repeat(np.arange(n, dtype=np.int64), lens)
        off = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lens, out=off[1:])
        pos = np.arange(len(flat), dtype=np.int64) - off[:-1][rec] if len(flat) else np.zeros(0, np.int64)
        if boundaries and len(flat):
            nz = np.nonzero(lens > 0)[0]
            rec = np.concatenate([rec, nz, nz])
            pos = np.concatenate([pos, np.full(len(nz), -1), lens[nz]])
            tok = np.concatenate([flat, np.full(len(nz), BOS, dtype=np.uint64), np.full(len(nz), EOS, dtype=np.uint64)])
            order = np.lexsort((pos, rec))
            return cls(rec[order], pos[order], tok[order], n)
        return cls(rec, pos, flat, n)

    def ngrams(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rec, pos of first token, hash) of every n-gram lying inside one record.
        N-grams made only of boundary sentinels are dropped."""
        m = len(self.tok) - n + 1
        if m <= 0:
            e = np.zeros(0, np.int64)
            return e, e, np.zeros(0, np.uint64)
        h = self.tok[:m].copy()
        ok = np.ones(m, dtype=bool)
        for i in range(1, n):
            h = mix(h, self.tok[i:m + i])
            ok &= self.rec[i:m + i] == self.rec[:m]
        if n == 1:
            ok &= (self.tok != BOS) & (self.tok != EOS)
        else:
            ok &= ~((self.tok[:m] == EOS) | (self.tok[n - 1:] == BOS))
        return self.rec[:m][ok], self.pos[:m][ok], h[ok]

    def index_of(self, rec: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Flat index of the token at (rec, pos) of each pair (the pairs must exist)."""
        key = self.rec * (1 << 24) + (self.pos + 1)
        return np.searchsorted(key, np.asarray(rec, dtype=np.int64) * (1 << 24) + np.asarray(pos, dtype=np.int64) + 1)

    def gram_tokens(self, rec: np.ndarray, pos: np.ndarray, n: np.ndarray | int) -> list[list[int]]:
        """Token hashes of the n-grams of order ``n`` starting at (rec, pos) — for naming n-grams."""
        idx = self.index_of(rec, pos)
        ns = np.broadcast_to(np.asarray(n, dtype=np.int64), idx.shape)
        return [self.tok[i:i + k].tolist() for i, k in zip(idx.tolist(), ns.tolist())]


def doc_ngrams(table: TokenTable, orders: Iterable[int] = (1, 2, 3), min_count: int = 2) -> pl.DataFrame:
    """Each distinct n-gram of each record once: columns ``rec`` (u32), ``g`` (u64
    hash), ``n`` (order, u8), ``pos`` (the position of one of its occurrences).

    N-grams occurring fewer than ``min_count`` times in the whole corpus are
    dropped first (they can reach no document frequency that any test uses),
    which removes most of the long tail before the per-record de-duplication."""
    frames = []
    for n in orders:
        rec, pos, h = table.ngrams(n)
        frames.append(pl.DataFrame({"rec": rec.astype(np.uint32), "g": h, "pos": pos.astype(np.int32)})
                      .with_columns(n=pl.lit(n, dtype=pl.UInt8)))
    df = pl.concat(frames)
    if min_count > 1:
        keep = df.group_by("g").agg(c=pl.len()).filter(pl.col("c") >= min_count).select("g")
        df = df.join(keep, on="g", how="semi")
    # one row per (rec, g): a single 64-bit key is much cheaper to de-duplicate than two columns
    key = mix(df["g"].to_numpy(), df["rec"].to_numpy().astype(np.uint64))
    return df.with_columns(k=pl.Series(key, dtype=pl.UInt64)).unique("k", keep="any").drop("k")


def document_frequency(grams: pl.DataFrame) -> pl.DataFrame:
    """``g`` -> ``df`` (records holding it)."""
    return grams.group_by("g").agg(df=pl.len())


# --------------------------------------------------------------------------------------------
# repeated spans
# --------------------------------------------------------------------------------------------
def repeated_spans(table: TokenTable, length: int, min_df: int, max_df: int | None = None) -> pl.DataFrame:
    """Maximal spans made of overlapping ``length``-grams that each occur in at
    least ``min_df`` (and at most ``max_df``) records.

    Returns one row per (record, span): ``rec``, ``p0``/``p1`` (first and
    one-past-last token position; boundary sentinels excluded), ``span`` (hash of
    the span's token sequence) and ``ntok``. Records shorter than ``length``
    tokens are matched as a whole when the whole field repeats (``length`` is
    then the field length)."""
    rec, pos, h = table.ngrams(length)
    df = pl.DataFrame({"rec": rec, "pos": pos, "h": h})
    often = df.group_by("h").agg(c=pl.len()).filter(pl.col("c") >= min_df).select("h")
    df = df.join(often, on="h", how="semi")
    dfreq = df.unique(["rec", "h"]).group_by("h").agg(d=pl.len())
    dfreq = dfreq.filter(pl.col("d") >= min_df)
    if max_df is not None:
        dfreq = dfreq.filter(pl.col("d") <= max_df)
    hit = df.join(dfreq.select("h"), on="h").sort(["rec", "pos"])
    if hit.height == 0:
        return pl.DataFrame(schema={"rec": pl.Int64, "p0": pl.Int64, "p1": pl.Int64, "span": pl.UInt64, "ntok": pl.Int64})
    r = hit["rec"].to_numpy()
    p = hit["pos"].to_numpy()
    new = np.ones(len(r), dtype=bool)
    new[1:] = (r[1:] != r[:-1]) | (p[1:] > p[:-1] + 1)
    starts = p[new]
    ends = np.maximum.reduceat(p, np.nonzero(new)[0]) + length
    recs = r[new]
    spans = pl.DataFrame({"rec": recs, "p0": starts, "p1": ends})
    # hash of each span's token sequence: fold the span's tokens in order
    spans = spans.with_columns(span=pl.Series(span_hashes(table, recs, starts, ends)))
    return spans.with_columns(ntok=pl.col("p1") - pl.col("p0"))


def span_hashes(table: TokenTable, rec: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Hash of the tokens at positions [p0, p1) of each record (vectorized over spans)."""
    i0 = table.index_of(rec, p0)
    lens = (p1 - p0).astype(np.int64)
    h = np.full(len(rec), _U64(0x51A7), dtype=np.uint64)
    maxlen = int(lens.max(initial=0))
    for j in range(maxlen):  # loop over span length, vectorized over spans
        act = lens > j
        if not act.any():
            break
        idx = i0[act] + j
        h[act] = mix(h[act], table.tok[idx])
    return h


# --------------------------------------------------------------------------------------------
# context diversity: is a word placed where any word could be?
# --------------------------------------------------------------------------------------------
def context_diversity(table: TokenTable, words: Sequence[int]) -> pl.DataFrame:
    """Per word of ``words``: ``m`` occurrences and ``R``, its distinct left plus right
    neighbours over what ``m`` random positions of this corpus would show.

    A word inserted at random positions (a backdoor trigger dropped into text) has the
    neighbours of random positions: R near 1. A natural word has its own syntax ("is
    honestly", "python module"): its neighbours repeat and R is well below 1 once it
    has a few dozen occurrences. The expected number of distinct neighbours of m random
    positions is sum over tokens v of 1 - (1 - p_v)^m, p_v the token's share of all
    left (right) neighbours. Start and end of field count as neighbours."""
    tok, rec = table.tok, table.rec
    empty = pl.DataFrame(schema={"w": pl.UInt64, "m": pl.Int64, "R": pl.Float64})
    if len(tok) < 3 or not len(words):
        return empty
    i = np.arange(1, len(tok) - 1)
    i = i[(rec[i - 1] == rec[i]) & (rec[i + 1] == rec[i]) & (tok[i] != BOS) & (tok[i] != EOS)]
    _, c_left = np.unique(tok[i - 1], return_counts=True)
    _, c_right = np.unique(tok[i + 1], return_counts=True)
    p_left, p_right = c_left / c_left.sum(), c_right / c_right.sum()
    j = i[np.isin(tok[i], np.asarray(list(words), dtype=np.uint64))]
    if len(j) == 0:
        return empty
    per = (pl.DataFrame({"w": tok[j], "l": tok[j - 1], "r": tok[j + 1]})
           .group_by("w").agg(m=pl.len().cast(pl.Int64), d=(pl.col("l").n_unique() + pl.col("r").n_unique()).cast(pl.Float64)))
    ms = per["m"].to_numpy()
    expect = {int(m): float(np.sum(-np.expm1(m * np.log1p(-p_left))) + np.sum(-np.expm1(m * np.log1p(-p_right))))
              for m in np.unique(ms)}  # a few distinct counts: one pass over the vocabulary each
    return per.with_columns(R=pl.col("d") / pl.Series([expect[int(m)] for m in ms])).select("w", "m", "R")


def fmt_tokens(hashes: Sequence[int], vocab: dict[int, str]) -> str:
    """Readable form of an n-gram from its token hashes."""
    return " ".join(BOUNDARY_TOKENS.get(int(h), vocab.get(int(h), "?")) for h in hashes)


def occurrences(table: TokenTable, vocab: dict[int, str], rec: int, spans: Iterable[tuple[int, int]],
                starts: Sequence[int], ends: Sequence[int], field: str) -> list[dict]:
    """Evidence entries for token spans ``(first position, length)`` of one record:
    overlapping or adjacent spans are merged; each entry has ``field``, ``start``,
    ``end`` (character offsets) and ``text`` (the lower-cased tokens)."""
    n_tok = len(starts)
    iv = sorted((max(int(p), 0), min(int(p) + int(n) - 1, n_tok - 1)) for p, n in spans)
    merged: list[list[int]] = []
    for a, b in iv:
        if a > b:
            continue
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    out = []
    for a, b in merged:
        toks = table.gram_tokens(np.array([rec]), np.array([a]), np.array([b - a + 1]))[0]
        out.append({"field": field, "start": int(starts[a]), "end": int(ends[b]), "text": fmt_tokens(toks, vocab)})
    return out
