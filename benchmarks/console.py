"""Console benchmark: every page of the ops console on a ledger of 1,000 scans x 1,000 shards.

Builds (once, reused when present) a state directory whose ledger holds
``--scans`` nightly scans of ``--shards`` shards each, written through the
ledger's own API (``record_scan_start`` / ``record_verdicts`` /
``record_scan_end``), with shard content changing now and then, quarantine
actions (pending and resolved) and run directories holding a
``findings.parquet`` of ``--findings`` findings, ``examples.parquet`` and
``report.html``. Then it signs in as an operator and times each page
through the real ASGI app (Starlette's test client: routing, sessions,
SQLite, Polars, Jinja2 and matplotlib, without the network), cold (first
request) and warm (median of ``--repeat``), and prints a table. The target
is under 300 ms for every page.

    .venv/bin/python benchmarks/console.py [--scans 1000] [--shards 1000] [--state DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from integrity.console import add_user, create_app  # noqa: E402
from integrity.ledger import Ledger  # noqa: E402

CHECKS = ("dedup.exact", "dedup.near", "privacy.pii", "privacy.secret", "poison.trigger", "distribution.drift",
          "synthetic.text", "contamination.eval")
TARGET_MS = 300.0
PASSWORD = "benchmark-operator"


def _shards(n: int) -> list[str]:
    return [f"part-{i // 100:03d}/shard-{i:05d}.parquet" for i in range(n)]


def write_run_dir(run: Path, shards: list[str], n_findings: int, rng: random.Random) -> None:
    """A run directory following the scan's output contract (the files the console reads)."""
    run.mkdir(parents=True, exist_ok=True)
    sev = rng.choices(["info", "warn", "critical"], weights=[6, 3, 1], k=n_findings)
    df = pl.DataFrame({
        "shard": [shards[rng.randrange(len(shards))] for _ in range(n_findings)],
        "record_id": [f"r{rng.randrange(10**7)}" for _ in range(n_findings)],
        "check": [CHECKS[rng.randrange(len(CHECKS))] for _ in range(n_findings)],
        "severity": sev,
        "score": [rng.random() for _ in range(n_findings)],
        "detail": [json.dumps({"cluster": f"c{i % 997}", "representative": f"r{i}"}) for i in range(n_findings)],
    })
    df.write_parquet(run / "findings.parquet")
    ex = df.head(500).with_columns(pl.lit("text").alias("field"),
                                   pl.lit("a record with <b>markup</b> and some evidence in the middle of it").alias("excerpt"),
                                   pl.lit("[[33, 41]]").alias("highlights"))
    ex.write_parquet(run / "examples.parquet")
    (run / "report.html").write_text("<!doctype html><html><body><h1>report</h1></body></html>")


