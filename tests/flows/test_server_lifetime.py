"""A temporary Prefect server never outlives the scan that started it (issue 13, defect 11)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows import server as srv

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table in /proc")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def _descendants(pid: int) -> set[int]:
    tree, out, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _gone(pids: set[int], timeout: float) -> set[int]:
    """The pids still alive (zombies count as gone) after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = {p for p in pids if Path(f"/proc/{p}").exists()
                 and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"}
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.3)


def test_kill_9_of_a_scan_leaves_no_prefect_server(small_corpus, tmp_path: Path, state_policy):
    """`integrity scan --runner dask` with no Prefect server configured starts a temporary one;
    kill -9 of the scan takes it down too."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home), PYTHONPATH=str(ROOT),
               PREFECT_SERVER_API_PORT=str(srv.free_port()))  # nothing answers at the profile's address
    scan = subprocess.Popen([sys.executable, "-m", "flows.cli", "scan", str(small_corpus), "--runner", "dask",
                             "--workers", "1", "--out", str(tmp_path / "run"), "--policy", str(state_policy)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        servers: set[int] = set()
        while not servers and time.monotonic() < deadline and scan.poll() is None:
            servers = {p for p in _descendants(scan.pid) if srv._is_prefect_server(p)}
            time.sleep(0.3)
        assert servers, "the scan started no Prefect server"
        started = _descendants(scan.pid)
        os.kill(scan.pid, signal.SIGKILL)
        scan.wait()
        assert not _gone(servers, timeout=20), "the Prefect server outlived the scan"
        assert not _gone(started, timeout=30), "a process started by the scan outlived it"
    finally:
        if scan.poll() is None:
            scan.kill()


def test_orphaned_server_is_reaped_on_next_start(tmp_path: Path, monkeypatch):
    """Where the kernel cannot tie the server to its owner, the pid file left behind lets the
    next start stop it."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    # a stand-in whose command line reads like a Prefect server, owned by a process that is gone
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "prefect", "server", "start"])
    owner = subprocess.Popen([sys.executable, "-c", "pass"])
    owner.wait()
    try:
        pid_dir = tmp_path / "integrity-servers"
        pid_dir.mkdir()
        (pid_dir / f"{server.pid}.pid").write_text(f"{server.pid} {owner.pid}\n")
        (pid_dir / "1.pid").write_text(f"1 {os.getpid()}\n")  # owner alive: left alone
        assert srv.reap_orphans() == [server.pid]
        assert server.wait(timeout=10) == -signal.SIGTERM
        assert not (pid_dir / f"{server.pid}.pid").exists() and (pid_dir / "1.pid").exists()
    finally:
        if server.poll() is None:
            server.kill()
