"""Scheduled scans the way Prefect runs them: `integrity serve` (and `prefect deploy` + a process
worker) against a real Prefect server, a run triggered through the API, its final state, the
run directory it wrote, and the alerting automation's webhook on a loopback receiver."""
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT.parent / "shared" / "tools" / "check_contract.py"
_EXE = Path(sys.executable).parent / "integrity"
INTEGRITY = [str(_EXE)] if _EXE.exists() else [sys.executable, "-m", "flows.cli"]  # the console script


class Receiver:
    """A webhook receiver on loopback that keeps the JSON bodies POSTed to it."""

    def __init__(self):
        bodies = self.bodies = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                bodies.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.http = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_port}/hook"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def wait_for(self, alerts: set[str], timeout: float = 90) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not alerts <= {b.get("alert") for b in self.bodies}:
            time.sleep(0.5)
        return list(self.bodies)

    def close(self):
        self.http.shutdown()


def _env(tmp_path: Path, api_url: str) -> dict[str, str]:
    home = tmp_path / "prefect-home"
    home.mkdir(exist_ok=True)
    return {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home), "PYTHONPATH": str(ROOT),
            "PREFECT_LOGGING_LEVEL": "WARNING"}


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def _wait_for_deployment(name: str, proc: subprocess.Popen, timeout: float = 120):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the serving process exited: {proc.stdout.read()}"
            try:
                return client.read_deployment_by_name(name)
            except ObjectNotFound:
                time.sleep(0.5)
    raise AssertionError(f"deployment {name} did not appear within {timeout}s")


def _run_and_wait(deployment_id, timeout: float = 240):
    """Trigger a run through the API (what the UI's Run button does) and wait for its final state."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = client.read_flow_run(run.id)
            if run.state is not None and run.state.is_final():
                return run
            time.sleep(1)
    raise AssertionError(f"flow run {run.id} still {run.state.name if run.state else None} after {timeout}s")


def _assert_run_dir(runs: Path) -> Path:
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    for f in ("findings.parquet", "shards.parquet", "summary.json", "report.html"):
        assert (run_dir / f).is_file(), f
    if CONTRACT.exists():
        r = subprocess.run([sys.executable, str(CONTRACT), str(run_dir)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    return run_dir


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_served_run_fails_on_fail_verdict_and_alerts(prefect_server, small_corpus, tmp_path: Path, state_policy):
    """`integrity serve` with scan options, a run triggered through the API: it ends Failed (the
    verdict is fail), writes its run directory, and the automation POSTs both alerts."""
    env = _env(tmp_path, _api_url())
    receiver = Receiver()
    try:
        r = subprocess.run([*INTEGRITY, "automations", "create", "--webhook", receiver.url], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "integrity-scan-failed" in r.stdout and "integrity-shard-quarantined" in r.stdout

        name = f"nightly-{uuid.uuid4().hex[:8]}"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            console_port = s.getsockname()[1]
        serve = subprocess.Popen(
            [*INTEGRITY, "serve", str(small_corpus), "--cron", "0 2 * * *", "--name", name,
             "--out-root", str(tmp_path / "runs"), "--policy", str(state_policy), "--quarantine-mode", "mark",
             "--checks", "dedup.exact,privacy.secret", "--runner", "threads", "--workers", "1",
             "--corpus", "nightly-test", "--console-port", str(console_port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
        try:
            dep = _wait_for_deployment(f"integrity-scheduled-scan/{name}", serve)
            assert dep.parameters["quarantine_mode"] == "mark" and dep.parameters["workers"] == 1
            assert dep.parameters["corpus"] == "nightly-test"
            run = _run_and_wait(dep.id)
            # the ops console serves beside the Prefect UI: the scan, linked to its flow run
            with urllib.request.urlopen(f"http://127.0.0.1:{console_port}/", timeout=30) as resp:
                page = resp.read().decode()
            assert f"/runs/flow-run/{run.id}" in page
        finally:
            _stop(serve)
        assert run.state.type.value == "FAILED", (run.state, serve.stdout.read())
        assert "integrity verdict fail" in run.state.message and "1 quarantined" in run.state.message

        run_dir = _assert_run_dir(tmp_path / "runs")
        shards = pl.read_parquet(run_dir / "shards.parquet")
        assert dict(zip(shards["shard"], shards["verdict"]))["c.jsonl.gz"] == "quarantine"
        assert (small_corpus / "c.jsonl.gz").exists()  # --quarantine-mode mark reached the run
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["checks"] == ["dedup.exact", "privacy.secret"] and summary["corpus"] == "nightly-test"

        bodies = receiver.wait_for({"integrity.scan.failed", "integrity.shard.quarantined"})
        by_alert = {b["alert"]: b for b in bodies}
        assert by_alert["integrity.scan.failed"]["verdict"] == "fail"
        assert by_alert["integrity.scan.failed"]["run_dir"] == str(run_dir)
        assert by_alert["integrity.shard.quarantined"]["shard"] == "c.jsonl.gz"
        assert by_alert["integrity.shard.quarantined"]["mode"] == "mark"
    finally:
        receiver.close()


def test_pass_and_warn_runs_are_named(prefect_server, tmp_path: Path, state_policy):
    """Warn and pass both complete, under different state names; the summary comes back either way."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from flows.build import build_spec
    from flows.runners import run_prefect_scan

    rows = [{"id": str(i), "text": f"plain text number {i}"} for i in range(100)]
    src = tmp_path / "clean.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in rows))
    rows[1]["text"] = rows[0]["text"].upper()
    rows[3]["text"] = rows[2]["text"] + "  "
    (tmp_path / "dups").mkdir()
    (tmp_path / "dups" / "warn.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))

    names = {}
    for src_path, want in ((src, "pass"), (tmp_path / "dups", "warn")):
        spec = build_spec(str(src_path), out=tmp_path / want, policy=state_policy, checks="dedup.exact")
        assert run_prefect_scan(spec, runner="threads", workers=1)["verdict"] == want
        with get_client(sync_client=True) as client:
            (run,) = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"scan-{spec.scan_id}"])))
        assert run.state.type.value == "COMPLETED"
        names[want] = run.state.name
    assert names == {"pass": "Passed", "warn": "Warned"}


