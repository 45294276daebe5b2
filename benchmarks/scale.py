"""Cost curve: the full default scan on 1x, 4x and 16x the Debian corpus.

Copies carry light random edits (a word dropped or swapped in half the
records), so duplicates are known and the corpus does not collapse to the
original. Each size is written as 8 Parquet shards per 1x. For every size
and runner (single process `inline`, and Prefect on a local 2-worker Dask
cluster) it prints wall time, peak RSS of the whole process tree (scan,
Prefect server and Dask workers, sampled every 0.2 s) and time per document.

    .venv/bin/python benchmarks/scale.py [--sizes 1,4,16] [--runners inline,dask] [--checks ...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "debian" / "descriptions.parquet"


def edited_copy(df: pl.DataFrame, k: int, rng: np.random.Generator) -> pl.DataFrame:
    """Copy ``k`` of the corpus: ids suffixed, half the texts with one word dropped or swapped."""
    if k == 0:
        return df
    texts = df["text"].to_list()
    edit = rng.random(len(texts)) < 0.5
    out = []
    for t, e in zip(texts, edit):
        if e and t:
            words = t.split(" ")
            i = int(rng.integers(len(words)))
            if rng.random() < 0.5 or len(words) < 3:
                words.pop(i)
            else:
                j = min(i + 1, len(words) - 1)
                words[i], words[j] = words[j], words[i]
            t = " ".join(words)
        out.append(t)
    return df.with_columns(id=pl.col("id") + f"#{k}", text=pl.Series(out))


def build_corpus(size: int, where: Path) -> int:
    base = pl.read_parquet(DATA).select("id", "text")
    rng = np.random.default_rng(size)
    where.mkdir(parents=True, exist_ok=True)
    n = 0
    for k in range(size):
        part = edited_copy(base, k, rng).sample(fraction=1.0, shuffle=True, seed=k)
        for s, chunk in enumerate(np.array_split(np.arange(part.height), 8)):
            part[chunk.tolist()].write_parquet(where / f"part-{k:03d}-{s}.parquet")
        n += part.height
    return n


def peak_tree_rss(proc: psutil.Popen, stop: threading.Event, out: list[int]) -> None:
    peak = 0
    while not stop.is_set():
        try:
            procs = [proc] + proc.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)
    out.append(peak)


def run(corpus: Path, runner: str, checks: str | None, tmp: Path) -> tuple[float, float, dict]:
    out = tmp / f"run-{runner}-{corpus.name}"
    policy = tmp / "policy.yaml"
    policy.write_text(f"state_dir: {tmp / ('state-' + runner + '-' + corpus.name)}\nquarantine:\n  mode: mark\n")
    cmd = [str(Path(sys.executable).parent / "integrity"), "scan", str(corpus), "--out", str(out), "--policy",
           str(policy), "--runner", runner, "--workers", "2", "--id-column", "id"]
    if checks:
        cmd += ["--checks", checks]
    stop, peak = threading.Event(), []
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    th = threading.Thread(target=peak_tree_rss, args=(proc, stop, peak))
    th.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    if proc.returncode != 0:
        sys.exit(f"scan failed ({proc.returncode}):\n{stdout}\n{stderr[-3000:]}")
    return wall, peak[0] / 2**20, json.loads((out / "summary.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,4,16")
    ap.add_argument("--runners", default="inline,dask")
    ap.add_argument("--checks", default=None, help="default: every check the default policy enables")
    a = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"benchmark data not found: {DATA}")
    tmp = Path(tempfile.mkdtemp(prefix="integrity-scale-"))
    print(f"{os.cpu_count()} cores; checks: {a.checks or 'policy default'}; work dir {tmp}")
    print(f"{'size':>5s} {'docs':>10s} {'runner':>7s} {'wall s':>8s} {'peak RSS MB':>12s} {'ms/doc':>8s} "
          f"{'findings':>9s}  stage seconds")
    base_ms: dict[str, float] = {}
    for size in [int(s) for s in a.sizes.split(",")]:
        corpus = tmp / f"x{size}"
        docs = build_corpus(size, corpus)
        for runner in a.runners.split(","):
            wall, rss, summary = run(corpus, runner, a.checks, tmp)
            ms = 1000 * wall / docs
            base_ms.setdefault(runner, ms)
            stages = " ".join(f"{k}={v:.1f}" for k, v in summary["timings"].items() if k != "total")
            print(f"{size:>4d}x {docs:>10,} {runner:>7s} {wall:8.1f} {rss:12.0f} {ms:8.3f} "
                  f"{summary['counts']['findings']:9,}  {stages}  ({ms / base_ms[runner]:.2f}x of 1x per doc)",
                  flush=True)


if __name__ == "__main__":
    main()
