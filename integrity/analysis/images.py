"""Image features shared by the image checks: decode once, hash, forget the pixels.

:func:`analyze_batch` decodes every image of a record batch with the safe
decoder of :mod:`connectors.images` (pixel limit, bombs and corrupt data
reported per record) and keeps only compact features per record:

* ``pixel_hash`` -- xxh3-128 of the decoded RGB pixels and the size: equal for
  the same picture whatever the container or metadata (exact dedup);
* ``phash`` -- the 64-bit DCT perceptual hash (32x32 grey, low 8x8 DCT
  coefficients against their median), computed for the whole batch with one
  matrix product (near dedup, Hamming distance);
* ``sig`` -- an 8x8 RGB thumbnail (192 bytes) and ``grey`` -- a 16x16 grey
  thumbnail (256 bytes): colour and structure that confirm near-duplicate
  candidates (the perceptual hash is unstable on smooth images);
* ``patch`` -- localized window hashes for shared-patch detection (see
  :func:`window_hashes`), and ``border`` -- hashes of every small window at
  the corners and border midpoints, on the original pixels (see
  :func:`border_hashes`);
* ``watermark`` -- the best match of the known invisible-watermark payloads
  (see :func:`watermark_matches`);
* ``meta`` -- provenance metadata (PNG text chunks, XMP, EXIF, C2PA presence).

The engine runs every check on a batch one after the other in the same
thread, so the analysis of the last batch is memoized per thread: four
image checks decode each image once. Nothing but these features outlives the
call: memory is bounded by one decoded image plus the batch's features.
"""
from __future__ import annotations

import functools
import math
import struct
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import xxhash
from PIL import Image
from scipy import stats

from connectors.images import DEFAULT_LIMITS, DecodeLimits, decode_image

if TYPE_CHECKING:  # polars is imported lazily where it is used
    import polars as pl

# --------------------------------------------------------------------------- constants

PHASH_SIDE = 32  # grey image side the DCT runs on
PHASH_LOW = 8  # low-frequency block kept: 8x8 = 64 bits
SIG_SIDE = 8  # confirmation thumbnail side (RGB)
GREY_SIDE = 16  # structure thumbnail side (grey)
WORK_SIDE = 512  # patch hashing runs on images reduced (by an integer factor) to at most this side

#: window hashing (poison.patch): window side, 1-in-N sampling, texture floor, per-image cap
PATCH_CELL = 12
PATCH_SAMPLE = 64
PATCH_MIN_EDGES = 0.2
PATCH_MAX_PER_IMAGE = 256

#: invisible-watermark dwtDct parameters of the Stable Diffusion releases (imwatermark defaults)
WM_SCALE = 36.0
WM_BLOCK = 4
WM_MIN_PIXELS = 256 * 256  # the encoder refuses smaller images

_SDXL = 0b101100111110110010010000011110111011000110011110


def _bits_of_bytes(b: bytes) -> np.ndarray:
    return np.unpackbits(np.frombuffer(b, dtype=np.uint8)).astype(bool)


#: payloads embedded by public generator releases with ``imwatermark`` (name -> bits)
KNOWN_WATERMARKS: dict[str, np.ndarray] = {
    "StableDiffusionV1": _bits_of_bytes(b"StableDiffusionV1"),  # CompVis txt2img.py
    "SDV2": _bits_of_bytes(b"SDV2"),  # Stability AI SD 2.x scripts
    "SDXL": np.array([c == "1" for c in bin(_SDXL)[2:]], dtype=bool),  # SDXL (generative-models, diffusers)
}

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


# --------------------------------------------------------------------------- window hashes (patches)

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


# --------------------------------------------------------------------------- invisible watermark


def _u_channel(rgb: np.ndarray, swap: bool) -> np.ndarray:
    """The U plane OpenCV's ``COLOR_BGR2YUV`` gives for this image (``swap``: the
    image was handed to the encoder as RGB although it expects BGR)."""
    f = rgb.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    if swap:
        r, b = b, r
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return np.clip(np.rint((b - y) * 0.492 + 128.0), 0, 255)


def watermark_block_bits(rgb: np.ndarray, swap: bool = False) -> np.ndarray:
    """The bit every 4x4 block of the Haar LL band of U carries under imwatermark's ``dwtDct``
    (block order row-major; bit i of a payload of length L sits in blocks i, i+L, ...)."""
    rows, cols = rgb.shape[0] // 4 * 4, rgb.shape[1] // 4 * 4
    u = _u_channel(rgb[:rows, :cols], swap)
    ll = (u[0::2, 0::2] + u[0::2, 1::2] + u[1::2, 0::2] + u[1::2, 1::2]) / 2.0  # pywt 'haar' dwt2 cA
    br, bc = ll.shape[0] // WM_BLOCK, ll.shape[1] // WM_BLOCK
    blocks = ll[: br * WM_BLOCK, : bc * WM_BLOCK].reshape(br, WM_BLOCK, bc, WM_BLOCK).swapaxes(1, 2)
    blocks = blocks.reshape(br * bc, WM_BLOCK * WM_BLOCK)[:, 1:]
    idx = np.argmax(np.abs(blocks), axis=1)
    val = np.abs(blocks[np.arange(len(blocks)), idx])
    return np.mod(val, WM_SCALE) > 0.5 * WM_SCALE


