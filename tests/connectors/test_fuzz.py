"""Fuzz suite (hypothesis): hostile shards, images and policies never crash, hang or blow memory.

Each run is a child process (see ``fuzz_targets.py``) capped at 3 GiB of
address space, so a segfault or an abort fails this test with the input that
did it instead of killing the test run. ``make test`` runs a short,
derandomized pass; ``make test-all`` a long random one.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PEAK_MIB = 1024  # what reading any of these small inputs may cost, imports included


def _fuzz(tmp_path: Path, *args: str, timeout: int) -> None:
    last = tmp_path / "last_input.bin"
    r = subprocess.run([sys.executable, "-m", "tests.connectors.fuzz_targets", "--last", str(last), *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    tail = (r.stdout + r.stderr)[-4000:]
    assert r.returncode == 0, f"fuzz target failed (rc {r.returncode}); last input: {last}\n{tail}"
    peak = int(r.stdout.rsplit("peak RSS ", 1)[1].split()[0])
    assert peak < PEAK_MIB, f"peak RSS {peak} MiB"


def test_fuzz_short(tmp_path: Path):
    _fuzz(tmp_path, "--examples", "25", timeout=300)


@pytest.mark.slow
def test_fuzz_long(tmp_path: Path):
    _fuzz(tmp_path, "--examples", "3000", "--random", timeout=3000)
