#!/usr/bin/env python3
"""Throughput of the project's embedding path against a plain SentenceTransformer loop.

usage: python benchmarks/embeddings.py [--n 4000] [--device cpu|cuda] [--model all-MiniLM-L6-v2]
                                       [--max-seq-length 256] [--data ../shared/data/debian/descriptions.parquet]

Both sides embed the same texts (Debian package descriptions, a deterministic
sample) with the same model and sequence length:

* ``plain``: ``SentenceTransformer.encode(texts, batch_size=B)``, the usual loop
  (fp32; it sorts by character length itself);
* ``integrity``: :class:`integrity.analysis.embeddings.TextEmbedder` (token-length
  sorting, token-budget batches, prefetching the next padded batch on a helper
  thread, fp16 autocast with pinned memory on CUDA, bf16 autocast on a CPU with
  native bf16); on CPU also ``integrity fp32`` (``cpu_bf16=False``), so the bf16
  speed-up and its agreement with float32 are printed apart.

It prints the device (the GPU's name on CUDA), docs/s and tokens/s of each,
the speed-up, and the largest cosine difference between the two (they must
agree). On CUDA it also prints the fraction of the GPU's dense fp16 peak that
the run reaches (2 x params x tokens FLOPs per forward; a rough bound that
ignores attention), when the GPU's peak is known.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import polars as pl

from integrity.analysis.embeddings import TextEmbedder, budget_order, load_model

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "debian" / "descriptions.parquet"
PEAK_FP16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0, "T4": 65.0, "V100": 125.0}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4000, help="documents to embed (default 4000; use 64000 on a GPU)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--max-seq-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=None, help="plain loop's batch size (default 64 CPU / 512 GPU)")
    ap.add_argument("--repeat", type=int, default=1, help="timed repetitions (best is kept)")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    a = ap.parse_args()

    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available() and a.device is None:
        print("no CUDA device: CPU figures (GPU figures: unmeasured)")
    if not Path(a.data).exists():
        print(f"data file {a.data} not found: pass --data", file=sys.stderr)
        return 2
    df = pl.read_parquet(a.data, columns=["id", "text"])
    pick = np.sort(budget_order(df["id"].to_list(), a.n, seed=0))
    texts = [df["text"][int(i)] for i in pick]

    model = load_model(a.model, device)
    model.max_seq_length = a.max_seq_length
    bs = a.batch_size or (512 if device.startswith("cuda") else 64)
    ours = TextEmbedder(a.model, device=device, max_seq_length=a.max_seq_length)
    fp32 = None if device.startswith("cuda") or ours.precision == "fp32" else TextEmbedder(
        a.model, device=device, max_seq_length=a.max_seq_length, cpu_bf16=False)
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    n_tokens = sum(min(len(x), a.max_seq_length) for x in model.tokenizer(texts, truncation=True, max_length=a.max_seq_length)["input_ids"])
    print(f"device: {name}; model {a.model}; {len(texts)} Debian descriptions, {n_tokens} tokens "
          f"(max_seq_length {a.max_seq_length}); integrity path in {ours.precision}")

    # warm-up (kernels, allocator, tokenizer caches)
    model.encode(texts[:64], batch_size=bs)
    ours.encode(texts[:64])
    if fp32 is not None:
        fp32.encode(texts[:64])

    def timed(fn):
        best, out = float("inf"), None
        for _ in range(a.repeat):
            _sync(device)
            t0 = time.perf_counter()
            out = fn()
            _sync(device)
            best = min(best, time.perf_counter() - t0)
        return best, out

    t_plain, v_plain = timed(lambda: model.encode(texts, batch_size=bs, convert_to_numpy=True, normalize_embeddings=True))
    t_ours, v_ours = timed(lambda: ours.encode(texts))
    diff = float(np.max(1.0 - np.sum(v_plain * v_ours, axis=1)))
    rows = [("plain", t_plain), (f"integrity {ours.precision}", t_ours)]
    if fp32 is not None:
        t_32, v_32 = timed(lambda: fp32.encode(texts))
        rows.append(("integrity fp32", t_32))
    print(f"{'path':16s} {'seconds':>9s} {'docs/s':>10s} {'tokens/s':>12s}")
    for label, t in rows:
        print(f"{label:16s} {t:9.2f} {len(texts) / t:10.1f} {n_tokens / t:12.0f}")
    print(f"speed-up: {t_plain / t_ours:.2f}x; largest cosine difference between the two: {diff:.2e}")
    if fp32 is not None:
        sims = lambda v: v @ v.T  # noqa: E731
        print(f"{ours.precision} against float32: {t_32 / t_ours:.2f}x; largest cosine difference "
              f"{float(np.max(1.0 - np.sum(v_32 * v_ours, axis=1))):.2e}; largest change of a pair's similarity "
              f"{float(np.abs(sims(v_32) - sims(v_ours)).max()):.4f}")
    if device.startswith("cuda"):
        params = sum(p.numel() for p in model.parameters())
        achieved = 2 * params * n_tokens / t_ours / 1e12
        peak = next((v for k, v in PEAK_FP16_TFLOPS.items() if k in name), None)
        bound = f" of a {peak:.0f} TFLOP/s fp16 peak = {achieved / peak:.2%}" if peak else ""
        print(f"FLOP bound: ~{achieved:.2f} TFLOP/s achieved (2 x {params / 1e6:.1f}M params x tokens){bound}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
