"""The GPU benchmarks keep working where there is no GPU: each runs its GPU code path on the
CPU, small, as a user would (a subprocess), and prints its table (the GPU figures themselves
stay unmeasured until a CUDA machine runs them)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
DEBIAN = PROJECT.parent / "shared" / "data" / "debian" / "descriptions.parquet"


def _run(*args: str) -> str:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(PROJECT)}
    r = subprocess.run([sys.executable, *args], cwd=PROJECT, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.skipif(not DEBIAN.exists(), reason="the Debian benchmark corpus is not here")
def test_embeddings_benchmark_falls_back_to_the_cpu():
    out = _run("benchmarks/embeddings.py", "--n", "48", "--max-seq-length", "64", "--data", str(DEBIAN))
    assert "no CUDA device: CPU figures (GPU figures: unmeasured)" in out
    assert "device: CPU" in out and "48 Debian descriptions" in out
    diff = float(re.search(r"largest cosine difference between the two: ([0-9.e+-]+)", out).group(1))
    assert diff < 1e-3  # the project's path embeds as sentence-transformers does


@pytest.mark.slow  # a ViT-B-32 built and run on the CPU: ~20 s on an idle 2-core machine
def test_images_gpu_mode_runs_on_the_cpu():
    out = _run("benchmarks/images.py", "--gpu", "--n", "8", "--batch-size", "4", "--loop-pairs", "4")
    assert "running the GPU path on the CPU (a smoke run; GPU figures: unmeasured)" in out
    assert "8 JPEG pairs" in out and "on CPU" in out
    assert re.search(r"\| integrity\.analysis\.clip\.OpenClipScorer .*\| [\d,]+ \| [\d.]+x \|", out)
    r = float(re.search(r"Pearson r = ([-0-9.]+)", out).group(1))
    assert r > 0.99  # the batched scorer scores as the plain per-pair loop does
