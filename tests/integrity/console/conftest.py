"""Console fixtures: one real ``integrity gate`` run (CLI subprocess) on a small corpus that quarantines a
shard holding a secret and has a record whose text is a ``<script>`` element; console users; a real
``integrity console`` server on a free port."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[3]
SCRIPT = "<script>window.__pwned = 1; document.title = 'pwned'</script>"
SECRET = "aws_access_key_id=AKIAZ7Q2M4N8P3R6T1W5 aws_secret_access_key=Zr8fK2pQ9vX4mN7bL1cT6yH3jW5sD0gA8eR2uI9o"
VIEWER_PW = "viewer-password-1"
OPERATOR_PW = "operator-password-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, check: bool = True, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run the ``integrity`` command line the way a user does (a subprocess)."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    r = subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env,
                       cwd=PROJECT, timeout=timeout, **kw)
    if check and r.returncode not in (0, 1, 2):
        raise AssertionError(f"integrity {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


@dataclass
class ScannedState:
    root: Path
    corpus: Path
    state: Path
    run: Path
    scan_id: str
    quarantined_shard: str = "b.jsonl"


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="session")
def scanned(tmp_path_factory) -> ScannedState:
    """A corpus of three JSONL shards gated once: b.jsonl (an AWS key) is quarantined (moved)."""
    root = tmp_path_factory.mktemp("console")
    corpus = root / "corpus"
    corpus.mkdir()
    _write(corpus / "a.jsonl", [{"id": f"a{i}", "text": f"ordinary sentence number {i} about the weather"}
                                for i in range(40)]
           + [{"id": "xss", "text": f"{SCRIPT} mail me at john.doe@example.com or +1 415 555 0199"},
              {"id": "dup1", "text": "the same text twice"}, {"id": "dup2", "text": "the same text twice"}])
    _write(corpus / "b.jsonl", [{"id": f"b{i}", "text": f"another shard line {i}"} for i in range(20)]
           + [{"id": "key", "text": f"deploy with {SECRET}"}])
    _write(corpus / "c.jsonl", [{"id": f"c{i}", "text": f"clean line {i}"} for i in range(20)])
    state = root / "state"
    policy = root / "policy.yaml"
    policy.write_text(f"state_dir: {state}\nquarantine:\n  mode: move\n")
    run = root / "run"
    r = cli("gate", str(corpus), "--out", str(run), "--policy", str(policy), "--runner", "inline",
            "--checks", "dedup.exact,privacy.secret,privacy.pii")
    assert r.returncode == 2, r.stdout + r.stderr  # something was quarantined
    assert not (corpus / "b.jsonl").exists()
    scan_id = json.loads((run / "summary.json").read_text())["scan_id"]
    return ScannedState(root=root, corpus=corpus, state=state, run=run, scan_id=scan_id)


@pytest.fixture(scope="session")
def with_users(scanned: ScannedState) -> ScannedState:
    """The scanned state with a viewer (``vera``) and an operator (``otto``)."""
    from integrity.console import add_user
    from integrity.ledger import Ledger

    ledger = Ledger(scanned.state)
    add_user(ledger, "vera", "viewer", VIEWER_PW)
    add_user(ledger, "otto", "operator", OPERATOR_PW)
    return scanned


@pytest.fixture(scope="session")
def console_url(with_users: ScannedState):
    """``integrity console`` serving the scanned state on a free loopback port (a real uvicorn process)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "console", "--state-dir", str(with_users.state),
                             "--port", str(port)], cwd=PROJECT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"integrity console exited {proc.returncode}: {proc.stdout.read()}")
            try:
                urllib.request.urlopen(url + "/login", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