def build(state: Path, n_scans: int, n_shards: int, n_findings: int, seed: int = 7) -> None:
    """Fill ``state`` with the benchmark ledger and run dirs (skipped when it is already complete)."""
    ledger = Ledger(state)
    with ledger.reader() as con:
        have = con.execute("SELECT COUNT(*) FROM scans WHERE finished_at IS NOT NULL").fetchone()[0]
    if have >= n_scans:
        print(f"reusing {state} ({have:,} scans)")
        return
    rng = random.Random(seed)
    shards = _shards(n_shards)
    runs = [state / "runs" / f"run-{k}" for k in range(3)]
    for run in runs:
        write_run_dir(run, shards, n_findings, rng)
    sha = {s: f"{rng.getrandbits(256):064x}" for s in shards}
    start = datetime(2024, 1, 1, 2, 0, tzinfo=timezone.utc)
    t0 = time.perf_counter()
    for night in range(have, n_scans):
        for s in rng.sample(shards, k=max(1, n_shards // 50)):  # some content changes every night
            sha[s] = f"{rng.getrandbits(256):064x}"
        scan_id = f"{(start + timedelta(days=night)).strftime('%Y%m%dT%H%M%SZ')}-{night:06x}"
        source = "s3://corpus/web/" if night % 4 else "s3://corpus/instructions/"
        ledger.record_scan_start(scan_id=scan_id, source=source, run_dir=str(runs[night % 3]),
                                 flow_run_id=f"00000000-0000-4000-8000-{night:012d}")
        rows, verdicts = [], {"pass": 0, "warn": 0, "quarantine": 0, "unreadable": 0}
        for s in shards:
            v = rng.choices(["pass", "warn", "quarantine", "unreadable"], weights=[90, 8, 1.5, 0.5])[0]
            verdicts[v] += 1
            rows.append({"shard": s, "uri": f"s3://corpus/{s}", "sha256": sha[s], "verdict": v,
                         "reasons": [] if v == "pass" else [f"{v} findings of {rng.choice(CHECKS)}"]})
        ledger.record_verdicts(scan_id, rows)
        by_check = {c: {"info": rng.randrange(500), "warn": rng.randrange(100), "critical": rng.randrange(10)}
                    for c in CHECKS}
        counts = {"shards": n_shards, "rows": n_shards * 10_000, "findings": sum(sum(v.values()) for v in by_check.values()),
                  "by_check": by_check, "verdicts": verdicts}
        ledger.record_scan_end(scan_id, verdict="fail" if verdicts["quarantine"] else "warn", counts=counts)
        with ledger._write() as con:  # backdate: one scan per night, each taking ~40 minutes
            t = (start + timedelta(days=night)).isoformat(timespec="microseconds")
            e = (start + timedelta(days=night, minutes=40)).isoformat(timespec="microseconds")
            con.execute("UPDATE scans SET started_at = ?, finished_at = ? WHERE scan_id = ?", (t, e, scan_id))
        if (night + 1) % 100 == 0:
            print(f"  {night + 1:,} scans written ({time.perf_counter() - t0:.0f}s)", flush=True)
    # quarantine actions: 40 pending, 400 resolved (released or restored)
    for i, s in enumerate(shards[:440]):
        a, _ = ledger.begin_action(scan_id=None, shard=s, uri=f"s3://corpus/{s}", sha256=sha[s], mode="move",
                                   destination=f"s3://quarantine/{sha[s][:16]}/{s}", who="nightly")
        ledger.set_state(a.id, "done")
        if i >= 40:
            ledger.begin_resolution(a.id, resolution="released" if i % 2 else "restored", restore=True,
                                    who="oncall", reason="checked by hand")
            ledger.finish_restore(a.id)
    print(f"built {state} in {time.perf_counter() - t0:.0f}s")


def time_pages(state: Path, repeat: int) -> list[tuple[str, float, float]]:
    from starlette.testclient import TestClient

    ledger = Ledger(state)
    if not ledger.user_hash("bench"):
        add_user(ledger, "bench", "operator", PASSWORD)
    client = TestClient(create_app(state))
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    r = client.post("/login", data={"name": "bench", "password": PASSWORD, "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303, r.text
    latest = ledger.scans(limit=1)[0].scan_id
    shard = _shards(1_000_000)[5]
    pending = ledger.quarantined()[0].id
    pages = [
        ("scans (page 1)", "/"),
        ("scans (page 10)", "/?page=10"),
        ("scans of one source", "/?source=s3://corpus/instructions/"),
        *[(f"trend chart {k} (90 nights)", f"/charts/{k}.svg?nights=90") for k in
          ("findings", "quarantined", "synthetic", "drift")],
        ("trend chart findings (1000 nights)", "/charts/findings.svg?nights=1000"),
        ("scan", f"/scans/{latest}"),
        ("scan, verdicts page 5", f"/scans/{latest}?vpage=5"),
        ("scan, filtered findings", f"/scans/{latest}?check=privacy.pii&severity=warn&page=3"),
        ("scan, findings of one shard", f"/scans/{latest}?shard={shard}"),
        ("drop list CSV", f"/scans/{latest}/droplist.csv"),
        ("drop list Parquet", f"/scans/{latest}/droplist.parquet"),
        ("shard (1000 nights)", f"/shard?name={shard}"),
        ("shard, page 10", f"/shard?name={shard}&page=10"),
        ("quarantine queue", "/quarantine"),
        ("quarantine, completed page 5", "/quarantine?page=5"),
        ("release confirmation", f"/quarantine/{pending}/release"),
    ]
    results = []
    for name, url in pages:
        t, c = time.perf_counter(), time.process_time()
        r = client.get(url)
        cold, cold_cpu = (time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
        warm, warm_cpu = [], []
        for _ in range(repeat):
            t, c = time.perf_counter(), time.process_time()
            client.get(url)
            warm.append((time.perf_counter() - t) * 1000)
            warm_cpu.append((time.process_time() - c) * 1000)
        results.append((name, cold, statistics.median(warm), cold_cpu, statistics.median(warm_cpu)))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=1000)
    ap.add_argument("--shards", type=int, default=1000)
    ap.add_argument("--findings", type=int, default=200_000, help="findings per run directory")
    ap.add_argument("--state", type=Path, help="state directory to build or reuse (default: a temp dir)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    state = args.state or Path(tempfile.mkdtemp(prefix="console-bench-"))
    build(state, args.scans, args.shards, args.findings)
    with Ledger(state).reader() as con:
        n_v = con.execute("SELECT COUNT(*) FROM shard_verdicts").fetchone()[0]
    size = (state / "ledger.sqlite").stat().st_size
    print(f"ledger: {args.scans:,} scans, {n_v:,} shard verdicts, {size / 2**20:.0f} MiB; "
          f"{args.findings:,} findings per run dir")
    load = os.getloadavg()[0]
    results = time_pages(state, args.repeat)
    width = max(len(n) for n, *_ in results)
    print(f"\nwall and CPU milliseconds per page; cold = first request, warm = median of {args.repeat}; "
          f"load average {load:.1f} on {os.cpu_count()} cores")
    print(f"{'page':{width}s}  cold wall  cold cpu  warm wall  warm cpu")
    for name, cold, warm, cold_cpu, warm_cpu in results:
        flag = "" if max(cold, warm) < TARGET_MS else f"  OVER {TARGET_MS:.0f} ms"
        print(f"{name:{width}s}  {cold:9.1f}  {cold_cpu:8.1f}  {warm:9.1f}  {warm_cpu:8.1f}{flag}")
    worst = max(max(r[1], r[2]) for r in results)
    worst_cpu = max(max(r[3], r[4]) for r in results)
    print(f"\nslowest page: {worst:.1f} ms wall, {worst_cpu:.1f} ms CPU (target < {TARGET_MS:.0f} ms): "
          f"{'OK' if worst < TARGET_MS else 'MISSED'}")


if __name__ == "__main__":
    main()
