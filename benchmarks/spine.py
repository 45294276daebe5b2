"""Spine benchmark: the default scan on the real Debian descriptions corpus.

Prints wall time, peak RSS and records/s of `integrity scan` (inline runner
and Prefect threads runner) on ../shared/data/debian/descriptions.parquet,
the exact-duplicate groups it finds, and the e-mail findings when the
`maintainer` column is scanned as text.

    .venv/bin/python benchmarks/spine.py [--runner inline|threads] [--repeat-cached]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "debian" / "descriptions.parquet"


def run_scan(args: list[str], state: Path) -> tuple[float, float, dict, Path]:
    out = Path(tempfile.mkdtemp(prefix="bench-run-"))
    policy = out / "policy.yaml"
    policy.write_text(f"state_dir: {state}\nquarantine:\n  mode: mark\n")
    cmd = [str(Path(sys.executable).parent / "integrity"), "scan", *args, "--out", str(out / "run"),
           "--policy", str(policy)]
    # a wrapper process per scan, so RUSAGE_CHILDREN is that one scan's peak RSS
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]).returncode; "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r)")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"scan failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    peak_kb = int(p.stderr.strip().splitlines()[-1])
    summary = json.loads((out / "run" / "summary.json").read_text())
    return wall, peak_kb / 1024, summary, out / "run"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runner", default="inline", choices=["inline", "threads"])
    ap.add_argument("--checks", default="dedup.exact,privacy.pii,privacy.secret")
    a = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"benchmark data not found: {DATA} (needs ../shared/data)")
    rows = pl.scan_parquet(DATA).select(pl.len()).collect().item()
    state = Path(tempfile.mkdtemp(prefix="bench-state-"))
    print(f"corpus: {DATA} ({rows:,} records, {DATA.stat().st_size / 1e6:.1f} MB); runner {a.runner}; "
          f"checks {a.checks}; {os.cpu_count()} cores")
    print(f"{'run':34s} {'wall s':>8s} {'peak RSS MB':>12s} {'records/s':>10s} {'findings':>9s}")
    base = [str(DATA), "--runner", a.runner, "--id-column", "id", "--checks", a.checks]
    wall, rss, s, run = run_scan(base, state)
    print(f"{'text column, cold':34s} {wall:8.1f} {rss:12.0f} {rows / wall:10.0f} {s['counts']['findings']:9,}")
    f = pl.read_parquet(run / "findings.parquet")
    dup = f.filter(pl.col("check") == "dedup.exact")
    groups = dup["detail"].str.json_path_match("$.cluster").n_unique()
    wall2, rss2, s2, _ = run_scan(base, state)
    print(f"{'text column, unchanged (cached)':34s} {wall2:8.1f} {rss2:12.0f} {rows / wall2:10.0f} "
          f"{s2['counts']['findings']:9,}")
    wall3, rss3, s3, run3 = run_scan([str(DATA), "--runner", a.runner, "--id-column", "id", "--text-column",
                                      "maintainer", "--checks", "privacy.pii"], state)
    emails = pl.read_parquet(run3 / "findings.parquet").filter(
        pl.col("detail").str.contains('"email"'))
    print(f"{'maintainer column, privacy.pii':34s} {wall3:8.1f} {rss3:12.0f} {rows / wall3:10.0f} "
          f"{s3['counts']['findings']:9,}")
    print()
    print(f"dedup.exact: {dup.height:,} duplicate records in {groups:,} groups; "
          f"stage timings (cold): " + ", ".join(f"{k} {v:.1f}s" for k, v in s["timings"].items()))
    print(f"privacy.pii on maintainer: {emails.height:,} records with e-mail findings of {rows:,}")
    print("(peak RSS is the scan process's maximum resident set, from getrusage of the child)")


if __name__ == "__main__":
    main()
