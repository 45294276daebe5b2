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

The features themselves live in :mod:`integrity.analysis.image_hashes` (whole-image hashes,
thumbnails), :mod:`integrity.analysis.image_patches` (window hashes) and
:mod:`integrity.analysis.image_watermark`; their names stay importable from here.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from connectors.images import DEFAULT_LIMITS, DecodeLimits, decode_image
# the features live in three modules; their names stay importable from here (callers and plug-ins)
from integrity.analysis.image_hashes import (  # noqa: F401
    GREY_SIDE, PHASH_LOW, PHASH_SIDE, SIG_SIDE, colour_hash, hamming, phash, phash_grey, phash_many, pixel_hash,
    sig_distance, sig_matrix, structure_similarity, u64_to_bytes)
from integrity.analysis.image_patches import (  # noqa: F401
    BORDER_BAND, BORDER_CONTRAST, BORDER_RING, BORDER_SIZES, BORDER_TABLES, PATCH_CELL, PATCH_MAX_PER_IMAGE,
    PATCH_MIN_EDGES, PATCH_SAMPLE, WORK_SIDE, border_hashes, border_regions, window_hashes, work_image)
from integrity.analysis.image_watermark import (  # noqa: F401
    KNOWN_WATERMARKS, WM_BLOCK, WM_MIN_PIXELS, WM_SCALE, decode_payload, watermark_block_bits, watermark_matches)

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
