"""Image-caption alignment scores: an open_clip scorer and the interface checks use.

A *scorer* turns (image bytes, caption) pairs into one float per pair, higher
meaning better aligned; NaN where a pair cannot be scored (no caption, an
image that does not decode safely). ``poison.caption_mismatch`` only sees
this interface (:class:`AlignmentScorer`), so tests drive it with a
controllable scorer and a policy may plug in another model by import path
(``scorer: "mypkg.scorers:make"``; the callable gets the check's options).

:class:`OpenClipScorer` is the real one: an open_clip model with weights
named by a pretrained tag (resolved by open_clip, from its cache or the Hugging
Face hub) or a local checkpoint path (``.safetensors``, or a ``.pt``/``.pth``/
``.bin`` state dict loaded with ``torch.load(weights_only=True)``: no pickle
is ever executed). Weights are never invented: without ``pretrained`` it
refuses to build unless ``allow_random_weights`` is set (tests, benchmarks).

Throughput: images are decoded and resized on a thread pool (Pillow releases
the GIL) while the model runs the previous batch; pixels travel to the device
as uint8 and are normalized there; on CUDA the model runs under
``torch.autocast`` (bf16 where supported, else fp16) with TF32 matmuls.
"""
from __future__ import annotations

import importlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

from connectors.images import DEFAULT_LIMITS, DecodeLimits, decode_image

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


@runtime_checkable
class AlignmentScorer(Protocol):
    """What ``poison.caption_mismatch`` needs from a model."""

    #: names the model and weights in findings (e.g. ``"ViT-B-32/laion2b_s34b_b79k"``)
    name: str

    def score(self, images: Sequence[bytes | None], captions: Sequence[str | None]) -> np.ndarray:
        """One float32 per pair, higher = better aligned; NaN where it cannot be scored."""
        ...


class CallableScorer:
    """Wraps ``fn(images: list[PIL RGB image], captions: list[str]) -> scores`` into an
    :class:`AlignmentScorer` that decodes safely and skips unusable pairs (for tests and plug-ins)."""

    def __init__(self, fn: Callable[[list[Image.Image], list[str]], Sequence[float]], name: str = "callable",
                 limits: DecodeLimits = DEFAULT_LIMITS):
        self.fn, self.name, self.limits = fn, name, limits

    def score(self, images, captions) -> np.ndarray:
        out = np.full(len(images), np.nan, dtype=np.float32)
        idx, imgs, caps = [], [], []
        for i, (data, cap) in enumerate(zip(images, captions)):
            if not cap:
                continue
            dec = decode_image(data, self.limits)
            if dec.ok:
                idx.append(i)
                imgs.append(dec.image)
                caps.append(cap)
        if idx:
            out[idx] = np.asarray(self.fn(imgs, caps), dtype=np.float32)
        return out


class ScorerConfigError(ValueError):
    """The scorer cannot be built from the given options (no weights, bad path, ...)."""


