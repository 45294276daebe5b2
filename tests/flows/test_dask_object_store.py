"""Scale-out as a user runs it: `integrity scan --runner dask --address ...` on a local Dask
cluster (2 worker processes) with the run directory on an S3 API (moto's server, on loopback),
the corpus passes' partition tasks on the workers, and the same findings as an inline scan."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import write_jsonl, write_parquet

PROJECT = Path(__file__).resolve().parents[2]
BUCKET = "integrity-runs"
CHECKS = "dedup.exact,dedup.near,dedup.span,memorization.risk,privacy.pii"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(monkeypatch):
    """An S3 API on a random loopback port, a bucket in it, and the AWS_* variables every
    process (this one, the CLI, the Dask workers) reads its credentials and endpoint from."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
        monkeypatch.setenv(k, v)
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    try:
        yield f"s3://{BUCKET}"
    finally:
        server.stop()


def _corpus(root: Path) -> Path:
    """Four shards with near duplicates across them (one word changed), repeated passages
    and an e-mail address."""
    base = [f"record {i} describes the {w} package with tools for parsing, testing and packaging "
            f"libraries written by volunteers around the world" for i, w in
            enumerate(["alpha", "beta", "gamma", "delta", "epsilon", "zeta"] * 10)]
    for s in range(4):
        rows = [{"id": f"s{s}-{i}", "text": t if (i + s) % 3 else t.replace("volunteers", "people")}
                for i, t in enumerate(base)]
        rows[s]["text"] = f"Contact maintainer{s}@example.org about release {s}."
        (write_parquet if s % 2 else write_jsonl)(root / f"part-{s}.{'parquet' if s % 2 else 'jsonl'}", rows)
    return root


def _partition_task_runs() -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    async def count() -> int:
        async with get_client() as client:
            runs = await client.read_task_runs(task_run_filter=TaskRunFilter(
                name=TaskRunFilterName(like_="partition ")))
            return len(runs)
    return asyncio.run(count())


def test_dask_scan_with_run_dir_on_s3_matches_inline(prefect_server, s3, tmp_path: Path, monkeypatch):
    from distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL

    import fsspec

    from flows.build import build_spec
    from integrity.engine import pipeline

    corpus = _corpus(tmp_path / "corpus")
    options = "    options:\n      partition_entries: 500\n"  # several band-join partitions, even this small
    for name in ("dask", "inline"):
        (tmp_path / f"{name}.yaml").write_text(
            f"state_dir: {tmp_path / ('state-' + name)}\nchecks:\n  dedup.near:\n{options}")
    api = PREFECT_API_URL.value()
    monkeypatch.setenv("PREFECT_API_URL", api)  # the workers report their task runs to the test server
    env = {**os.environ, "PYTHONPATH": f"{PROJECT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    before = _partition_task_runs()
    # the workers inherit this process's environment: the AWS_* variables and PREFECT_API_URL
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        scan = subprocess.Popen([sys.executable, "-m", "flows.cli", "scan", str(corpus), "--out",
                                 f"{s3}/nightly/run-1", "--policy", str(tmp_path / "dask.yaml"), "--checks", CHECKS,
                                 "--runner", "dask", "--address", cluster.scheduler_address],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            # the reference, while the CLI starts up: the engine in this process, one partition after the other
            pipeline.run_scan(build_spec(str(corpus), out=tmp_path / "inline", policy=tmp_path / "inline.yaml",
                                         checks=CHECKS, quarantine_mode="off"))
            out, err = scan.communicate(timeout=300)
        finally:
            if scan.poll() is None:
                scan.kill()
                scan.communicate()
    assert scan.returncode == 0, out + err
    assert f"report: {s3}/nightly/run-1/report.html" in out

    fs = fsspec.filesystem("s3")
    stored = sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{BUCKET}/nightly/run-1"))
    assert {"findings.parquet", "shards.parquet", "summary.json", "report.html", "examples.parquet"} <= set(stored)
    assert not fs.exists(f"{BUCKET}/nightly/run-1/.work")  # the partitions' exchange files are gone
    assert not list((tmp_path / "state-dask").glob("staging/*"))  # and so is the local staging copy
    with fs.open(f"{BUCKET}/nightly/run-1/findings.parquet", "rb") as f:
        on_s3 = pl.read_parquet(f)
    inline = pl.read_parquet(tmp_path / "inline" / "findings.parquet")
    order = ["check", "shard", "record_id"]
    assert set(on_s3["check"]) >= {"dedup.near", "privacy.pii"}
    assert on_s3.sort(order).equals(inline.sort(order))
    # the band join's partitions ran as tasks (on the workers), not in the flow process
    assert _partition_task_runs() - before >= 2


def test_a_run_dir_url_that_cannot_be_written_stops_the_scan_before_it_reads(s3, tmp_path: Path):
    """No such bucket: exit 3 at once, naming the URL and what to check, no traceback."""
    corpus = _corpus(tmp_path / "corpus")
    (tmp_path / "p.yaml").write_text(f"state_dir: {tmp_path / 'state'}\n")
    env = {**os.environ, "PYTHONPATH": f"{PROJECT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([sys.executable, "-m", "flows.cli", "scan", str(corpus), "--out", "s3://no-such-bucket/run",
                        "--policy", str(tmp_path / "p.yaml"), "--checks", "dedup.exact", "--runner", "inline"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "s3://no-such-bucket/run: the run directory cannot be written" in r.stderr
    assert "check that the bucket exists" in r.stderr and "Traceback" not in r.stderr
