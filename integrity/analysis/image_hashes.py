"""Whole-image hashes and thumbnails of :mod:`integrity.analysis.images`: the 64-bit DCT
perceptual hash, the exact pixel hash, and the colour and structure thumbnails that confirm
near-duplicate candidates (``dedup.image``).
"""
from __future__ import annotations

import math
import struct
from typing import TYPE_CHECKING

import numpy as np
import xxhash
from PIL import Image

if TYPE_CHECKING:  # polars is imported lazily where it is used
    import polars as pl

PHASH_SIDE = 32  # grey image side the DCT runs on
PHASH_LOW = 8  # low-frequency block kept: 8x8 = 64 bits
SIG_SIDE = 8  # confirmation thumbnail side (RGB)
GREY_SIDE = 16  # structure thumbnail side (grey)

# --------------------------------------------------------------------------- perceptual hash


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m.astype(np.float64)


_DCT = _dct_matrix(PHASH_SIDE)[:PHASH_LOW]  # only the rows of the kept coefficients
_BIT_WEIGHTS = (np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64))


def phash_grey(grey: Image.Image) -> np.ndarray:
    """The 32x32 float grey array a perceptual hash is computed from."""
    return np.asarray(grey.resize((PHASH_SIDE, PHASH_SIDE), Image.Resampling.BOX), dtype=np.float64)


def phash_many(greys: np.ndarray) -> np.ndarray:
    """64-bit DCT perceptual hashes of a stack of 32x32 grey arrays (n, 32, 32) -> uint64 (n,).

    Bit i (most significant first, row-major over the 8x8 low frequencies) is set
    when that DCT coefficient is above the block's median (the imagehash ``phash``
    definition), computed for the whole stack with two matrix products.
    """
    if len(greys) == 0:
        return np.zeros(0, dtype=np.uint64)
    low = np.einsum("ki,nij,lj->nkl", _DCT, greys, _DCT, optimize=True).reshape(len(greys), -1)
    med = np.median(low, axis=1, keepdims=True)
    bits = (low > med).astype(np.uint64)
    return (bits * _BIT_WEIGHTS).sum(axis=1, dtype=np.uint64)


def phash(image: Image.Image) -> int:
    """The perceptual hash of one image (as an int)."""
    return int(phash_many(phash_grey(image.convert("L"))[None])[0])


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance of uint64 arrays (broadcasting)."""
    x = np.atleast_1d(np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)))
    out = np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(axis=-1).astype(np.int64)
    return out if np.ndim(a) or np.ndim(b) else out[0]


def u64_to_bytes(h: np.ndarray) -> np.ndarray:
    """uint64 hashes -> (n, 8) uint8 codes in big-endian bit order (faiss binary vectors)."""
    return np.ascontiguousarray(np.asarray(h, dtype=">u8")).view(np.uint8).reshape(-1, 8)


# --------------------------------------------------------------------------- exact pixel hash


def pixel_hash(rgb: np.ndarray) -> bytes:
    """xxh3-128 of the decoded RGB pixels and their size (16 bytes)."""
    h, w = rgb.shape[:2]
    hasher = xxhash.xxh3_128(struct.pack("<II", w, h))
    hasher.update(np.ascontiguousarray(rgb).data)
    return hasher.digest()


# --------------------------------------------------------------------------- thumbnails

_SIMHASH_PLANES = np.random.default_rng(0x51_3A54).standard_normal((SIG_SIDE * SIG_SIDE * 3, 64))


def colour_hash(sigs: np.ndarray, center: np.ndarray) -> np.ndarray:
    """64-bit SimHash (random hyperplanes) of 8x8 RGB signatures centred on ``center``
    (the corpus mean): near-identical thumbnails get codes a few bits apart, which
    finds near duplicates of smooth images whose perceptual hash is unstable."""
    v = sigs.astype(np.float32) - center.astype(np.float32)
    bits = (v @ _SIMHASH_PLANES.astype(np.float32)) > 0
    return (bits.astype(np.uint64) * _BIT_WEIGHTS).sum(axis=1, dtype=np.uint64)


def structure_similarity(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(correlation, smaller standard deviation) of rows of 16x16 grey thumbnails: the
    correlation of zero-mean grey structure, meaningless when an image is flat."""
    x = a.astype(np.float32)
    y = b.astype(np.float32)
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    sx, sy = np.sqrt((x * x).mean(axis=-1)), np.sqrt((y * y).mean(axis=-1))
    corr = (x * y).mean(axis=-1) / np.maximum(sx * sy, 1e-6)
    return corr, np.minimum(sx, sy)


def sig_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute difference (0-255) between rows of 192-byte 8x8 RGB signatures."""
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=-1)


def sig_matrix(sigs: list[bytes | None] | "pl.Series", width: int = SIG_SIDE * SIG_SIDE * 3) -> np.ndarray:
    """(n, width) uint8 matrix of fixed-size byte signatures (zeros where missing)."""
    out = np.zeros((len(sigs), width), dtype=np.uint8)
    for i, s in enumerate(sigs):
        if s:
            out[i] = np.frombuffer(s, dtype=np.uint8)
    return out
