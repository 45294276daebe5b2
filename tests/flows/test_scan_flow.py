"""A real Prefect flow run on the session's temporary server."""
import asyncio
from pathlib import Path

import polars as pl

from flows.build import build_spec
from flows.runners import run_prefect_scan


def _artifacts_and_events():
    from prefect.client.orchestration import get_client

    async def fetch():
        async with get_client() as client:
            arts = await client.read_artifacts()
            return {a.key for a in arts if a.key}
    return asyncio.run(fetch())


def _integrity_events(want: set[str], timeout: float = 15.0) -> set[str]:
    """Event names starting with ``integrity.`` on the test server (events persist asynchronously)."""
    import time

    import httpx
    from prefect.settings import PREFECT_API_URL

    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not want <= seen:
        r = httpx.post(PREFECT_API_URL.value() + "/events/filter",
                       json={"filter": {"event": {"name": sorted(want)}}, "limit": 50})
        seen = {e["event"] for e in r.json()["events"] if e["event"].startswith("integrity.")}
        time.sleep(0.5)
    return seen


def test_scan_flow_runs_on_prefect_and_publishes(prefect_server, small_corpus, tmp_path: Path, state_policy):
    # a corpus check and the one that quarantines c.jsonl.gz: the flow, its artifacts and events are
    # under test (every default check under Prefect is test_prefect_and_inline_runners_agree's)
    spec = build_spec(str(small_corpus), out=tmp_path / "run", policy=state_policy,
                      checks="dedup.exact,privacy.pii,privacy.secret")
    summary = run_prefect_scan(spec, runner="threads", workers=2)
    assert summary["verdict"] == "fail" and summary["runner"] == "threads"
    shards = pl.read_parquet(spec.out / "shards.parquet")
    assert dict(zip(shards["shard"], shards["verdict"]))["c.jsonl.gz"] == "quarantine"
    assert not (small_corpus / "c.jsonl.gz").exists()  # moved to quarantine
    assert {"integrity-scan-summary", "integrity-shard-verdicts", "integrity-scan-progress"} <= _artifacts_and_events()
    events = {"integrity.scan.completed", "integrity.shard.quarantined"}
    assert events <= _integrity_events(events)


def test_prefect_and_inline_runners_agree(prefect_server, small_corpus, tmp_path: Path, state_policy):
    from integrity.engine import pipeline

    a = build_spec(str(small_corpus), out=tmp_path / "a", policy=state_policy, quarantine_mode="off")
    run_prefect_scan(a, runner="threads")
    (tmp_path / "state").rename(tmp_path / "state-a")  # no cache sharing between the two
    b = build_spec(str(small_corpus), out=tmp_path / "b", policy=state_policy, quarantine_mode="off")
    pipeline.run_scan(b)
    fa = pl.read_parquet(a.out / "findings.parquet").drop("detail")
    fb = pl.read_parquet(b.out / "findings.parquet").drop("detail")
    assert fa.equals(fb) and fa.height > 0


def test_dask_runner_matches_threads(prefect_server, small_corpus, tmp_path: Path, state_policy, monkeypatch):
    """Shard tasks on a local Dask cluster (started by the scan) report to the same Prefect
    server and give the same findings as the default runner. One worker process: tasks spread
    over two workers are tests/flows/test_dask_object_store.py's; the reference is the inline
    engine, which gives the threads runner's findings (test_prefect_and_inline_runners_agree),
    without a second flow run."""
    import os

    from integrity.engine import pipeline

    monkeypatch.setenv("PREFECT_API_URL", os.environ.get("PREFECT_API_URL", ""))  # restored after the test
    # every default check that loads no embedding model (MiniLM in a worker process costs more than
    # the rest of the test): per-shard features and every kind of corpus pass cross the worker boundary
    checks = ("dedup.exact,dedup.near,dedup.span,privacy.pii,privacy.secret,poison.injection,poison.trigger,"
              "memorization.risk,synthetic.text,distribution.drift,provenance.changed,provenance.duplicate_id")
    a = build_spec(str(small_corpus), out=tmp_path / "a", policy=state_policy, quarantine_mode="off", checks=checks)
    sa = run_prefect_scan(a, runner="dask", workers=1)
    assert sa["runner"] == "dask"
    (tmp_path / "state").rename(tmp_path / "state-dask")
    b = build_spec(str(small_corpus), out=tmp_path / "b", policy=state_policy, quarantine_mode="off", checks=checks)
    pipeline.run_scan(b)
    fa = pl.read_parquet(a.out / "findings.parquet").drop("detail")
    fb = pl.read_parquet(b.out / "findings.parquet").drop("detail")
    assert fa.height > 0 and fa.equals(fb)
    assert pl.read_parquet(a.out / "shards.parquet")["verdict"].to_list() == \
        pl.read_parquet(b.out / "shards.parquet")["verdict"].to_list()


def test_scheduled_flow_writes_one_run_dir_per_run(prefect_server, small_corpus, tmp_path: Path, state_policy):
    """The deployment's entrypoint takes JSON parameters and writes OUT_ROOT/SCAN_ID."""
    from flows.scheduled import scheduled_scan

    summary = scheduled_scan(source=str(small_corpus), out_root=str(tmp_path / "runs"), policy=str(state_policy),
                             checks="dedup.exact,privacy.pii", quarantine_mode="off")
    (run,) = list((tmp_path / "runs").iterdir())
    assert run.name == summary["scan_id"] and (run / "report.html").exists()
    assert summary["checks"] == ["dedup.exact", "privacy.pii"]


def test_verbose_gate_on_prefect_shows_progress_not_http_requests(prefect_server, small_corpus, tmp_path: Path,
                                                                   state_policy):
    """`integrity gate -v` against a Prefect server, as a user runs it: progress lines with
    records and an ETA, the scan's own log, and none of the HTTP client's request lines."""
    import json
    import os
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    project = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "INTEGRITY_PROGRESS_EVERY": "0",
           "PYTHONPATH": f"{project}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([sys.executable, "-m", "flows.cli", "gate", str(small_corpus), "--out", str(tmp_path / "run"),
                        "--policy", str(state_policy), "--checks", "dedup.exact,privacy.secret", "-v"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["runner"] == "threads"
    assert "HTTP Request" not in r.stderr and "httpx" not in r.stderr, r.stderr
    assert "150 / 150 records, 3/3 shards" in r.stderr, r.stderr
    assert "integrity.engine" in r.stderr  # -v still logs the scan itself