def _pick_device(device: str | None) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def check_checkpoint_path(path: str) -> Path:
    """A local checkpoint path that exists and has a loadable suffix, else :class:`ScorerConfigError`."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ScorerConfigError(f"checkpoint {path!r} does not exist or is not a file")
    if p.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise ScorerConfigError(f"checkpoint {path!r}: use a {', '.join(CHECKPOINT_SUFFIXES)} file "
                                "(weights only; pickled objects are never loaded)")
    return p


def load_state_dict(path: str | Path) -> dict:
    """A state dict from a local checkpoint without executing pickle: safetensors,
    or ``torch.load(weights_only=True)`` (which refuses arbitrary objects)."""
    import torch

    p = check_checkpoint_path(str(path))
    if p.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(p), device="cpu")
    else:
        try:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle.UnpicklingError and friends: refuse, say why
            raise ScorerConfigError(f"checkpoint {str(p)!r} is not a plain weights file "
                                    f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd:
        raise ScorerConfigError(f"checkpoint {str(p)!r} holds no state dict")
    if all(isinstance(k, str) and k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


class OpenClipScorer:
    """CLIP image-caption cosine similarity with open_clip, batched.

    Args:
        model: open_clip architecture name (``"ViT-B-32"``).
        pretrained: a pretrained tag known to open_clip, or a local checkpoint path.
        device: ``"auto"`` (CUDA when present), ``"cuda"``, ``"cpu"``, ...
        batch_size: pairs per forward pass.
        precision: ``"auto"`` (autocast bf16/fp16 on CUDA, fp32 on CPU), ``"fp32"``,
            ``"fp16"`` or ``"bf16"`` (autocast dtype).
        workers: decode/resize threads (default: CPU count, at most 16).
        allow_random_weights: build the architecture with random weights when
            ``pretrained`` is empty (tests and throughput benchmarks only).
    """

    def __init__(self, model: str = "ViT-B-32", pretrained: str | None = None, device: str | None = "auto",
                 batch_size: int = 64, precision: str = "auto", workers: int | None = None,
                 allow_random_weights: bool = False, limits: DecodeLimits = DEFAULT_LIMITS):
        import open_clip
        import torch

        if not pretrained and not allow_random_weights:
            raise ScorerConfigError(
                "poison.caption_mismatch needs CLIP weights: set the check's `pretrained` option to an "
                "open_clip pretrained tag (e.g. laion2b_s34b_b79k, from the local cache or the hub) "
                "or to a local .safetensors/.pt checkpoint")
        self.device = _pick_device(device)
        self.batch_size = max(1, int(batch_size))
        self.limits = limits
        self.workers = workers or min(16, os.cpu_count() or 1)
        local = pretrained if pretrained and (os.sep in pretrained or Path(pretrained).suffix.lower()
                                              in CHECKPOINT_SUFFIXES) else None
        try:
            if local:
                net = open_clip.create_model(model, pretrained=None, device="cpu")
                missing, unexpected = net.load_state_dict(load_state_dict(local), strict=False)
                if missing:
                    raise ScorerConfigError(f"checkpoint {local!r} does not fit {model}: "
                                            f"{len(missing)} missing keys (first: {missing[0]})")
            else:
                net = open_clip.create_model(model, pretrained=pretrained or None, device="cpu",
                                             weights_only=True)
        except ScorerConfigError:
            raise
        except RuntimeError as exc:
            raise ScorerConfigError(f"cannot build open_clip model {model!r} with weights {pretrained!r}: "
                                    f"{exc}") from exc
        self.model = net.to(self.device).eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self.name = f"{model}/{pretrained or 'random-weights'}"
        size = getattr(net.visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        mean = getattr(net.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        std = getattr(net.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255.0
        cuda = self.device.startswith("cuda")
        if precision == "auto":
            precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
        self.amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="clip-prep")
        self._lock = threading.Lock()

    # -- preprocessing (threads) -----------------------------------------------------
    def _prepare(self, data: bytes | None) -> np.ndarray | None:
        dec = decode_image(data, self.limits)
        if not dec.ok:
            return None
        im = dec.image
        s = self.image_size
        scale = s / min(im.size)
        w, h = max(s, round(im.width * scale)), max(s, round(im.height * scale))
        im = im.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)
        left, top = (w - s) // 2, (h - s) // 2
        return np.asarray(im.crop((left, top, left + s, top + s)))

    def _prepare_batch(self, images: Sequence[bytes | None]) -> list[np.ndarray | None]:
        return list(self._pool.map(self._prepare, images))

    # -- model ----------------------------------------------------------------------------
    def _autocast(self):
        import torch

        return torch.autocast(device_type="cuda" if self.device.startswith("cuda") else "cpu",
                              dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None)

    def _encode_images(self, pixels: list[np.ndarray]):
        import torch

        x = torch.from_numpy(np.stack(pixels))
        if self.device.startswith("cuda"):
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = (x.permute(0, 3, 1, 2).float() - self._mean) / self._std
        return torch.nn.functional.normalize(self.model.encode_image(x).float(), dim=-1)

    def _forward(self, pixels: list[np.ndarray], captions: list[str]) -> np.ndarray:
        import torch

        tokens = self.tokenizer(captions).to(self.device)
        with torch.inference_mode(), self._autocast():
            img = self._encode_images(pixels)
            txt = torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)
            sim = (img * txt).sum(-1)
        return sim.float().cpu().numpy()

    def _embed(self, pixels: list[np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode(), self._autocast():
            return self._encode_images(pixels).cpu().numpy().astype(np.float32)

    def _batched(self, images: Sequence[bytes | None], keep: Callable[[int], bool],
                 run: Callable[[list[np.ndarray], list[int]], None]) -> None:
        """Decode batch k+1 on the thread pool while the model runs batch k; ``run(pixels, idx)``
        gets the usable images of each batch (``keep(i)`` and decodable) with their positions."""
        starts = list(range(0, len(images), self.batch_size))
        if not starts:
            return
        with self._lock:  # one forward at a time per model (threads share the cached scorer)
            pending = self._pool.submit(self._prepare_batch, images[0:self.batch_size])
            for k, start in enumerate(starts):
                prepared = pending.result()
                if k + 1 < len(starts):
                    nxt = starts[k + 1]
                    pending = self._pool.submit(self._prepare_batch, images[nxt:nxt + self.batch_size])
                idx = [start + j for j, p in enumerate(prepared) if p is not None and keep(start + j)]
                if idx:
                    run([prepared[i - start] for i in idx], idx)

    def score(self, images: Sequence[bytes | None], captions: Sequence[str | None]) -> np.ndarray:
        """Cosine similarity per pair; the next batch is decoded while the model runs this one."""
        out = np.full(len(images), np.nan, dtype=np.float32)

        def run(pixels: list[np.ndarray], idx: list[int]) -> None:
            out[idx] = self._forward(pixels, [str(captions[i]) for i in idx])

        self._batched(images, lambda i: bool(captions[i]), run)
        return out

    def embed_images(self, images: Sequence[bytes | None]) -> np.ndarray:
        """L2-normalized image embeddings, one float32 row per image (NaN rows where an image
        does not decode safely): what ``poison.caption_trigger`` clusters."""
        rows: list[tuple[list[int], np.ndarray]] = []

        def run(pixels: list[np.ndarray], idx: list[int]) -> None:
            rows.append((idx, self._embed(pixels)))

        self._batched(images, lambda i: True, run)
        dim = rows[0][1].shape[1] if rows else int(getattr(self.model, "embed_dim", 0) or 1)
        out = np.full((len(images), dim), np.nan, dtype=np.float32)
        for idx, emb in rows:
            out[idx] = emb
        return out


_CACHE: dict[tuple, AlignmentScorer] = {}
_CACHE_LOCK = threading.Lock()


def scorer_from_options(options: Mapping[str, Any]) -> AlignmentScorer:
    """The scorer the check's options describe, built once per process and shared.

    ``scorer`` (``"module:callable"``) wins; the callable gets the options and
    returns an :class:`AlignmentScorer`. Otherwise an :class:`OpenClipScorer` of
    ``model``/``pretrained``/``device``/``batch_size``/``precision``.
    """
    key = tuple(sorted((k, str(v)) for k, v in options.items()
                       if k in ("scorer", "model", "pretrained", "device", "batch_size", "precision")))
    with _CACHE_LOCK:
        found = _CACHE.get(key)
        if found is not None:
            return found
        path = options.get("scorer")
        if path:
            module, _, attr = str(path).partition(":")
            try:
                factory = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as exc:
                raise ScorerConfigError(f"cannot import scorer {path!r}: {exc}") from exc
            scorer = factory(dict(options))
            if not isinstance(scorer, AlignmentScorer):
                raise ScorerConfigError(f"scorer {path!r} returned {type(scorer).__name__}, "
                                        "which has no name/score()")
        else:
            scorer = OpenClipScorer(model=options.get("model") or "ViT-B-32", pretrained=options.get("pretrained"),
                                    device=options.get("device") or "auto",
                                    batch_size=int(options.get("batch_size") or 64),
                                    precision=options.get("precision") or "auto")
        _CACHE[key] = scorer
        return scorer


def clear_cache() -> None:
    """Forget the cached scorers (tests)."""
    with _CACHE_LOCK:
        _CACHE.clear()
