"""Localized window hashes of :mod:`integrity.analysis.images` for ``poison.patch``: content
hashes of textured windows sampled anywhere in a reduced work image (:func:`window_hashes`) and
of every small window that stands out at the corners and border midpoints of the original
pixels (:func:`border_hashes`). The same patch gives the same hashes wherever it sits.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image

WORK_SIDE = 512  # patch hashing runs on images reduced (by an integer factor) to at most this side

#: window hashing (poison.patch): window side, 1-in-N sampling, texture floor, per-image cap
PATCH_CELL = 12
PATCH_SAMPLE = 64
PATCH_MIN_EDGES = 0.2
PATCH_MAX_PER_IMAGE = 256

_rng = np.random.default_rng(0x5EED_1A6E)
_CODE_WEIGHTS = _rng.integers(0, 2**63, size=256, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer (wrapping uint64 arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


_Q = np.uint64(0x9E3779B97F4A7C15)  # odd: invertible modulo 2**64
_P = np.uint64(0xC2B2AE3D27D4EB4F)
_QI = np.uint64(pow(int(_Q), -1, 1 << 64))
_PI = np.uint64(pow(int(_P), -1, 1 << 64))


@functools.lru_cache(maxsize=32)
def _powers(base: int, n: int) -> np.ndarray:
    """base**0 .. base**(n-1) modulo 2**64."""
    out = np.empty(n, dtype=np.uint64)
    x = 1
    for i in range(n):
        out[i] = x
        x = (x * base) & 0xFFFFFFFFFFFFFFFF
    return out


def _rolling_2d(w: np.ndarray, c: int) -> np.ndarray:
    """Position-sensitive hash of every c x c window of ``w`` (uint64): the 2-D polynomial
    sum_{u,v} w[i+u, j+v] P**u Q**v modulo 2**64, for all (i, j) at once with prefix
    sums and modular inverses (the same content gives the same value at any position)."""
    h, wd = w.shape
    qp, qi = _powers(int(_Q), wd + 1), _powers(int(_QI), wd + 1)
    pre = np.zeros((h, wd + 1), dtype=np.uint64)
    np.cumsum(w * qp[None, :wd], axis=1, out=pre[:, 1:])
    rows = (pre[:, c:] - pre[:, :-c]) * qi[None, : wd - c + 1]
    pp, pi = _powers(int(_P), h + 1), _powers(int(_PI), h + 1)
    pre2 = np.zeros((h + 1, rows.shape[1]), dtype=np.uint64)
    np.cumsum(rows * pp[:h, None], axis=0, out=pre2[1:])
    return (pre2[c:] - pre2[:-c]) * pi[: h - c + 1, None]


def _integral(a: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0] + 1, a.shape[1] + 1), dtype=a.dtype)
    np.cumsum(a, axis=0, out=out[1:, 1:])
    np.cumsum(out[1:, 1:], axis=1, out=out[1:, 1:])
    return out


def _box(ii: np.ndarray, c: int) -> np.ndarray:
    return ii[c:, c:] - ii[:-c, c:] - ii[c:, :-c] + ii[:-c, :-c]


def window_hashes(rgb: np.ndarray, cell: int = PATCH_CELL, sample: int = PATCH_SAMPLE,
                  min_edges: float = PATCH_MIN_EDGES, cap: int = PATCH_MAX_PER_IMAGE
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Content hashes of textured ``cell`` x ``cell`` windows at *every* position,
    keeping a consistent 1-in-``sample`` subset: (hashes uint64, x, y) of their top-left corners.

    Each pixel gets a code from the luma of its 2x2 neighbourhood quantized to
    4 levels (luma: JPEG keeps it at full resolution, so the codes survive
    re-encoding); a window's hash is a 2-D polynomial hash of random 64-bit
    weights of its codes (position-sensitive inside the window), computed for
    every window at once with prefix sums, then mixed. The same content gives
    the same hash wherever it sits in the image, so a patch pasted at different positions in different images
    shares its window hashes, and keeping only hashes that are 0 modulo
    ``sample`` keeps the same windows of the patch in every image. Windows with
    fewer than ``min_edges`` of pixels differing from a neighbour (flat areas,
    smooth gradients, shape outlines) are skipped, and at most ``cap`` hashes
    (the smallest) are kept.
    """
    h, w = rgb.shape[:2]
    if h <= cell + 1 or w <= cell + 1:
        e = np.zeros(0, dtype=np.uint64)
        return e, np.zeros(0, np.uint16), np.zeros(0, np.uint16)
    luma = (rgb[..., 0].astype(np.uint32) * 299 + rgb[..., 1].astype(np.uint32) * 587
            + rgb[..., 2].astype(np.uint32) * 114) // 1000
    q = (luma >> 6).astype(np.uint32)
    c, right, down, diag = q[:-1, :-1], q[:-1, 1:], q[1:, :-1], q[1:, 1:]
    edges = ((c != right) | (c != down)).astype(np.int32)
    dense = _box(_integral(edges), cell) >= int(min_edges * cell * cell)
    if not dense.any():  # flat image: no window worth hashing
        e = np.zeros(0, dtype=np.uint64)
        return e, np.zeros(0, np.uint16), np.zeros(0, np.uint16)
    weights = _CODE_WEIGHTS[(c << 6) | (right << 4) | (down << 2) | diag]
    hashes = _mix(_rolling_2d(weights, cell))
    ys, xs = np.nonzero(dense & (hashes % np.uint64(sample) == 0))
    hv = hashes[ys, xs]
    hv, first = np.unique(hv, return_index=True)  # sorted: the smallest first
    hv, first = hv[:cap], first[:cap]
    return hv, xs[first].astype(np.uint16), ys[first].astype(np.uint16)


