"""KGW green-list watermark detection (Kirchenbauer et al., "A Watermark for Large
Language Models", ICML 2023), for ``synthetic.text``.

A KGW generator splits the vocabulary, at every step, into a *green list* (a
share ``gamma`` of the tokens) chosen by a keyed pseudo-random function of the
previous token, and adds ``delta`` to the logits of green tokens. Human text
hits the green list at rate ``gamma``; watermarked text more often. With T
scored tokens of which G are green, the one-sided test statistic is::

    z = (G - gamma * T) / sqrt(T * gamma * (1 - gamma))

and z >= 4 (p ~ 3e-5) is the paper's detection threshold. Detection needs the
key, the tokenizer and the green-list scheme of the generator; without them
nothing can be said, and a low z never proves that a text is human.

Schemes:

``prf`` (default)
    token ``t`` is green after ``prev`` when ``splitmix64(seed ^ mix(prev, t))``
    falls below ``gamma * 2**64``, with ``seed`` derived from the key (an
    integer, or SHA-256 of a string key). Vectorized with NumPy; no vocabulary
    size needed.
``kgw-torch``
    the reference implementation's ``simple_1`` / LeftHash scheme: seed a CPU
    ``torch.Generator`` with ``key * prev`` and take the first ``gamma * V``
    entries of ``torch.randperm(V)``. Needs ``vocab_size``; green lists are
    cached per previous token.

With ``ignore_repeated`` (the default, as in the paper's robust detector) each
(previous, current) token pair is scored once per text, so a repeated phrase
cannot inflate z.
"""
from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


