"""Invisible-watermark matching of :mod:`integrity.analysis.images`: the dwtDct bits of
imwatermark (the encoder of the Stable Diffusion releases) read back and matched against the
known payloads of public generator releases (``synthetic.image``).
"""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from scipy import stats

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
