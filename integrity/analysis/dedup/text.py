"""Vectorized word tokens with character offsets, and stable 64-bit hashes of
tokens, shingles (word n-grams) and long token windows.

Tokenization follows the usual near-dedup normalization (and the exact-truth
tool of the benchmark): lower case, every character that is not a word
character (Unicode letter or digit, or ``_``) separates tokens, so punctuation
is dropped. A batch's strings are joined with ``\\x00`` and decoded to code
points once; word characters, lower-casing and token boundaries then come from
NumPy table look-ups, so there is no Python work per token.

Hashes are plain 64-bit arithmetic (no library hash whose value may change
between versions), so they can be stored in the persistent history index:

* token: ``fmix64(sum(cp[i] * P**i) ^ len * C)`` over the lower-cased code
  points of the token;
* a run of ``w`` consecutive tokens (a shingle or a span window):
  ``fmix64(sum(tok[j] * M**(w-1-j)))``, computed for every start position at
  once from prefix sums (``M`` is odd, hence invertible modulo 2**64).

Offsets are Python string indices (code points) into the field the token came
from, so a report can highlight ``text[start:end]``.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

U64 = np.uint64
_P = U64(0x9E3779B97F4A7C15)  # token polynomial base (odd)
_P_INV = pow(int(_P), -1, 1 << 64)
_C = U64(0xD6E8FEB86659FD93)
_M = 0xA0761D6478BD642F  # run-of-tokens polynomial base (odd, invertible mod 2**64)
_M_INV = pow(_M, -1, 1 << 64)
_SEP = "\x00"
#: code points decoded per chunk: bounds the temporary arrays of one batch
CHUNK_CHARS = 1_000_000

_tables_lock = threading.Lock()
_tables: tuple[np.ndarray, np.ndarray] | None = None
_powers: dict[int, np.ndarray] = {}


def fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer (a bijection that spreads every input bit), in place on a copy."""
    x = x.astype(U64, copy=True)
    x ^= x >> U64(33)
    x *= U64(0xFF51AFD7ED558CCD)
    x ^= x >> U64(33)
    x *= U64(0xC4CEB9FE1A85EC53)
    x ^= x >> U64(33)
    return x


def _char_tables() -> tuple[np.ndarray, np.ndarray]:
    """(is_word[cp], lower[cp]) for every code point (built once per process, ~0.07 s):
    a word character is ``str.isalnum()`` or ``_`` (exactly ``re``'s ``\\w``), lower-cased
    by ``str.lower()`` where that gives one character."""
    global _tables
    if _tables is None:
        with _tables_lock:
            if _tables is None:
                _tables = _build_char_tables()
    return _tables


