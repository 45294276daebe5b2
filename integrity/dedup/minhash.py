"""MinHash signatures, LSH band keys and Jaccard estimates, vectorized with NumPy.

Permutations are Dietzfelbinger's multiply-add-shift family, strongly universal
from 32-bit keys to 32-bit values: ``h_i(x) = (a_i * x + b_i) >> 32`` in
wrapping 64-bit arithmetic, with ``x`` the 64-bit shingle hash folded to 32
bits and ``(a_i, b_i)`` drawn from a seeded generator. One permutation is one
NumPy pass over all shingles of a batch followed by ``minimum.reduceat`` per
record, so a batch costs ``num_perm`` vector passes and no Python per record.

Signatures keep 32-bit minima for the LSH band keys (computed per shard) and
16-bit minima for verification (b-bit minwise hashing, Li & König 2010): two
different 32-bit minima agree in their low 16 bits with probability 2**-16, a
bias removed in :func:`estimate`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from integrity.dedup.text import U64, fmix64

_B = 16  # bits kept per minimum for verification
_COLLIDE = 2.0 ** -_B


@dataclass(frozen=True)
class MinHasher:
    """``num_perm`` permutations; LSH uses the first ``bands * rows`` of them."""

    num_perm: int = 128
    bands: int = 20
    rows: int = 5
    seed: int = 1

    def __post_init__(self) -> None:
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
        sig = np.empty((len(docs), self.num_perm), dtype=np.uint32)
        h = np.empty_like(x)
        shift = U64(32)
        for i in range(self.num_perm):
            np.multiply(x, a[i], out=h)
            h += b[i]
            h >>= shift
            sig[:, i] = np.minimum.reduceat(h, starts)
        return docs, sig

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


def low_bits(sig: np.ndarray) -> np.ndarray:
    """The 16-bit minima kept for verification."""
    return (sig & 0xFFFF).astype(np.uint16)


def estimate(sig_a: np.ndarray, sig_b: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Estimated Jaccard similarity of row pairs of two (n, num_perm) uint16 matrices."""
    n = sig_a.shape[0]
    out = np.empty(n, dtype=np.float64)
    for s in range(0, n, chunk):
        eq = (sig_a[s:s + chunk] == sig_b[s:s + chunk]).mean(axis=1)
        out[s:s + chunk] = eq
    return np.clip((out - _COLLIDE) / (1.0 - _COLLIDE), 0.0, 1.0)


def estimate_pairs(sig: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 65536,
                   other: np.ndarray | None = None) -> np.ndarray:
    """Estimated Jaccard of ``sig[i]`` and ``(other or sig)[j]`` (gathered chunk by chunk)."""
    other = sig if other is None else other
    out = np.empty(len(i), dtype=np.float64)
    for s in range(0, len(i), chunk):
        out[s:s + chunk] = estimate(sig[i[s:s + chunk]], other[j[s:s + chunk]])
    return out


def lsh_probability(s: float | np.ndarray, bands: int, rows: int):
    """Probability that two records with Jaccard ``s`` share at least one band."""
    return 1.0 - (1.0 - np.asarray(s, dtype=np.float64) ** rows) ** bands