@pytest.mark.slow
def test_prefect_yaml_deploys_and_runs_on_a_process_worker(prefect_server, small_corpus, tmp_path: Path,
                                                           state_policy):
    """deployments/prefect.yaml as its header says: a process work pool, `prefect deploy`, a worker;
    a run triggered through the API writes its run directory."""
    import yaml

    env = _env(tmp_path, _api_url())
    pool = f"integrity-pool-{uuid.uuid4().hex[:6]}"
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    dep = spec["deployments"][0]
    dep["name"] = f"nightly-{uuid.uuid4().hex[:6]}"
    dep["work_pool"]["name"] = pool
    dep["parameters"].update(source=str(small_corpus), out_root=str(tmp_path / "runs"), policy=str(state_policy),
                             checks="dedup.exact,privacy.secret", quarantine_mode="copy")
    prefect_file = tmp_path / "prefect.yaml"
    prefect_file.write_text(yaml.safe_dump(spec))
    prefect = [sys.executable, "-m", "prefect", "--no-prompt"]
    worker = None
    try:
        for cmd in (["work-pool", "create", pool, "--type", "process"],
                    ["deploy", "--prefect-file", str(prefect_file), "--all"]):
            r = subprocess.run([*prefect, *cmd], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
            assert r.returncode == 0, r.stdout + r.stderr
        worker = subprocess.Popen([*prefect, "worker", "start", "--pool", pool], env=env, cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(f"integrity-scheduled-scan/{dep['name']}")
        run = _run_and_wait(deployment.id, timeout=300)
        assert run.state.type.value == "FAILED" and "integrity verdict fail" in run.state.message, run.state
        run_dir = _assert_run_dir(tmp_path / "runs")
        shards = pl.read_parquet(run_dir / "shards.parquet")
        assert dict(zip(shards["shard"], shards["verdict"]))["c.jsonl.gz"] == "quarantine"
        assert (small_corpus / "c.jsonl.gz").exists()  # copy mode
    finally:
        if worker is not None:
            _stop(worker)


def test_gate_shows_in_a_configured_server_and_needs_none(prefect_server, small_corpus, tmp_path: Path,
                                                           state_policy):
    """With PREFECT_API_URL set, the gate's scan is a flow run on that server (Failed, like its
    verdict); with no server configured or running, the gate runs without starting one."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from flows.server import free_port

    args = [*INTEGRITY, "gate", str(small_corpus), "--policy", str(state_policy), "--quarantine-mode", "mark",
            "--checks", "privacy.secret"]
    r = subprocess.run([*args, "--out", str(tmp_path / "a")], env=_env(tmp_path, _api_url()),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    scan_id = json.loads((tmp_path / "a" / "summary.json").read_text())["scan_id"]
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"scan-{scan_id}"])))
    assert run.state.type.value == "FAILED"

    env = {k: v for k, v in _env(tmp_path, "").items() if k != "PREFECT_API_URL"}
    env["PREFECT_SERVER_API_PORT"] = str(free_port())  # nothing answers at the profile's address
    r = subprocess.run([*args, "--out", str(tmp_path / "b")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "scanning without Prefect" in r.stderr
    assert not list((tmp_path / "prefect-home").glob("integrity-servers/*.pid"))  # no server was started
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["verdict"] == "fail"


def test_serve_takes_the_options_of_scan(tmp_path: Path):
    """Every scan option but --out is a serve option, and a bad one stops serve at start-up
    (exit 3, named), not at 2 a.m."""
    import click
    import typer.main

    from flows.cli import app

    commands = typer.main.get_command(app).commands
    opts = {name: {o for p in commands[name].params if isinstance(p, click.Option) for o in p.opts}
            for name in ("scan", "serve")}
    assert opts["scan"] - {"--out", "-o"} <= opts["serve"]

    r = subprocess.run([*INTEGRITY, "serve", str(tmp_path), "--quarantine-mode", "shred"],
                       env={**os.environ, "PREFECT_HOME": str(tmp_path / "home")}, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 3 and "shred" in r.stderr, r.stdout + r.stderr
