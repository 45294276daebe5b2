"""Finding a Prefect server, and starting a temporary one whose life is tied to ours.

A scan uses Prefect only when a server is configured (``PREFECT_API_URL``, from the
environment or the Prefect profile) or already answering at the local default address;
otherwise the engine runs without Prefect rather than paying for a server start per scan.

A server this process starts (``integrity serve``, the Dask runner) must not outlive it,
even after ``kill -9`` or a segfault: on Linux the kernel sends it SIGTERM when we die
(``PR_SET_PDEATHSIG``), and everywhere a pid file lets the next start reap a server whose
owner is gone.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(api_url: str, timeout: float = 0.5) -> bool:
    """Whether a Prefect API answers its health check at ``api_url``."""
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=timeout) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


def _profile_setting(key: str) -> str | None:
    """A setting of the active Prefect profile (``PREFECT_HOME/profiles.toml``), read without
    importing Prefect: its import alone costs seconds, too much for a gate that needs no server."""
    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or data.get("active") or "ephemeral"
    value = data.get("profiles", {}).get(active, {}).get(key)
    return str(value) if value not in (None, "") else None


def configured_api_url() -> str | None:
    """``PREFECT_API_URL`` from the environment or the active Prefect profile, if any; once
    Prefect is imported, from its settings (which a settings context may override)."""
    if "prefect.settings" in sys.modules:
        from prefect.settings import PREFECT_API_URL

        return PREFECT_API_URL.value() or None
    return os.environ.get("PREFECT_API_URL") or _profile_setting("PREFECT_API_URL")


def local_api_url() -> str:
    """Where ``prefect server start`` listens by default (the profile's server host and port)."""
    host = os.environ.get("PREFECT_SERVER_API_HOST") or _profile_setting("PREFECT_SERVER_API_HOST") or "127.0.0.1"
    port = os.environ.get("PREFECT_SERVER_API_PORT") or _profile_setting("PREFECT_SERVER_API_PORT") or "4200"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{port}/api"


def find_api_url() -> str | None:
    """The Prefect API a scan should report to: the configured one, else a local server
    that answers at the default address, else None (no server: run without Prefect)."""
    url = configured_api_url()
    if url:
        return url
    url = local_api_url()
    return url if answers(url) else None


def require_answering(api_url: str) -> str:
    """``api_url`` if a Prefect API answers there; else a RuntimeError that says what to do."""
    if not answers(api_url, timeout=5):
        raise RuntimeError(f"no Prefect server answers at {api_url} (PREFECT_API_URL): start it, or unset "
                           "PREFECT_API_URL to scan without Prefect")
    return api_url


def _die_with_parent() -> None:
    """In the child, before exec: ask the kernel for SIGTERM when the parent dies (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the pid file reaps it on the next start
        pass


def _pid_dir() -> Path:
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect")
    return home / "integrity-servers"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_prefect_server(pid: int) -> bool:
    """Only a process whose command line is a Prefect server may be reaped (pids get reused)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"prefect" in b" ".join(cmd) and b"server" in cmd and b"start" in cmd


def reap_orphans() -> list[int]:
    """Stop temporary servers whose owning process is gone; returns their pids."""
    reaped = []
    d = _pid_dir()
    for f in d.glob("*.pid") if d.is_dir() else []:
        try:
            server, owner = (int(x) for x in f.read_text().split())
        except ValueError:
            f.unlink(missing_ok=True)
            continue
        if _alive(owner):
            continue
        if _alive(server) and _is_prefect_server(server):
            os.kill(server, signal.SIGTERM)
            reaped.append(server)
        f.unlink(missing_ok=True)
    return reaped


class LocalServer:
    """A ``prefect server start`` child on loopback; stop it with :meth:`stop` (or ``with``)."""

    def __init__(self, proc: subprocess.Popen, api_url: str, pid_file: Path):
        self.proc, self.api_url, self.pid_file = proc, api_url, pid_file

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.pid_file.unlink(missing_ok=True)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_local_server(port: int | None = None, timeout: float = 120) -> LocalServer:
    """Start ``prefect server start`` on loopback, tied to this process, and wait until it answers."""
    reap_orphans()
    port = port or int(os.environ.get("INTEGRITY_PREFECT_PORT", "4200"))
    api = f"http://127.0.0.1:{port}/api"
    popen_kw = {"preexec_fn": _die_with_parent} if sys.platform.startswith("linux") else {}
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            **popen_kw)
    pid_file = _pid_dir() / f"{proc.pid}.pid"
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{proc.pid} {os.getpid()}\n")
    server = LocalServer(proc, api, pid_file)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pid_file.unlink(missing_ok=True)
            raise RuntimeError(f"the Prefect server exited with code {proc.returncode}; is port {port} free? "
                               "Set INTEGRITY_PREFECT_PORT or PREFECT_API_URL.")
        if answers(api, timeout=2):
            return server
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"the Prefect server did not answer on {api} within {timeout:.0f}s")