def decode_payload(block_bits: np.ndarray, length: int) -> np.ndarray:
    """Majority vote of the blocks carrying each of ``length`` payload bits."""
    if len(block_bits) == 0:
        return np.zeros(length, dtype=bool)
    pos = np.arange(len(block_bits)) % length
    ones = np.bincount(pos, weights=block_bits, minlength=length)
    count = np.bincount(pos, minlength=length)
    return ones / np.maximum(count, 1) * 255 > 127


@functools.lru_cache(maxsize=None)
def _log10_sf(n: int) -> np.ndarray:
    """log10 P(X >= k) for X ~ Binomial(n, 1/2), k = 0..n."""
    return stats.binom.logsf(np.arange(n + 1) - 1, n, 0.5) / math.log(10)


def watermark_matches(rgb: np.ndarray, payloads: dict[str, np.ndarray] | None = None) -> dict[str, Any] | None:
    """The known payload that best matches ``rgb``'s dwtDct bits: ``{payload, bits, matched,
    bit_accuracy, log10_p, channel_order}`` where ``log10_p`` is the one-sided binomial
    log10 p-value of at least ``matched`` of ``bits`` agreeing by chance (p = 1/2);
    ``None`` when the image is too small for the encoder."""
    if rgb.shape[0] * rgb.shape[1] < WM_MIN_PIXELS:
        return None
    payloads = KNOWN_WATERMARKS if payloads is None else payloads
    best: dict[str, Any] | None = None
    for swap in (False, True):
        blocks = watermark_block_bits(rgb, swap)
        for name, bits in payloads.items():
            got = decode_payload(blocks, len(bits))
            k = int((got == bits).sum())
            logp = float(_log10_sf(len(bits))[k])
            if best is None or logp < best["log10_p"]:
                best = {"payload": name, "bits": len(bits), "matched": k,
                        "bit_accuracy": round(k / len(bits), 4), "log10_p": round(logp, 2),
                        "channel_order": "RGB-as-BGR" if swap else "BGR"}
    return best


# --------------------------------------------------------------------------- batch analysis


@dataclass
class ImageAnalysis:
    """Compact per-record features of one batch (index = row within the batch)."""

    status: list[str]
    error: list[str | None]
    format: list[str | None]
    width: np.ndarray
    height: np.ndarray
    pixel_hash: list[bytes | None]
    phash: np.ndarray  # uint64; 0 where not decoded
    sig: list[bytes | None]  # 8x8x3 uint8
    grey: list[bytes | None]  # 16x16 uint8
    patch: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None]  # (hashes, x, y) in original pixels
    patch_scale: np.ndarray  # factor from work image to original pixels
    border: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None]  # (hashes, x, y, side), original px
    watermark: list[dict | None]
    meta: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> np.ndarray:
        return np.array([s == "ok" for s in self.status], dtype=bool)


_local = threading.local()


def _batch_key(images: pa.Array, limits: DecodeLimits) -> tuple:
    bufs = images.buffers()
    addr = tuple((b.address, b.size) if b is not None else None for b in bufs)
    return (len(images), images.offset, addr, limits)


def analyze_batch(batch: pa.RecordBatch | pa.Table, limits: DecodeLimits = DEFAULT_LIMITS) -> ImageAnalysis:
    """Decode and featurize the ``image`` column of ``batch`` (memoized for the last batch per thread)."""
    images = batch.column("image")
    if isinstance(images, pa.ChunkedArray):
        images = images.combine_chunks()
    key = _batch_key(images, limits)
    cached = getattr(_local, "last", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    result = analyze_images(images, limits)
    _local.last = (key, result)
    return result


def analyze_images(images: pa.Array | list[bytes | None], limits: DecodeLimits = DEFAULT_LIMITS) -> ImageAnalysis:
    """:func:`analyze_batch` without memoization, over any sequence of image bytes."""
    n = len(images)
    out = ImageAnalysis(status=[], error=[], format=[], width=np.zeros(n, np.int32), height=np.zeros(n, np.int32),
                        pixel_hash=[], phash=np.zeros(n, np.uint64), sig=[], grey=[], patch=[],
                        patch_scale=np.ones(n, np.int32), border=[], watermark=[], meta=[])
    greys = np.zeros((n, PHASH_SIDE, PHASH_SIDE), dtype=np.float64)
    for i in range(n):
        value = images[i]
        data = value.as_py() if isinstance(value, pa.Scalar) else value
        dec = decode_image(data, limits, meta=True)
        out.status.append(dec.status)
        out.error.append(dec.error)
        out.format.append(dec.format)
        out.meta.append(dec.meta)
        if dec.size:
            out.width[i], out.height[i] = dec.size
        if not dec.ok:
            out.pixel_hash.append(None)
            out.sig.append(None)
            out.grey.append(None)
            out.patch.append(None)
            out.border.append(None)
            out.watermark.append(None)
            continue
        img = dec.image
        rgb = np.asarray(img)
        out.pixel_hash.append(pixel_hash(rgb))
        out.watermark.append(watermark_matches(rgb))
        grey = img.convert("L")
        greys[i] = phash_grey(grey)
        out.grey.append(np.asarray(grey.resize((GREY_SIDE, GREY_SIDE), Image.Resampling.BOX)).tobytes())
        out.sig.append(np.asarray(img.resize((SIG_SIDE, SIG_SIDE), Image.Resampling.BOX)).tobytes())
        work = work_image(img)
        out.patch_scale[i] = round(img.width / work.width)
        out.patch.append(window_hashes(rgb if work is img else np.asarray(work)))
        out.border.append(border_hashes(rgb))
        del img, rgb, work, dec
    ok = out.ok
    if ok.any():
        out.phash[ok] = phash_many(greys[ok])
    return out


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
