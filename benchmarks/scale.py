"""Cost curve: the full default scan on 1x, 4x and 16x the Debian corpus.

Copies carry light random edits (a word dropped or swapped in half the
records), so duplicates are known and the corpus does not collapse to the
original. Each size is written as 8 Parquet shards per 1x. For every size
and runner (single process `inline`, and Prefect on a local 2-worker Dask
cluster) it prints wall time, time per document, the peak RSS of the flow
process (the `integrity` command itself: what must stay constant as the
corpus grows) and of the whole process tree (flow, Prefect server and Dask
workers), both sampled every 0.2 s, and each figure's ratio to the 1x run.

    .venv/bin/python benchmarks/scale.py [--sizes 1,4,16] [--runners inline,dask] [--checks ...] [--repeat N]
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


def _rss(p: psutil.Process) -> int:
    try:
        return p.memory_info().rss
    except psutil.Error:  # it ended between the listing and the reading
        return 0


def peak_rss(proc: psutil.Popen, stop: threading.Event, out: list[int]) -> None:
    """Appends the peak RSS of ``proc`` alone and of ``proc`` with all its descendants."""
    own = tree = 0
    while not stop.is_set():
        try:
            children = proc.children(recursive=True)
        except psutil.Error:
            children = []
        mine = _rss(proc)
        own = max(own, mine)
        tree = max(tree, mine + sum(_rss(c) for c in children))
        time.sleep(0.2)
    out.extend([own, tree])


def run(corpus: Path, runner: str, checks: str | None, tmp: Path, tag: str = "") -> tuple[float, float, float, dict]:
    """Wall seconds, flow-process and process-tree peak RSS (MiB) and the summary of one scan (a
    first night: its own run and state directories, named with ``tag`` for a repeat)."""
    name = f"{runner}-{corpus.name}{tag}"
    out = tmp / f"run-{name}"
    policy = tmp / "policy.yaml"
    policy.write_text(f"state_dir: {tmp / ('state-' + name)}\nquarantine:\n  mode: mark\n")
    cmd = [str(Path(sys.executable).parent / "integrity"), "scan", str(corpus), "--out", str(out), "--policy",
           str(policy), "--runner", runner, "--workers", "2", "--id-column", "id"]
    if checks:
        cmd += ["--checks", checks]
    stop, peak = threading.Event(), []
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    th = threading.Thread(target=peak_rss, args=(proc, stop, peak))
    th.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    if proc.returncode != 0:
        sys.exit(f"scan failed ({proc.returncode}):\n{stdout}\n{stderr[-3000:]}")
    return wall, peak[0] / 2**20, peak[1] / 2**20, json.loads((out / "summary.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,4,16")
    ap.add_argument("--runners", default="inline,dask")
    ap.add_argument("--checks", default=None,
                    help="default: every check the default policy enables, dedup.semantic included (its CPU "
                         "re-scoring of half the texts with MiniLM dominates: benchmarks/README.md lists the "
                         "checks of the published curve)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="scans per size and runner, each a first night; the curve takes the median of the "
                         "peaks (the same code's 16x peak moves by 100-170 MB from run to run)")
    a = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"benchmark data not found: {DATA}")
    tmp = Path(tempfile.mkdtemp(prefix="integrity-scale-"))
    print(f"{os.cpu_count()} cores; checks: {a.checks or 'policy default'}; work dir {tmp}")
    print(f"{'size':>5s} {'docs':>10s} {'runner':>7s} {'wall s':>8s} {'ms/doc':>8s} {'x 1x':>5s} "
          f"{'flow RSS MB':>11s} {'x 1x':>5s} {'tree RSS MB':>11s} {'findings':>9s}  stage seconds")
    base_ms: dict[str, float] = {}
    base_rss: dict[str, float] = {}
    curve: dict[str, list[tuple[int, float, float, float]]] = {}
    for size in [int(s) for s in a.sizes.split(",")]:
        corpus = tmp / f"x{size}"
        docs = build_corpus(size, corpus)
        for runner in a.runners.split(","):
            runs = []
            for i in range(max(1, a.repeat)):
                wall, flow_rss, tree_rss, summary = run(corpus, runner, a.checks, tmp, f"-{i}" if i else "")
                ms = 1000 * wall / docs
                runs.append((ms, flow_rss, tree_rss))
                base_ms.setdefault(runner, ms)
                base_rss.setdefault(runner, flow_rss)
                stages = " ".join(f"{k}={v:.1f}" for k, v in summary["timings"].items() if k != "total")
                print(f"{size:>4d}x {docs:>10,} {runner:>7s} {wall:8.1f} {ms:8.3f} {ms / base_ms[runner]:5.2f} "
                      f"{flow_rss:11.0f} {flow_rss / base_rss[runner]:5.2f} {tree_rss:11.0f} "
                      f"{summary['counts']['findings']:9,}  {stages}", flush=True)
            ms, flow_rss, tree_rss = (float(np.median([r[i] for r in runs])) for i in range(3))
            curve.setdefault(runner, []).append((size, ms, flow_rss, tree_rss))
    print_curve(curve, max(1, a.repeat))


def print_curve(curve: dict[str, list[tuple[int, float, float, float]]], repeat: int = 1) -> None:
    """The cost curve per runner: ms/doc and flow-process peak RSS at each size (medians of
    ``repeat`` scans), and the issue-17 target (flow-process peak RSS at the largest size within
    1.25x of the smallest)."""
    print("\ncost curve (ms/doc | flow-process peak RSS MB | whole tree MB"
          + (f"; medians of {repeat} scans each" if repeat > 1 else "") + "):")
    for runner, points in curve.items():
        cells = "   ".join(f"{size}x: {ms:.3f} ms/doc, flow {rss:.0f} MB, tree {tree:.0f} MB"
                           for size, ms, rss, tree in points)
        print(f"  {runner:>6s}  {cells}")
        if len(points) > 1:
            (s0, _, r0, _), (s1, _, r1, _) = points[0], points[-1]
            ratio = r1 / r0
            print(f"  {'':>6s}  flow-process peak RSS {s1}x / {s0}x = {ratio:.2f} "
                  f"({'met' if ratio <= 1.25 else 'NOT met'}: target 1.25)")


if __name__ == "__main__":
    main()