#: border-band hashing (poison.patch, small patches): side of the searched square at each corner and
#: border midpoint (original pixels), window sides, quantization tables with shifted grids
BORDER_BAND = 20
BORDER_SIZES = (3, 6, 12)
BORDER_TABLES = 2
BORDER_RING = 2  # px around a window it must stand out from
BORDER_CONTRAST = 16.0  # difference of mean colour (Y, Cb or Cr) or of luma spread that stands out
#: quantization steps of a window's descriptor: luma mean, chroma means, quadrant-minus-mean, luma spread
_BSTEP = np.array([24.0, 32.0, 32.0, 28.0, 28.0, 28.0, 28.0, 24.0], dtype=np.float32)
_BOFF = np.random.default_rng(0xB0_4DE5).random((BORDER_TABLES, len(_BSTEP))).astype(np.float32)
_BWEIGHTS = np.random.default_rng(0xB0_4DE6).integers(1, 2**62, size=len(_BSTEP), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
_BSALT = np.random.default_rng(0xB0_4DE7).integers(1, 2**62, size=(max(BORDER_SIZES) + 1, BORDER_TABLES), dtype=np.uint64)
_YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32)


def border_regions(h: int, w: int, band: int = BORDER_BAND) -> list[tuple[int, int]]:
    """(y0, x0) of the ``band`` x ``band`` squares at the 4 corners and the 4 border midpoints
    (the image is at least ``band`` px on each side)."""
    mx, my = w // 2 - band // 2, h // 2 - band // 2
    return [(0, 0), (0, w - band), (h - band, 0), (h - band, w - band),
            (0, mx), (h - band, mx), (my, 0), (my, w - band)]


def _ring_integral(ycc: np.ndarray, ring: int = BORDER_RING) -> np.ndarray:
    """Integral images of Y, Cb, Cr and Y^2, (4, regions, side + 1, side + 1), over a stack of YCbCr
    squares padded by ``ring`` px of zeros (windows at a square's edge get the part of their ring inside
    it). Channel first, so that every box sum below runs over contiguous rows."""
    r = ring
    k, b = ycc.shape[0], ycc.shape[1]
    planes = np.zeros((4, k, b + 2 * r, b + 2 * r), dtype=np.float64)  # Y, Cb, Cr, Y^2
    planes[:3, :, r:r + b, r:r + b] = np.moveaxis(ycc, -1, 0)
    planes[3, :, r:r + b, r:r + b] = ycc[..., 0] ** 2
    ii = np.zeros((4, k, b + 2 * r + 1, b + 2 * r + 1), dtype=np.float64)
    np.cumsum(planes, axis=2, out=ii[:, :, 1:, 1:])
    np.cumsum(ii[:, :, 1:, 1:], axis=3, out=ii[:, :, 1:, 1:])
    return ii


@functools.lru_cache(maxsize=16)
def _ring_pixels(b: int, s: int, ring: int) -> np.ndarray:
    """Pixels of each s x s window's ``ring`` px ring that lie inside a ``b`` px square, (n, n)."""
    i = np.arange(b - s + 1)
    span = np.minimum(i + s + ring, b) - np.maximum(i - ring, 0)
    return (span[:, None] * span[None, :] - s * s).astype(np.float64)


