"""A scan of a source full of hostile shards, run as a user runs it (CLI in a subprocess).

Issue 13: each of these used to crash the process, hang it, blow its memory
or abort the whole scan. Now each is one ``unreadable`` shard naming its
problem, the good shard is scanned, and the process stays small.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import zstandard


def _hostile_source(src: Path) -> None:
    import datasets

    src.mkdir()
    (src / "good.jsonl").write_text("".join(json.dumps({"id": i, "text": f"plain record {i} about rivers"}) + "\n"
                                            for i in range(50)))
    # pyarrow's JSON reader segfaulted on this (rc 139, no output)
    (src / "nested.jsonl").write_bytes(b'{"id":1,"text":"x","meta":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n")
    # RecursionError aborted the whole scan (rc 3, file not named)
    (src / "deep_text.jsonl").write_bytes(b'{"id":1,"text":' + b"[" * 5000 + b"]" * 5000 + b'}\n'
                                          b'{"id":2,"text":"ok"}\n')
    # 1 GiB of zeros in a few dozen KB: reached 3.9 GB RSS
    with open(src / "bomb.jsonl.zst", "wb") as f, zstandard.ZstdCompressor().stream_writer(f) as w:
        for _ in range(1024):
            w.write(b"\0" * (1 << 20))
    # an HF save_to_disk dir whose state.json is a list: AttributeError aborted the scan
    datasets.disable_progress_bars()
    datasets.Dataset.from_dict({"id": ["a"], "text": ["hello"]}).save_to_disk(str(src / "hf"))
    (src / "hf" / "state.json").write_text("[]")
    # a FIFO hung the scan forever
    os.mkfifo(src / "pipe.jsonl")
    # NUL + unterminated quote: line 5 was merged silently into record 4
    (src / "bad.csv").write_bytes(b'id,text\n1,alpha\n2,beta\n3,gamma\n4,"delta \x00\n5,epsilon\n')


# Runs the command and writes its peak RSS (KiB) to argv[1]. A child's ru_maxrss starts at
# its parent's high-water mark (it is kept across fork and exec), and pytest is large late
# in the suite: measured from pytest directly, a 300 MiB scan read as 2.3 GiB. This small
# launcher is a fresh process, so what its child reports is the scan's own peak.
_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _run_measured(cmd: list[str], env: dict, tmp_path: Path) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``cmd``; return its result and its own peak RSS in MiB."""
    peak_file = tmp_path / "peak_rss_kib"
    r = subprocess.run([sys.executable, "-c", _LAUNCHER, str(peak_file), *cmd],
                       capture_output=True, text=True, timeout=300, env=env)
    return r, int(peak_file.read_text()) // 1024


def test_hostile_shards_are_each_unreadable_and_the_scan_goes_on(tmp_path: Path):
    src = tmp_path / "src"
    _hostile_source(src)
    (tmp_path / "policy.yaml").write_text(f"state_dir: {tmp_path / 'state'}\n")
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    cmd = [sys.executable, "-m", "flows.cli", "scan", str(src), "--out", str(tmp_path / "run"),
           "--policy", str(tmp_path / "policy.yaml"), "--runner", "inline", "--checks", "dedup.exact,privacy.secret"]
    r, peak_mib = _run_measured(cmd, env, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pipe.jsonl" in r.stderr and "not a regular file" in r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    errors = {u["shard"]: u["error"] for u in summary["unreadable"]}
    assert set(errors) == {"nested.jsonl", "deep_text.jsonl", "bomb.jsonl.zst", "hf", "bad.csv"}
    assert "line 1: JSON nested 100,001 levels deep" in errors["nested.jsonl"]
    assert "line 1: JSON nested 5,001 levels deep" in errors["deep_text.jsonl"]
    assert "limits.max_expansion_ratio" in errors["bomb.jsonl.zst"]
    assert "state.json holds list JSON" in errors["hf"]
    assert "bad.csv line 5: CSV parse error (NUL byte" in errors["bad.csv"]
    shards = pl.read_parquet(tmp_path / "run" / "shards.parquet")
    assert shards.filter(pl.col("shard") == "good.jsonl")["verdict"].to_list() == ["pass"]
    assert shards.filter(pl.col("shard") == "good.jsonl")["rows"].to_list() == [50]
    assert peak_mib < 1200, f"peak RSS {peak_mib} MiB"


def test_quarantine_and_state_dirs_inside_the_source_are_not_scanned(small_corpus: Path, tmp_path: Path):
    """Issue 13 defect 10: the quarantined copy came back as a new shard and was moved one level deeper."""
    from typer.testing import CliRunner

    from flows.cli import app

    policy = tmp_path / "policy.yaml"
    policy.write_text(f"state_dir: {small_corpus / 'state'}\nquarantine:\n  dir: {small_corpus / 'quarantine'}\n")
    runner = CliRunner()
    args = ["gate", str(small_corpus), "--policy", str(policy), "--runner", "inline", "--checks", "privacy.secret"]
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "run1")])
    assert r.exit_code == 2, r.output  # c.jsonl.gz leaks a token: quarantined (moved) into the source
    moved = sorted(p.relative_to(small_corpus) for p in (small_corpus / "quarantine").rglob("c.jsonl.gz"))
    assert len(moved) == 1 and not (small_corpus / "c.jsonl.gz").exists()
    r = runner.invoke(app, [*args, "--out", str(small_corpus / "run2")])
    assert r.exit_code == 0, r.output
    shards = pl.read_parquet(small_corpus / "run2" / "shards.parquet")["shard"].to_list()
    assert sorted(shards) == ["a.jsonl", "b.parquet"]  # no quarantined copy, no cache, no own output
    assert sorted(p.relative_to(small_corpus) for p in (small_corpus / "quarantine").rglob("c.jsonl.gz")) == moved
