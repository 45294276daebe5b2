"""A full disk (issue 13, defect 14): partial outputs are removed and the error names the file.

Where the test may mount (root with CAP_SYS_ADMIN), a real, tiny tmpfs fills up under
the CLI in a subprocess; everywhere, the same paths are driven by a write that fails
with ENOSPC half-way (fault injection at the write call).
"""
from __future__ import annotations

import errno
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from connectors import storage
from connectors.storage import StorageError
from integrity.engine import outputs
from integrity.engine.outputs import OutputError

PROJECT = Path(__file__).resolve().parents[2]
AWS = "AKIAQ7RZ4TXW2MPLK9VB"


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """``make(name, size)`` mounts a tmpfs of ``size`` at ``tmp_path/name`` (skips where mounting is not allowed)."""
    mounted: list[Path] = []

    def make(name: str, size: str) -> Path:
        where = tmp_path / name
        where.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
        if r.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root); the fault-injection tests cover the same paths")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _corpus(root: Path, n: int = 5000) -> Path:
    root.mkdir()
    rng = random.Random(1)
    with open(root / "big.jsonl", "w") as f:
        for i in range(n):
            words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "omega"]) for _ in range(30))
            f.write(json.dumps({"id": i, "text": f"write to user{i}@example.org, {words}"
                                + (f" key {AWS}" if i == 5 else "")}) + "\n")
    return root


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(PROJECT)})


def test_quarantine_onto_a_full_disk_leaves_no_partial(tmp_path: Path, tiny_disk):
    qdir = tiny_disk("q", "256k")
    src = _corpus(tmp_path / "src")
    original = (src / "big.jsonl").read_bytes()
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"state_dir: {tmp_path / 'state'}\nquarantine:\n  dir: {qdir}\n")
    r = _cli("scan", str(src), "--out", str(tmp_path / "run"), "--policy", str(policy), "--runner", "inline",
             "--checks", "privacy.secret", "--quarantine-mode", "move")
    assert r.returncode == 0, r.stdout + r.stderr
    shards = pq.read_table(tmp_path / "run" / "shards.parquet").to_pylist()
    status = shards[0]["quarantine"]
    assert status.startswith("failed") and "no space left" in status and str(qdir) in status, status
    assert not [p for p in qdir.rglob("*") if p.is_file()]  # no .partial filling the disk
    assert (src / "big.jsonl").read_bytes() == original
    r = _cli("quarantine", "resume", "--state-dir", str(tmp_path / "state"))
    assert r.returncode == 1 and "no space left" in r.stderr, r.stdout + r.stderr
    assert not [p for p in qdir.rglob("*") if p.is_file()]


def test_run_dir_on_a_full_disk_names_the_file_and_leaves_no_truncated_output(tmp_path: Path, tiny_disk):
    run = tiny_disk("run", "24k")
    src = _corpus(tmp_path / "src", n=3000)
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"state_dir: {tmp_path / 'state'}\n")
    r = _cli("scan", str(src), "--out", str(run / "r"), "--policy", str(policy), "--runner", "inline",
             "--checks", "privacy.pii,privacy.secret", "--quarantine-mode", "mark")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "no space left" in r.stderr, r.stderr
    named = r.stderr.split("error:")[1].split(":")[0].strip()
    assert named.startswith(str(run / "r")), r.stderr
    for p in run.rglob("*"):
        if p.is_file():
            assert not p.name.endswith(".tmp"), p
            if p.suffix == ".parquet":
                pq.read_table(p)  # complete, not truncated


# --------------------------------------------------------------------------- fault injection


def _enospc_half_way(real):
    def write(self, data):
        real(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return write


def test_quarantine_copy_failing_with_enospc(tmp_path: Path, monkeypatch):
    src = tmp_path / "a.jsonl"
    src.write_bytes(b'{"id": 1, "text": "x"}\n' * 50_000)
    dest = tmp_path / "q" / "a.jsonl"

    def pump(fin, fout):
        fout.write(fin.read(4096))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(storage, "_pump", pump)
    with pytest.raises(StorageError, match="no space left") as e:
        storage.copy(src, dest)
    assert str(dest) in str(e.value)
    assert not dest.exists() and not Path(str(dest) + storage.PARTIAL_SUFFIX).exists()
    assert src.stat().st_size == 23 * 50_000


def test_output_write_failing_with_enospc(tmp_path: Path, monkeypatch):
    path = tmp_path / "examples.parquet"

    def write_parquet(self, file, *a, **kw):
        Path(file).write_bytes(b"PAR1" + b"\0" * 100)  # a truncated file on disk, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pl.DataFrame, "write_parquet", write_parquet)
    with pytest.raises(OutputError) as e:
        outputs.write_parquet(pl.DataFrame({"a": [1]}), path)
    assert str(path) in str(e.value) and "no space left" in str(e.value)
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary file remains
    with pytest.raises(OutputError, match="summary.json"):
        monkeypatch.setattr(Path, "write_text", _enospc_half_way(Path.write_text))
        outputs.write_json(tmp_path / "summary.json", {"x": "y" * 1000})
    assert list(tmp_path.iterdir()) == []