class WatermarkConfigError(ValueError):
    """The watermark options cannot be used (bad key, tokenizer or scheme)."""


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def key_seed(key: int | str) -> int:
    """64-bit seed of a watermark key (an int is used as is, modulo 2**64)."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return int(key) % (1 << 64)
    return int.from_bytes(hashlib.sha256(str(key).encode("utf-8")).digest()[:8], "little")


def prf_green(seed: int, prev: np.ndarray, cur: np.ndarray, gamma: float) -> np.ndarray:
    """Whether each ``cur`` token is green after ``prev`` under the ``prf`` scheme."""
    prev = np.asarray(prev, dtype=np.uint64)
    cur = np.asarray(cur, dtype=np.uint64)
    with np.errstate(over="ignore"):
        mixed = _splitmix64(prev * np.uint64(0xD6E8FEB86659FD93) ^ np.uint64(seed)) ^ cur
        h = _splitmix64(mixed)
    cut = np.uint64(min(int(gamma * 2.0 ** 64), (1 << 64) - 1))
    return h < cut


class _TorchGreenLists:
    """Green lists of the reference implementation (LeftHash, CPU generator), cached."""

    HASH_KEY = 15485863  # the reference implementation's default hash key

    def __init__(self, key: int, vocab_size: int, gamma: float, cache: int = 4096):
        self.key, self.vocab_size, self.gamma = int(key), int(vocab_size), float(gamma)
        self._lock = threading.Lock()
        self._get = lru_cache(maxsize=cache)(self._compute)

    def _compute(self, prev: int) -> np.ndarray:
        import torch

        g = torch.Generator(device="cpu")
        g.manual_seed(self.key * int(prev))
        perm = torch.randperm(self.vocab_size, generator=g, device="cpu")
        mask = np.zeros(self.vocab_size, dtype=bool)
        mask[perm[: int(self.vocab_size * self.gamma)].numpy()] = True
        return mask

    def green(self, prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
        out = np.zeros(len(cur), dtype=bool)
        with self._lock:
            for i, (p, c) in enumerate(zip(prev.tolist(), cur.tolist())):
                out[i] = 0 <= c < self.vocab_size and bool(self._get(int(p))[c])
        return out


@dataclass
class WatermarkScore:
    tokens: int  # scored tokens (pairs)
    green: int
    z: float | None
    p_value: float | None


def z_score(green: int, tokens: int, gamma: float) -> float | None:
    if tokens <= 0:
        return None
    return (green - gamma * tokens) / math.sqrt(tokens * gamma * (1 - gamma))


def p_from_z(z: float | None) -> float | None:
    return None if z is None else 0.5 * math.erfc(z / math.sqrt(2))


# --------------------------------------------------------------------------- tokenizers


def load_tokenizer(spec: str) -> Callable[[str], list[int]]:
    """A function text -> token ids for ``spec``:

    * a ``tokenizer.json`` file (or a directory holding one): Hugging Face
      ``tokenizers`` (plain JSON, no code);
    * any other name or directory: ``transformers.AutoTokenizer`` (offline
      when ``HF_HUB_OFFLINE`` is set; remote code is never trusted).

    Special tokens are not added: the generator's text is scored as written.
    """
    return _load_tokenizer(str(spec))


@lru_cache(maxsize=8)
def _load_tokenizer(spec: str) -> Callable[[str], list[int]]:
    p = Path(spec).expanduser()
    if p.is_dir() and (p / "tokenizer.json").is_file():
        p = p / "tokenizer.json"
    if p.is_file() and p.suffix == ".json":
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(p))
        return lambda text: tok.encode(text, add_special_tokens=False).ids
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(spec, trust_remote_code=False)
    except Exception as e:
        raise WatermarkConfigError(f"watermark tokenizer {spec!r} cannot be loaded: {e}; pass a tokenizer.json "
                                   f"file or a local tokenizer directory") from e
    return lambda text: tok.encode(text, add_special_tokens=False)


# --------------------------------------------------------------------------- the detector


class WatermarkDetector:
    """Scores texts for one KGW watermark (key, tokenizer, scheme)."""

    def __init__(self, key: int | str, tokenizer: str | Callable[[str], list[int]], gamma: float = 0.25,
                 scheme: str = "prf", vocab_size: int | None = None, ignore_repeated: bool = True,
                 min_tokens: int = 16):
        if not 0 < gamma < 1:
            raise WatermarkConfigError(f"watermark gamma must be between 0 and 1, not {gamma}")
        if scheme not in ("prf", "kgw-torch"):
            raise WatermarkConfigError(f"watermark scheme must be 'prf' or 'kgw-torch', not {scheme!r}")
        self.gamma = float(gamma)
        self.scheme = scheme
        self.ignore_repeated = ignore_repeated
        self.min_tokens = int(min_tokens)
        self.encode = tokenizer if callable(tokenizer) else load_tokenizer(tokenizer)
        if scheme == "prf":
            seed = key_seed(key)
            self._green = lambda prev, cur: prf_green(seed, prev, cur, self.gamma)
        else:
            if not vocab_size:
                raise WatermarkConfigError("watermark scheme 'kgw-torch' needs vocab_size")
            if not isinstance(key, (int, np.integer)):
                raise WatermarkConfigError("watermark scheme 'kgw-torch' needs an integer key (hash_key)")
            lists = _TorchGreenLists(int(key), int(vocab_size), self.gamma)
            self._green = lists.green

    @classmethod
    def from_options(cls, opts: dict[str, Any]) -> "WatermarkDetector":
        """From a policy block: ``key`` or ``key_env`` (name of an environment variable),
        ``tokenizer``, and optionally ``gamma``, ``scheme``, ``vocab_size``,
        ``ignore_repeated``, ``min_tokens``."""
        import os

        allowed = {"key", "key_env", "tokenizer", "gamma", "scheme", "vocab_size", "ignore_repeated",
                   "min_tokens", "z_threshold"}
        unknown = set(opts) - allowed
        if unknown:
            raise WatermarkConfigError(f"unknown watermark option(s) {sorted(unknown)}; known: {sorted(allowed)}")
        key = opts.get("key")
        if key is None and opts.get("key_env"):
            key = os.environ.get(str(opts["key_env"]))
            if key is None:
                raise WatermarkConfigError(f"watermark key_env {opts['key_env']!r} is not set in the environment")
            key = int(key) if key.strip().lstrip("-").isdigit() else key
        if key is None or not opts.get("tokenizer"):
            raise WatermarkConfigError("a watermark test needs both a key (key or key_env) and a tokenizer")
        return cls(key, opts["tokenizer"], gamma=float(opts.get("gamma", 0.25)), scheme=opts.get("scheme", "prf"),
                   vocab_size=opts.get("vocab_size"), ignore_repeated=bool(opts.get("ignore_repeated", True)),
                   min_tokens=int(opts.get("min_tokens", 16)))

    def score_ids(self, ids: Sequence[int]) -> WatermarkScore:
        ids = np.asarray(list(ids), dtype=np.int64)
        if len(ids) < 2:
            return WatermarkScore(0, 0, None, None)
        prev, cur = ids[:-1], ids[1:]
        if self.ignore_repeated:
            pairs = np.unique(np.stack([prev, cur], axis=1), axis=0)
            prev, cur = pairs[:, 0], pairs[:, 1]
        green = int(self._green(prev, cur).sum())
        t = int(len(cur))
        if t < self.min_tokens:
            return WatermarkScore(t, green, None, None)
        z = z_score(green, t, self.gamma)
        return WatermarkScore(t, green, z, p_from_z(z))

    def score(self, text: str | None) -> WatermarkScore:
        if not text:
            return WatermarkScore(0, 0, None, None)
        return self.score_ids(self.encode(text))


# --------------------------------------------------------------------------- a toy generator (tests, benchmarks)


def toy_generate(vocab: Sequence[str], length: int, key: int | str | None, rng: np.random.Generator,
                 gamma: float = 0.25, delta: float = 2.0, zipf: float = 1.1) -> str:
    """Text of ``length`` words sampled from a Zipf-like unigram model over ``vocab``
    (word i has id i), with KGW ``prf`` watermarking: ``delta`` is added to the
    logits of the green list of the previous token. ``key=None``: no watermark.
    No language model is involved; this is what the detector's tests use."""
    v = len(vocab)
    base = -zipf * np.log(np.arange(1, v + 1, dtype=np.float64))
    ids_all = np.arange(v, dtype=np.int64)
    seed = key_seed(key) if key is not None else None
    prev = int(rng.integers(v))
    out = [prev]
    for _ in range(length - 1):
        logits = base
        if seed is not None:
            logits = base + delta * prf_green(seed, np.full(v, prev), ids_all, gamma)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        prev = int(rng.choice(v, p=p))
        out.append(prev)
    return " ".join(vocab[i] for i in out)
