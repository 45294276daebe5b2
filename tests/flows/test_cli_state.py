"""State as a user meets it, through the real `integrity` command in a subprocess: per-corpus
history, commands that find the ledger the scan wrote, pasted release commands, scan that only
reports, gate that quarantines and says where to, a column mapping that fits nothing."""
from __future__ import annotations

import html
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import polars as pl

from tests.conftest import write_jsonl

PROJECT = Path(__file__).resolve().parents[2]
FAST = "dedup.exact,privacy.secret"  # no model to load: these tests are about state, not detectors


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{PROJECT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env["COLUMNS"] = "200"
    return env


def integrity(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`integrity ARGS` as a user types it (the installed console script when there is one)."""
    exe = Path(sys.executable).parent / "integrity"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "flows.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=cwd, env=cli_env(), timeout=300)


def shell(line: str, cwd: Path) -> subprocess.CompletedProcess:
    """A command line pasted into a shell, exactly as printed."""
    return subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=cwd, env=cli_env(), timeout=300)


def leaky_corpus(root: Path) -> Path:
    """Two shards in subfolders; web/web-0003.jsonl holds a leaked GitHub token."""
    write_jsonl(root / "web" / "web-0001.jsonl",
                [{"id": f"a{i}", "text": f"Page {i} is about rivers, bread and trains."} for i in range(40)])
    bad = [{"id": f"b{i}", "text": f"Notes {i}: nothing to see."} for i in range(40)]
    bad[7]["text"] = "token ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8" + " was committed by mistake"
    write_jsonl(root / "web" / "web-0003.jsonl", bad)
    return root


def test_scan_reports_gate_quarantines_and_the_printed_release_works(tmp_path: Path):
    corpus = leaky_corpus(tmp_path / "corpus")
    shard = corpus / "web" / "web-0003.jsonl"
    state = tmp_path / "state"
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"state_dir: {state}\n")

    r = integrity("scan", str(corpus), "--out", str(tmp_path / "s"), "--policy", str(policy), "--checks", FAST,
                  "--runner", "inline")
    assert r.returncode == 0, r.stderr
    assert shard.exists(), "scan must not move data unless asked"
    assert "web/web-0003.jsonl" in r.stdout and "not moved" in r.stdout
    assert "quarantine release" not in r.stdout  # nothing to release: nothing was moved
    assert "quarantine release" not in (tmp_path / "s" / "report.html").read_text().split("For the shards")[-1]

    r = integrity("gate", str(corpus), "--out", str(tmp_path / "g"), "--policy", str(policy), "--checks", FAST,
                  "--runner", "inline")
    assert r.returncode == 2, r.stdout + r.stderr
    gate_out = r.stdout
    assert not shard.exists()
    moved = re.search(r"quarantined web/web-0003\.jsonl: move done → (\S+)", r.stdout)
    assert moved, r.stdout
    assert Path(moved.group(1)).is_file()  # the destination printed is where the shard is
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert summary["state_dir"] == str(state) and summary["corpus"]

    # every command finds the ledger the scan wrote, from another directory
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for how in (["--policy", str(policy)], ["--run", str(tmp_path / "g")]):
        r = integrity("quarantine", "list", *how, cwd=elsewhere)
        assert r.returncode == 0 and "web/web-0003.jsonl" in r.stdout and summary["corpus"] in r.stdout, r.stdout
    r = integrity("quarantine", "list", cwd=elsewhere)  # the default state dir was not used: say how to find it
    assert r.returncode == 3 and "--policy" in r.stderr and "--run" in r.stderr

    # the release command the CLI printed works when pasted, from anywhere; the report shows the same
    printed = [ln.strip() for ln in gate_out.splitlines() if ln.strip().startswith("integrity quarantine release")]
    assert len(printed) == 1 and "--state-dir" in printed[0], gate_out
    report = html.unescape((tmp_path / "g" / "report.html").read_text())
    assert printed[0] in report
    r = shell(printed[0], cwd=elsewhere)
    assert r.returncode == 0, r.stdout + r.stderr
    assert shard.exists()
    from integrity.ledger import Ledger
    assert Ledger(state).quarantined() == []


def printed_release_commands(run_dir: Path) -> list[str]:
    summary = json.loads((run_dir / "summary.json").read_text())
    shards = pl.read_parquet(run_dir / "shards.parquet").filter(pl.col("verdict") == "quarantine")
    from integrity.ledger import release_command
    return [release_command(s, summary["state_dir"], summary["corpus"]) for s in shards["shard"]]


def test_release_by_file_name_in_the_default_state_dir(tmp_path: Path, monkeypatch):
    """README: `integrity quarantine release web-0003.parquet --reason ...` with the shard at web/
    and the default state directory (the CLI in-process, run from the user's directory)."""
    from typer.testing import CliRunner

    from flows.cli import app

    corpus = leaky_corpus(tmp_path / "corpus")
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["gate", "corpus", "--out", "g", "--checks", FAST, "--runner", "inline"])
    assert r.exit_code == 2, r.output
    assert (tmp_path / ".integrity" / "ledger.sqlite").exists()
    r = CliRunner().invoke(app, ["quarantine", "release", "web-0003.jsonl", "--reason", "key was revoked"])
    assert r.exit_code == 0, r.output
    assert (corpus / "web" / "web-0003.jsonl").exists() and "web/web-0003.jsonl" in r.output


def test_corpora_keep_their_own_history_unless_asked(tmp_path: Path, monkeypatch):
    """A slice of another corpus's records is not a duplicate of that corpus unless the
    user names the same corpus or asks for the shared history. (The CLI in-process: seven scans.)"""
    from typer.testing import CliRunner

    from flows.cli import app

    state = tmp_path / "state"
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"state_dir: {state}\n")
    big = [{"id": f"r{i}", "text": f"Record {i} describes a quiet harbour town and its ferries."} for i in range(300)]
    write_jsonl(tmp_path / "data" / "big" / "part-0.jsonl", big)
    write_jsonl(tmp_path / "data" / "slice.jsonl", [{**r, "id": f"s{i}"} for i, r in enumerate(big[:60])])

    def exact(source: str, out: str, *extra: str) -> tuple[int, str]:
        r = CliRunner().invoke(app, ["scan", source, "--out", str(tmp_path / out), "--policy", str(policy),
                                     "--checks", "dedup.exact", "--runner", "inline", *extra])
        assert r.exit_code == 0, r.output
        f = pl.read_parquet(tmp_path / out / "findings.parquet")
        corpus = json.loads((tmp_path / out / "summary.json").read_text())["corpus"]
        return f.filter(pl.col("check") == "dedup.exact").height, corpus

    assert exact(str(tmp_path / "data" / "big"), "a")[0] == 0
    n, b_name = exact(str(tmp_path / "data" / "slice.jsonl"), "b")
    a_name = json.loads((tmp_path / "a" / "summary.json").read_text())["corpus"]
    assert n == 0 and a_name != b_name  # another corpus: its records are not this one's history
    # the default name is stable: the same source given relative to another working directory
    monkeypatch.chdir(tmp_path / "data")
    assert exact("big/", "a2") == (0, a_name)
    # asked for: the same corpus name, or the history shared by corpora scanned with --shared-history
    assert exact(str(tmp_path / "data" / "slice.jsonl"), "c", "--corpus", a_name)[0] == 60
    assert exact(str(tmp_path / "data" / "big"), "d", "--shared-history")[0] == 0
    assert exact(str(tmp_path / "data" / "slice.jsonl"), "e", "--shared-history")[0] == 60


def test_column_mapping_that_fits_no_shard_could_not_run(tmp_path: Path):
    src = tmp_path / "src"
    write_jsonl(src / "a.jsonl", [{"id": "1", "text": "hello there"}])
    write_jsonl(src / "b.jsonl", [{"id": "2", "text": "general kenobi"}])
    r = integrity("gate", str(src), "--out", str(tmp_path / "r"), "--text-column", "body", "--checks", FAST,
                  "--runner", "inline", cwd=tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "'body'" in r.stderr and "'text'" in r.stderr and "'id'" in r.stderr
    assert "matches none of the 2 shard(s)" in r.stderr
    # one shard lacking the column is that shard's problem: the gate runs and fails it
    from typer.testing import CliRunner

    from flows.cli import app

    write_jsonl(src / "c.jsonl", [{"id": "3", "body": "fits"}])
    r = CliRunner().invoke(app, ["gate", str(src), "--out", str(tmp_path / "r2"), "--text-column", "body",
                                 "--checks", FAST, "--runner", "inline", "--policy", str(policy_in(tmp_path))])
    assert r.exit_code == 2, r.output
    assert "unreadable" in r.output and "a.jsonl" in r.output


def policy_in(tmp_path: Path) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(f"state_dir: {tmp_path / 'state'}\n")
    return p


def test_quarantine_commands_without_shell_quoting_surprises(tmp_path: Path):
    """The printed command survives shlex: a shard name with a space is quoted."""
    from integrity.ledger import release_command

    cmd = release_command("web/my shard.jsonl", tmp_path / "st ate", "c-1")
    assert shlex.split(cmd)[3] == "web/my shard.jsonl"
    assert shlex.split(cmd)[shlex.split(cmd).index("--state-dir") + 1] == str(tmp_path / "st ate")
