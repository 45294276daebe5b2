#!/usr/bin/env python3
"""Time to render ``report.html`` for a big run: 5,000 shards and 100,000 findings.

usage: python benchmarks/report.py [--shards 5000] [--findings 100000]

The report caps what it lists (the worst ``MAX_SHARD_ROWS`` shards, a few examples per
check), so its render time should not grow with the run; this prints the seconds of
``write_report`` at the given size and at a tenth of it, to show the curve. (The unit test
``test_large_run_is_capped_and_fast`` asserts the caps on the same shape of run.)
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.schema import SCAN_FINDING_COLUMNS  # noqa: E402
from integrity.report.render import SHARD_COLUMNS, write_report  # noqa: E402


def build_run(run: Path, n: int, m: int) -> None:
    """A run dir of ``n`` shards (60 of them flagged) and ``m`` dedup/outlier findings."""
    verdicts = ["pass"] * (n - 60) + ["warn"] * 50 + ["quarantine"] * 7 + ["unreadable"] * 3
    shards = pl.DataFrame([{
        "shard": f"web-{i:05d}.parquet", "uri": f"s3://corpus/web/web-{i:05d}.parquet", "sha256": f"{i:064x}",
        "rows": 10_000, "bytes": 52_428_800, "verdict": v, "reasons": [], "format": "parquet",
        "error": "boom" if v == "unreadable" else None, "cached": False, "seconds": 1.25, "n_info": 0,
        "n_warn": 2 if v != "pass" else 0, "n_critical": 0, "records_flagged": 0,
        "quarantine": "done" if v == "quarantine" else None} for i, v in enumerate(verdicts)], schema=SHARD_COLUMNS)
    findings = pl.DataFrame({
        "shard": [f"web-{i % n:05d}.parquet" for i in range(m)], "record_id": [str(i) for i in range(m)],
        "check": ["dedup.near" if i % 3 else "poison.outlier" for i in range(m)],
        "severity": ["warn" if i % 7 else "critical" for i in range(m)],
        "score": [(i % 97) / 97 for i in range(m)],
        "detail": [json.dumps({"cluster": f"c{i % 4000}", "cluster_size": 25}) for i in range(m)],
    }, schema=SCAN_FINDING_COLUMNS)
    by_check: dict[str, dict[str, int]] = {}
    for chk, sev, k in findings.group_by(["check", "severity"]).len().iter_rows():
        by_check.setdefault(chk, {"info": 0, "warn": 0, "critical": 0})[sev] = k
    shards.write_parquet(run / "shards.parquet")
    findings.write_parquet(run / "findings.parquet")
    (run / "summary.json").write_text(json.dumps({
        "scan_id": "bench", "source": "s3://corpus/web/*.parquet", "verdict": "fail",
        "checks": ["dedup.near", "poison.outlier"],
        "counts": {"shards": n, "rows": 10_000 * n, "bytes": 52_428_800 * n, "findings": m, "by_check": by_check,
                   "verdicts": {v: verdicts.count(v) for v in ("pass", "warn", "quarantine", "unreadable")}}}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=5000)
    ap.add_argument("--findings", type=int, default=100_000)
    args = ap.parse_args()
    print("| shards | findings | render s |\n|---|---|---|")
    for scale in (10, 1):
        n, m = max(60, args.shards // scale), args.findings // scale
        with tempfile.TemporaryDirectory() as tmp:
            build_run(Path(tmp), n, m)
            t0 = time.perf_counter()
            write_report(Path(tmp))
            print(f"| {n:,} | {m:,} | {time.perf_counter() - t0:.2f} |")


if __name__ == "__main__":
    main()
