"""Lexical statistics engine: tokens, n-grams, repeated spans and association tests.

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
* :func:`label_association` gives, per n-gram, its document frequency, its
  most frequent label, the count and share of that label and a one-sided
  binomial log p-value against the label's prior.
* :func:`cooccurrence_groups` merges n-grams that occur in the same records
  (a multi-token trigger, the n-grams of one inserted sentence, several
  triggers used together) with a sparse co-occurrence matrix.
* :func:`repeated_spans` finds maximal token spans shared by many records (an
  inserted sentence, an injected response suffix) from frequent L-grams.
* :func:`benjamini_hochberg` and :func:`tail_pvalues` are the multiple-testing
  and "what does normal look like in this corpus" tools: a generalized Pareto
  tail fitted on the trimmed upper tail of a statistic over every group, so a
  candidate is judged against the corpus' own strongest natural associations.
* :func:`background_frequency` is an optional reference of ordinary language
  (the ``wordfreq`` package when it is installed; ``None`` otherwise).

Memory: only integer arrays (hashes, record and position indices) are held;
token strings are kept in a per-shard vocabulary and looked up for the few
n-grams a finding names. No Python loop runs over records or n-grams in the
hot paths.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import scipy.sparse as sp
from scipy import stats

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
# association with a label
# --------------------------------------------------------------------------------------------
def label_association(grams: pl.DataFrame, labels: np.ndarray, min_support: int = 5) -> pl.DataFrame:
    """Per n-gram with at least ``min_support`` records: ``df``, its most frequent
    label ``target`` (integer code), ``k`` (records with that label), ``share``
    (k/df), ``p0`` (the label's prior), ``z`` (one-proportion z-score) and
    ``logp`` (natural log of the one-sided binomial p-value of k or more).
    ``labels`` holds one integer code per record (-1: no label, ignored)."""
    lab = pl.Series("label", labels.astype(np.int32))
    valid = labels >= 0
    n_valid = int(valid.sum())
    prior = np.bincount(labels[valid], minlength=int(labels.max(initial=0)) + 1) / max(n_valid, 1)
    g = grams.select("rec", "g", "n").with_columns(label=lab.gather(grams["rec"].cast(pl.Int64)))
    g = g.filter(pl.col("label") >= 0)
    often = g.group_by("g").agg(df=pl.len()).filter(pl.col("df") >= min_support)
    g = g.join(often.select("g"), on="g", how="semi")
    counts = g.group_by(["g", "label"]).agg(c=pl.len(), n=pl.col("n").first())
    per = (counts.with_columns(df=pl.col("c").sum().over("g"))
           .sort(["g", "c", "label"], descending=[False, True, False])
           .group_by("g", maintain_order=True)
           .agg(pl.col("df").first(), target=pl.col("label").first(), k=pl.col("c").first(), n=pl.col("n").first()))
    if per.height == 0:
        return per.with_columns(share=pl.lit(0.0), p0=pl.lit(0.0), z=pl.lit(0.0), logp=pl.lit(0.0))
    k = per["k"].to_numpy().astype(np.float64)
    dfv = per["df"].to_numpy().astype(np.float64)
    p0 = prior[per["target"].to_numpy()]
    share = k / dfv
    z = (share - p0) / np.sqrt(np.maximum(p0 * (1 - p0), 1e-12) / dfv)
    logp = stats.binom.logsf(k - 1, dfv, p0)
    return per.with_columns(share=pl.Series(share), p0=pl.Series(p0), z=pl.Series(z), logp=pl.Series(logp))


def purity_evidence(k: np.ndarray, n: np.ndarray, p0: np.ndarray, rho: float) -> np.ndarray:
    """Evidence (nats, >= 0) that a feature's label share exceeds what strong natural
    features reach: -log P(X >= k), X ~ Binomial(n, p0 + (1 - p0) * rho). ``rho`` is
    the share of the non-target prior that a natural feature still removes."""
    s = np.asarray(p0, dtype=np.float64) + (1 - np.asarray(p0, dtype=np.float64)) * rho
    ev = -stats.binom.logsf(np.asarray(k, dtype=np.float64) - 1, np.asarray(n, dtype=np.float64), s)
    return np.maximum(ev, 0.0)


# --------------------------------------------------------------------------------------------
# grouping of co-occurring n-grams
# --------------------------------------------------------------------------------------------
def membership(grams: pl.DataFrame, cand: pl.DataFrame, n_records: int) -> tuple[sp.csr_matrix, pl.DataFrame]:
    """Binary records x candidates matrix for the n-grams of ``cand`` (columns
    ``g``, ``cid``); also returns the matching (rec, cid, pos) rows."""
    m = grams.join(cand.select("g", "cid"), on="g")
    X = sp.csr_matrix((np.ones(m.height, dtype=np.float32),
                       (m["rec"].to_numpy().astype(np.int64), m["cid"].to_numpy().astype(np.int64))),
                      shape=(n_records, cand.height))
    return X, m


def cooccurrence_groups(X: sp.csr_matrix, support: np.ndarray, target: np.ndarray, n_records: int,
                        min_overlap: float = 0.3, min_lift: float = 25.0, min_count: int = 3,
                        min_size_ratio: float = 0.2) -> np.ndarray:
    """Connected components of candidates that co-occur far beyond chance.

    Two candidates with the same target are linked when they share at least
    ``max(min_count, min_overlap * min(support))`` records, the smaller has at
    least ``min_size_ratio`` of the larger's support (so a rare n-gram spanning a
    trigger and an ordinary word does not chain them) and their co-occurrence is
    ``min_lift`` times what independence predicts (less when the pair covers a
    large share of the corpus). Returns a component id per candidate."""
    c = X.shape[1]
    if c == 0:
        return np.zeros(0, dtype=np.int64)
    co = (X.T @ X).tocoo()
    a, b, cnt = co.row, co.col, co.data
    sa, sb = support[a].astype(np.float64), support[b].astype(np.float64)
    keep = (a < b) & (target[a] == target[b])
    keep &= cnt >= np.maximum(min_count, min_overlap * np.minimum(sa, sb))
    # comparable sizes: a small n-gram that merely touches two features must not bridge them
    keep &= np.minimum(sa, sb) >= min_size_ratio * np.maximum(sa, sb)
    # lift over independence; a pair covering a large share of the corpus cannot reach a big lift
    need = np.minimum(min_lift, 0.5 * n_records / np.maximum(np.maximum(sa, sb), 1.0))
    keep &= cnt * n_records >= need * sa * sb
    graph = sp.coo_matrix((np.ones(int(keep.sum())), (a[keep], b[keep])), shape=(c, c))
    _, comp = sp.csgraph.connected_components(graph, directed=False)
    return comp.astype(np.int64)


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


# --------------------------------------------------------------------------------------------
# multiple testing and tails
# --------------------------------------------------------------------------------------------
def benjamini_hochberg(logp: np.ndarray, q: float) -> np.ndarray:
    """Boolean mask of the hypotheses rejected at false-discovery rate ``q``
    (``logp``: natural-log p-values)."""
    logp = np.asarray(logp, dtype=np.float64)
    m = len(logp)
    if m == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(logp)
    thresh = np.log(q * np.arange(1, m + 1) / m)
    ok = logp[order] <= thresh
    if not ok.any():
        return np.zeros(m, dtype=bool)
    last = np.nonzero(ok)[0].max()
    out = np.zeros(m, dtype=bool)
    out[order[: last + 1]] = True
    return out


def tail_pvalues(values: np.ndarray, skip_top: int = 5, tail_size: int = 100,
                 min_tail: int = 20, fallback_scale: float = 1.0) -> np.ndarray:
    """Log p-values of each value under the corpus' own upper tail.

    The largest ``skip_top`` values (possible attacks) are left out; the next
    ``tail_size`` are the sample of strong *natural* values. Excesses over the
    smallest of them are fitted with a generalized Pareto distribution (shape
    clipped to [0, 0.5], so a heavy-tailed corpus widens the null); the p-value of
    a value v is the fitted tail probability of v times the share of the values in
    the tail sample. With fewer than ``min_tail`` values, an exponential tail of
    scale ``fallback_scale`` above the largest sample value is assumed."""
    v = np.asarray(values, dtype=np.float64)
    m = len(v)
    if m == 0:
        return np.zeros(0)
    srt = np.sort(v)[::-1]
    sample = srt[skip_top: skip_top + tail_size]
    if len(sample) < min_tail:
        u = float(sample.min()) if len(sample) else 0.0
        frac = max(len(sample), 1) / m
        return np.minimum(0.0, np.log(frac) - np.maximum(v - u, 0) / fallback_scale)
    u = float(sample[-1])
    exc = sample - u
    scale_mom = max(float(exc.mean()), 1e-6)
    try:
        shape, _, scale = stats.genpareto.fit(exc, floc=0)
    except (ValueError, RuntimeError, FloatingPointError):  # pragma: no cover - scipy fit failure
        shape, scale = 0.0, scale_mom
    if not np.isfinite(shape) or not np.isfinite(scale) or scale <= 0:
        shape, scale = 0.0, scale_mom
    shape = float(np.clip(shape, 0.0, 0.5))
    if shape == 0.0:
        scale = max(scale, scale_mom)
    frac = len(sample) / m
    logsf = stats.genpareto.logsf(np.maximum(v - u, 0), shape, 0, scale)
    return np.minimum(0.0, np.log(frac) + logsf)


# --------------------------------------------------------------------------------------------
# background language reference
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _wordfreq():
    try:
        import wordfreq  # noqa: F401
        from wordfreq import word_frequency
    except ImportError:  # not installed: no background reference
        return None
    return word_frequency


def has_background() -> bool:
    """Whether a background language-frequency reference is available."""
    return _wordfreq() is not None


def background_frequency(tokens: Sequence[str], lang: str = "en", floor: float = 1e-8) -> np.ndarray | None:
    """Frequency of each word in ordinary language (per word of running text),
    at least ``floor``; None when no reference is installed. Tokens without a
    letter get NaN (punctuation and numbers are not judged by rarity)."""
    wf = _wordfreq()
    if wf is None:
        return None
    out = np.full(len(tokens), np.nan)
    for i, t in enumerate(tokens):  # only the few tokens of candidate groups
        if t and any(ch.isalpha() for ch in t):
            try:
                out[i] = max(wf(t, lang), floor)
            except (LookupError, ValueError):  # a language wordfreq does not know
                out[i] = floor
    return out


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


def log10p(logp: float) -> float:
    return float(logp) / math.log(10)