def _window_codes(ii: np.ndarray, b: int, s: int, ring: int = BORDER_RING) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors of the s x s windows of a stack of ``b`` px YCbCr squares (their
    :func:`_ring_integral` ``ii``) that stand out from the ``ring`` px around them (inside the square):
    their mean colour or their spread differs from the ring's. Returns the descriptors of those windows,
    (windows, 8) in the order of ``np.nonzero(stands)``: the means of Y, Cb, Cr, the mean of Y in each of
    the window's four corner sub-squares minus the window mean (coarse structure) and the spread of Y;
    and ``stands`` (regions, n, n)."""
    r = ring
    n = b - s + 1

    def box(c: int, oy: int, ox: int, a: np.ndarray = ii) -> np.ndarray:
        """Sums over the c x c boxes whose top-left corners are (oy, ox) px from each window's (n x n)."""
        y0, x0 = r + oy, r + ox
        return (a[..., y0 + c:y0 + c + n, x0 + c:x0 + c + n] - a[..., y0:y0 + n, x0 + c:x0 + c + n]
                - a[..., y0 + c:y0 + c + n, x0:x0 + n] + a[..., y0:y0 + n, x0:x0 + n])

    inner = box(s, 0, 0)
    m = inner / float(s * s)
    spread = np.sqrt(np.maximum(m[3] - m[0] ** 2, 0.0))
    ring_px = _ring_pixels(b, s, r)
    rm = (box(s + 2 * r, -r, -r) - inner) / np.maximum(ring_px, 1.0)  # the ring (its part inside the square)
    rspread = np.sqrt(np.maximum(rm[3] - rm[0] ** 2, 0.0))
    stands = ((np.abs(m[:3] - rm[:3]).max(axis=0) >= BORDER_CONTRAST)
              | (np.abs(spread - rspread) >= BORDER_CONTRAST)) & (ring_px > 0)
    t = (s + 1) // 2
    d = s - t
    m0 = m[0][stands]
    quads = [box(t, dy, dx, ii[0])[stands] / float(t * t) - m0 for dy in (0, d) for dx in (0, d)]
    codes = np.stack([m0, m[1][stands], m[2][stands], *quads, spread[stands]], axis=-1)
    return codes.astype(np.float32), stands


def border_hashes(rgb: np.ndarray, sizes: tuple[int, ...] = BORDER_SIZES, band: int = BORDER_BAND
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hashes of the small windows that stand out in the squares at the corners and border midpoints
    of ``rgb`` (original pixels): (hashes uint64, x, y, side) of the distinct windows, top-left
    corners in pixels.

    Small trigger patches (3-16 px) sit where a window-sampling search misses them and where a
    reduced work image blurs them away, so every ``s`` x ``s`` window (``s`` in ``sizes``) of
    these eight ``band`` x ``band`` squares is described by its mean colour (Y, Cb, Cr), its coarse
    structure (the means of its four corner sub-squares against the window mean) and its luma
    spread, quantized on ``BORDER_TABLES`` grids with shifted origins (a value near a cell edge of
    one grid sits inside a cell of another, so JPEG noise does not split a patch's images). Only
    windows whose colour or spread differs from the ``BORDER_RING`` px around them are kept: a
    patch stands out from the picture, a flat background or an even texture does not (a black
    background is not a patch, even where captions say "black"). The hash does not depend on the
    position: the same patch at any corner or midpoint, 0-3 px in from the edge, gives the same
    hashes. Windows are deduplicated per image.
    """
    h, w = rgb.shape[:2]
    if h < band or w < band:
        e = np.zeros(0, dtype=np.uint64)
        return e, np.zeros(0, np.uint16), np.zeros(0, np.uint16), np.zeros(0, np.uint8)
    origins = np.array(border_regions(h, w, band))
    regs = np.stack([rgb[y:y + band, x:x + band] for y, x in origins]).astype(np.float32)
    ycc = regs @ _YCC.T
    ycc[..., 1:] += 128.0
    ii = _ring_integral(ycc)
    hs, xs, ys, ss = [], [], [], []
    for s in sizes:
        codes, stands = _window_codes(ii, band, s)
        region, gy, gx = np.nonzero(stands)
        px, py = gx + origins[region, 1], gy + origins[region, 0]
        scaled = codes / _BSTEP
        for t in range(BORDER_TABLES):
            q = np.floor(scaled + _BOFF[t]).astype(np.int64).view(np.uint64)
            hs.append(_mix(q @ _BWEIGHTS + _BSALT[s, t]))
            xs.append(px)
            ys.append(py)
            ss.append(np.full(px.size, s, dtype=np.uint8))
    hv, first = np.unique(np.concatenate(hs), return_index=True)
    return (hv, np.concatenate(xs)[first].astype(np.uint16), np.concatenate(ys)[first].astype(np.uint16),
            np.concatenate(ss)[first])


def work_image(image: Image.Image, side: int = WORK_SIDE) -> Image.Image:
    """``image`` reduced by the smallest integer factor that brings its longer side to ``side`` or less."""
    factor = math.ceil(max(image.size) / side)
    return image.reduce(factor) if factor > 1 else image
