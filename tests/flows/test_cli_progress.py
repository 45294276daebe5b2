"""Progress as a user sees it off a terminal (CI logs): `gate` and `profile` print records done /
total and an ETA instead of staying silent."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import write_jsonl

PROJECT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "INTEGRITY_PROGRESS_EVERY": "0",
           "PYTHONPATH": f"{PROJECT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_gate_and_profile_print_records_and_eta(tmp_path: Path):
    src = tmp_path / "src"
    for s in range(3):
        write_jsonl(src / f"p{s}.jsonl", [{"id": f"{s}-{i}", "text": f"part {s} line {i} on kites and wind"}
                                          for i in range(400)])
    policy = tmp_path / "p.yaml"
    policy.write_text(f"state_dir: {tmp_path / 'state'}\nbatch_size: 100\n")
    r = cli("gate", str(src), "--out", str(tmp_path / "run"), "--policy", str(policy), "--runner", "inline",
            "--workers", "1", "--checks", "dedup.exact")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("scanning: ")]
    assert any("ETA " in ln and "/ ~1,200 records" in ln for ln in lines), r.stderr
    assert lines[-1].startswith("scanning: 1,200 / 1,200 records, 3/3 shards"), r.stderr

    r = cli("profile", str(src), "--out", str(tmp_path / "ref"), "--embed-sample", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("profiling: ")]
    assert any("ETA " in ln for ln in lines), r.stderr
    assert any(ln.startswith("profiling: 1,200 / 1,200 records, 3/3 shards") for ln in lines), r.stderr