def _build_char_tables() -> tuple[np.ndarray, np.ndarray]:
    n = 0x110000
    cps = np.arange(n, dtype=np.uint32)
    every = cps.tobytes().decode("utf-32-le", "surrogatepass")  # all code points as one string
    word = np.zeros(n, dtype=bool)
    for m in re.finditer(r"\w+", every):  # runs of word characters: a few thousand matches
        word[m.start():m.end()] = True
    lower = cps.copy()
    step = 4096
    for at in range(0, n, step):
        chunk = every[at:at + step]
        low = chunk.lower()
        if low == chunk:
            continue
        if len(low) == len(chunk):  # lower-casing never drops characters: here each maps to one
            lower[at:at + len(chunk)] = np.frombuffer(low.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        else:  # a character lower-cases to several (U+0130): those keep their own code point
            for i, c in enumerate(chunk):
                if len(c.lower()) == 1:
                    lower[at + i] = ord(c.lower())
    word[0xD800:0xE000] = False  # lone surrogates never form words
    return word, np.where(word, lower, cps)


def _pow_table(base: int, n: int) -> np.ndarray:
    """base**k mod 2**64 for k < n (cached and grown on demand)."""
    cur = _powers.get(base)
    if cur is None or len(cur) < n:
        size = max(n, 1024, 0 if cur is None else 2 * len(cur))
        arr = np.full(size, base, dtype=U64)
        arr[0] = 1
        cur = np.cumprod(arr, dtype=U64)  # wraps modulo 2**64
        _powers[base] = cur
    return cur[:n]


@dataclass
class Tokens:
    """Word tokens of a batch, in record order (then field order, then position).

    ``doc`` is the record's index in the batch, ``field`` the index into
    :attr:`fields`, ``start``/``end`` code-point offsets into that field's string.
    """

    hash: np.ndarray  # uint64
    doc: np.ndarray  # int64
    field: np.ndarray  # int8
    start: np.ndarray  # int32
    end: np.ndarray  # int32
    n_docs: int
    fields: tuple[str, ...]

    @property
    def counts(self) -> np.ndarray:
        """Tokens per record."""
        return np.bincount(self.doc, minlength=self.n_docs)

    def __len__(self) -> int:
        return len(self.hash)


def _tokenize_chunk(strings: list[str]) -> tuple[np.ndarray, ...]:
    """Token hashes and (string index, start, end) for a list of strings."""
    word, lower = _char_tables()
    lens = np.fromiter((len(s) for s in strings), dtype=np.int64, count=len(strings))
    base = np.zeros(len(strings), dtype=np.int64)
    if len(strings) > 1:
        base[1:] = np.cumsum(lens[:-1] + 1)
    cp = np.frombuffer(_SEP.join(strings).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    isw = word[cp]
    if not isw.any():
        e = np.zeros(0, dtype=np.int64)
        return np.zeros(0, dtype=U64), e, e, e
    edge = np.diff(isw.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edge == 1)
    ends = np.flatnonzero(edge == -1)
    # sum(lower[cp[i]] * P**(i - start)) over each token = P**-start * (S[end] - S[start])
    # with S the prefix sums of lower[cp[i]] * P**i (non-word characters never fall inside a token)
    n = len(cp)
    prefix = np.zeros(n + 1, dtype=U64)
    np.cumsum(lower[cp].astype(U64) * _pow_table(int(_P), n), dtype=U64, out=prefix[1:])
    h = (prefix[ends] - prefix[starts]) * _pow_table(_P_INV, n)[starts]
    h ^= (ends - starts).astype(U64) * _C
    h = fmix64(h)
    sidx = np.searchsorted(base, starts, side="right") - 1
    return h, sidx, starts - base[sidx], ends - base[sidx]


def _long_text_pieces(text: str, size: int) -> Iterator[tuple[int, str]]:
    """(offset, piece) of a text longer than ``size`` code points, cut after a non-word character.

    Tokens never cross a non-word character, so tokenizing the pieces gives the
    whole text's tokens (token hashes do not depend on position) while each
    pass holds arrays of ``size`` code points, not of the whole text (a 50 MB
    record took ~2 GB in one pass). Only a single token longer than half of
    ``size`` (500,000 characters by default) is cut inside and counted as two.
    """
    word, _ = _char_tables()
    at = 0
    while at < len(text):
        end = min(at + size, len(text))
        if end < len(text):
            tail = text[end - size // 2:end]
            cp = np.frombuffer(tail.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
            gaps = np.flatnonzero(~word[cp])
            if gaps.size:
                end = end - size // 2 + int(gaps[-1]) + 1
        yield at, text[at:end]
        at = end


def tokenize(columns: dict[str, list[str | None]], chunk_chars: int = CHUNK_CHARS) -> Tokens:
    """Tokenize the named text fields of a batch (each a list with one string or
    None per record); a record's tokens run over its fields in the given order."""
    fields = tuple(columns)
    n_docs = len(next(iter(columns.values()))) if columns else 0
    nf = len(fields)
    cols = [columns[f] for f in fields]
    out: list[tuple[np.ndarray, ...]] = []
    pending: list[str] = []
    pending_ids: list[int] = []  # record * nf + field
    size = 0

    def flush() -> None:
        nonlocal pending, pending_ids, size
        if pending:
            h, sidx, s, e = _tokenize_chunk(pending)
            ids = np.asarray(pending_ids, dtype=np.int64)[sidx]
            out.append((h, ids, s, e))
        pending, pending_ids, size = [], [], 0

    for r in range(n_docs):
        for fi in range(nf):
            t = cols[fi][r]
            if not t:
                continue
            if len(t) > chunk_chars:  # a huge text alone, piece by piece: bounded arrays, same tokens
                flush()
                for offset, piece in _long_text_pieces(t, chunk_chars):
                    h, _, s, e = _tokenize_chunk([piece])
                    out.append((h, np.full(len(h), r * nf + fi, np.int64), s + offset, e + offset))
                continue
            if size and size + len(t) > chunk_chars:
                flush()
            pending.append(t)
            pending_ids.append(r * nf + fi)
            size += len(t) + 1
    flush()
    if out:
        h = np.concatenate([o[0] for o in out])
        ids = np.concatenate([o[1] for o in out])
        s = np.concatenate([o[2] for o in out])
        e = np.concatenate([o[3] for o in out])
    else:
        h = np.zeros(0, dtype=U64)
        ids = s = e = np.zeros(0, dtype=np.int64)
    return Tokens(hash=h, doc=ids // max(nf, 1), field=(ids % max(nf, 1)).astype(np.int8),
                  start=s.astype(np.int32), end=e.astype(np.int32), n_docs=n_docs, fields=fields)


def run_hashes(tok_hash: np.ndarray, first: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Hash of the runs ``tok_hash[first : first + length]`` (length >= 1), all at once."""
    if len(first) == 0:
        return np.zeros(0, dtype=U64)
    n = len(tok_hash)
    qpow = _pow_table(_M_INV, n)
    prefix = np.zeros(n + 1, dtype=U64)
    np.cumsum(tok_hash * qpow, dtype=U64, out=prefix[1:])
    last = first + length
    mpow = _pow_table(_M, n)
    return fmix64((prefix[last] - prefix[first]) * mpow[last - 1])


def shingles(tokens: Tokens, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Word n-gram shingle hashes and the record of each (sorted by record).

    A record with fewer than ``n`` tokens (but at least one) gets one shingle of
    all its tokens; a record without tokens gets none.
    """
    doc = tokens.doc
    if len(doc) == 0:
        return np.zeros(0, dtype=U64), np.zeros(0, dtype=np.int64)
    counts = tokens.counts
    first_of_doc = np.zeros(tokens.n_docs, dtype=np.int64)
    first_of_doc[1:] = np.cumsum(counts[:-1])
    full = np.flatnonzero(doc[n - 1:] == doc[: len(doc) - n + 1]) if len(doc) >= n else np.zeros(0, np.int64)
    short_docs = np.flatnonzero((counts > 0) & (counts < n))
    first = np.concatenate([full, first_of_doc[short_docs]])
    length = np.concatenate([np.full(len(full), n, dtype=np.int64), counts[short_docs]])
    h = run_hashes(tokens.hash, first, length)
    d = doc[first]
    order = np.argsort(d, kind="stable")
    return h[order], d[order]


def windows(tokens: Tokens, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every run of ``w`` tokens inside one field of one record, and the
    index (into the token arrays) of each run's first token, in token order."""
    if len(tokens) < w:
        return np.zeros(0, dtype=U64), np.zeros(0, dtype=np.int64)
    key = tokens.doc * 128 + tokens.field
    first = np.flatnonzero(key[w - 1:] == key[: len(key) - w + 1])
    return run_hashes(tokens.hash, first, np.full(len(first), w, dtype=np.int64)), first


def text_field_names(schema: pa.Schema) -> tuple[str, ...]:
    """The fields a dedup check compares: ``text``; else ``prompt`` and ``response``
    (instruction data, compared as a pair); else ``caption``; else none."""
    names = set(schema.names)
    if "text" in names:
        return ("text",)
    if "prompt" in names or "response" in names:
        return tuple(c for c in ("prompt", "response") if c in names)
    if "caption" in names:
        return ("caption",)
    return ()


def text_fields(batch: pa.RecordBatch | pa.Table) -> dict[str, list[str | None]]:
    """The text a dedup check compares (:func:`text_field_names`), one list of strings per field."""
    return {c: batch.column(c).to_pylist() for c in text_field_names(batch.schema)}
