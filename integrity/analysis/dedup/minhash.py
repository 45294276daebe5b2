"""MinHash signatures, LSH band keys and Jaccard estimates, vectorized with NumPy.

Permutations are Dietzfelbinger's multiply-add-shift family, strongly universal
from 32-bit keys to 32-bit values: ``h_i(x) = (a_i * x + b_i) >> 32`` in
wrapping 64-bit arithmetic, with ``x`` the 64-bit shingle hash folded to 32
bits and ``(a_i, b_i)`` drawn from a seeded generator. One permutation is one
NumPy pass over all shingles of a batch followed by ``minimum.reduceat`` per
record, so a batch costs ``num_perm`` vector passes and no Python per record.

The signature only feeds the LSH band keys (computed per shard). Candidates
are verified with bottom-k sketches (:func:`bottom_k`, the ``k`` smallest
distinct shingle values of a record): the Jaccard similarity is *exact* for
records with at most ``k`` distinct shingles and a low-variance estimate for
longer ones, where a k-permutation MinHash estimate has a standard error of
about 0.035 at 0.8 with 128 permutations, enough to misjudge many of the pairs
that real corpora hold just around the threshold.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from integrity.analysis.dedup.kernel import HAVE_NUMBA, sketch_jaccard_pairs
from integrity.analysis.dedup.text import U64, fmix64

#: shingles per block of :meth:`MinHasher.signatures` (512 KB of uint64: fits in L2)
SIG_BLOCK = 65_536


@dataclass(frozen=True)
class MinHasher:
    """``num_perm`` permutations (default ``bands * rows``); LSH uses the first ``bands * rows``."""

    num_perm: int = 0
    bands: int = 20
    rows: int = 5
    seed: int = 1

    def __post_init__(self) -> None:
        if self.num_perm == 0:
            object.__setattr__(self, "num_perm", self.bands * self.rows)
        if self.num_perm < 1 or self.bands < 1 or self.rows < 1:
            raise ValueError("num_perm, bands and rows must be positive")
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands * rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")

    @cached_property
    def params(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        a = rng.integers(1, 2**63, size=self.num_perm, dtype=np.uint64) * U64(2) + U64(1)
        b = rng.integers(0, 2**63, size=self.num_perm, dtype=np.uint64) * U64(2)
        return a, b

    def fingerprint(self) -> dict:
        """What makes two signatures comparable (stored with the history index)."""
        return {"family": "mas32-v1", "num_perm": self.num_perm, "bands": self.bands, "rows": self.rows,
                "seed": self.seed}

    def signatures(self, shingle_hash: np.ndarray, doc: np.ndarray, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
        """(docs, signature) for every record with at least one shingle: ``docs`` the
        record indices (ascending), ``signature`` a (len(docs), num_perm) uint32 matrix.
        ``doc`` must be sorted ascending."""
        if len(shingle_hash) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.num_perm), dtype=np.uint32)
        x = (shingle_hash ^ (shingle_hash >> U64(32))) & U64(0xFFFFFFFF)
        starts = np.flatnonzero(np.diff(doc, prepend=-1))
        docs = doc[starts]
        a, b = self.params
        sig = np.empty((self.num_perm, len(docs)), dtype=np.uint32)
        # blocks of whole records of about SIG_BLOCK shingles, so that every permutation's
        # passes run in cache (about 25 % less CPU than whole-batch passes; same values)
        cut = np.unique(np.append(np.searchsorted(starts, np.arange(0, len(x), SIG_BLOCK)), len(starts)))
        buf = np.empty(len(x), dtype=U64)
        shift = U64(32)
        for r0, r1 in zip(cut[:-1].tolist(), cut[1:].tolist()):
            s0 = int(starts[r0])
            s1 = int(starts[r1]) if r1 < len(starts) else len(x)
            xs, h, st = x[s0:s1], buf[:s1 - s0], starts[r0:r1] - s0
            for i in range(self.num_perm):
                np.multiply(xs, a[i], out=h)
                h += b[i]
                h >>= shift
                sig[i, r0:r1] = np.minimum.reduceat(h, st)
        return docs, np.ascontiguousarray(sig.T)

    def band_keys(self, sig: np.ndarray) -> np.ndarray:
        """(n, bands) uint64 keys, one per band of ``rows`` minima; the band's index is
        mixed in, so equal keys mean equal rows in the same band."""
        n = sig.shape[0]
        keys = np.empty((n, self.bands), dtype=U64)
        mult = U64(0x9E3779B97F4A7C15)
        for j in range(self.bands):
            k = np.full(n, (j + 1) * 0x2545F4914F6CDD1D & 0xFFFFFFFFFFFFFFFF, dtype=U64)
            for c in range(j * self.rows, (j + 1) * self.rows):
                k ^= sig[:, c].astype(U64)
                k *= mult
                k = fmix64(k)
            keys[:, j] = k
        return keys


SENTINEL = np.uint32(0xFFFFFFFF)


def fold32(shingle_hash: np.ndarray) -> np.ndarray:
    """The 64-bit shingle hashes folded to the 32-bit values sketches hold (never the sentinel)."""
    x = ((shingle_hash ^ (shingle_hash >> U64(32))) & U64(0xFFFFFFFF)).astype(np.uint32)
    return np.minimum(x, SENTINEL - np.uint32(1))


def bottom_k(shingle_hash: np.ndarray, doc: np.ndarray, docs: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """Bottom-k sketches: the ``k`` smallest distinct 32-bit shingle values of each
    record in ``docs`` (ascending, as flat ``values`` with ``offsets``), and each
    record's number of distinct shingles. A record with at most ``k`` distinct
    shingles keeps them all, so its Jaccard similarities are exact."""
    x = fold32(shingle_hash)
    key = np.sort((doc.astype(U64) << U64(32)) | x.astype(U64))
    keep = np.concatenate(([True], key[1:] != key[:-1]))  # distinct per record
    key = key[keep]
    d = (key >> U64(32)).astype(np.int64)
    pos = np.searchsorted(docs, d)
    counts = np.bincount(pos, minlength=len(docs))
    start = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(counts, out=start[1:])
    rank = np.arange(len(key)) - start[pos]
    small = rank < k
    values = (key[small] & U64(0xFFFFFFFF)).astype(np.uint32)
    kept = np.minimum(counts, k)
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(kept, out=offsets[1:])
    return values, offsets, counts.astype(np.int32)


def padded(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """(len(rows), k) matrix of the sketches of ``rows``, padded with the sentinel."""
    lens = offsets[rows + 1] - offsets[rows]
    col = np.arange(k)
    mask = col[None, :] < lens[:, None]
    idx = np.where(mask, offsets[rows][:, None] + col[None, :], 0)
    out = values[idx] if len(values) else np.zeros(idx.shape, dtype=np.uint32)
    out[~mask] = SENTINEL
    return out


def sketch_jaccard(a: np.ndarray, b: np.ndarray, na: np.ndarray, nb: np.ndarray, k: int) -> np.ndarray:
    """Jaccard similarity of row pairs of two padded bottom-k matrices (of any width
    holding every sketch's values; a truncated sketch fills exactly ``k``);
    ``na``/``nb`` are the records' distinct shingle counts. Exact when neither
    sketch is truncated; otherwise the estimate over all union values below the
    smaller truncation point (Li & Church's conditional random sampling)."""
    w = a.shape[1]
    tau_a = np.where(na > k, a[:, min(k, w) - 1], SENTINEL)
    tau_b = np.where(nb > k, b[:, min(k, w) - 1], SENTINEL)
    tau = np.minimum(tau_a, tau_b)[:, None]
    c = np.sort(np.concatenate([a, b], axis=1), axis=1)
    live = (c != SENTINEL) & (c <= tau)
    distinct = np.ones(c.shape, dtype=bool)
    distinct[:, 1:] = c[:, 1:] != c[:, :-1]
    both = np.zeros(c.shape, dtype=bool)
    both[:, :-1] = c[:, :-1] == c[:, 1:]
    union = (distinct & live).sum(axis=1)
    inter = (both & live).sum(axis=1)
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def sketch_pairs(values: np.ndarray, offsets: np.ndarray, nsh: np.ndarray, i: np.ndarray, j: np.ndarray, k: int,
                 other: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, chunk: int = 8192,
                 compiled: bool = True) -> np.ndarray:
    """Jaccard of sketch ``i`` and sketch ``j`` (of ``other`` = (values, offsets, nsh)
    when given). Compiled (numba, :mod:`~integrity.analysis.dedup.kernel`): each pair's
    two sorted sketches merged; else (``compiled=False``, or numba missing) pairs are taken
    in order of sketch length, chunk by chunk, each chunk padded only to its longest
    sketch and sorted row-wise (NumPy). Both give the same values."""
    if compiled and HAVE_NUMBA:
        return sketch_jaccard_pairs(values, offsets, nsh, i, j, k, other)
    ov, oo, on = other if other is not None else (values, offsets, nsh)
    out = np.empty(len(i), dtype=np.float64)
    if len(i) == 0:
        return out
    width = np.maximum(offsets[i + 1] - offsets[i], oo[j + 1] - oo[j])
    order = np.argsort(width, kind="stable")
    for s in range(0, len(i), chunk):
        sel = order[s:s + chunk]
        w = max(int(width[sel[-1]]), 1)
        ii, jj = i[sel], j[sel]
        out[sel] = sketch_jaccard(padded(values, offsets, ii, w), padded(ov, oo, jj, w), nsh[ii], on[jj], k)
    return out


def estimate(sig_a: np.ndarray, sig_b: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """MinHash estimate of the Jaccard similarity of row pairs of two signature matrices."""
    out = np.empty(sig_a.shape[0], dtype=np.float64)
    for s in range(0, len(out), chunk):
        out[s:s + chunk] = (sig_a[s:s + chunk] == sig_b[s:s + chunk]).mean(axis=1)
    return out


def lsh_probability(s: float | np.ndarray, bands: int, rows: int):
    """Probability that two records with Jaccard ``s`` share at least one band."""
    return 1.0 - (1.0 - np.asarray(s, dtype=np.float64) ** rows) ** bands
