"""``integrity serve``: the embedded default. One command runs Prefect's own
SQLite-backed server (unless PREFECT_API_URL already points at one) and serves
the scheduled scan on a cron schedule, with no work pool."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

from flows.env import prefect_defaults


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_server(port: int | None = None, timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """Start ``prefect server start`` on loopback and wait until it answers."""
    port = port or int(os.environ.get("INTEGRITY_PREFECT_PORT", "4200"))
    api = f"http://127.0.0.1:{port}/api"
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {proc.returncode}; is port {port} free? "
                               "Set INTEGRITY_PREFECT_PORT or PREFECT_API_URL.")
        try:
            with urllib.request.urlopen(api + "/health", timeout=2):
                return proc, api
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"the Prefect server did not answer on {api} within {timeout:.0f}s")


def serve_scheduled(source: str, cron: str, out_root: str, policy: str | None, columns: dict[str, str],
                    checks: str | None, name: str = "nightly", image_root: str | None = None) -> None:
    """Serve the scheduled scan until interrupted."""
    prefect_defaults()
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        server, api = start_local_server()
        os.environ["PREFECT_API_URL"] = api
        print(f"Prefect server and UI on {api.removesuffix('/api')}", flush=True)
    try:
        from flows.build import build_spec
        from flows.scheduled import scheduled_scan

        build_spec(source, policy=policy, columns=columns, checks=checks,
                   image_root=image_root)  # fail now, not at 2 a.m.
        scheduled_scan.serve(
            name=name, cron=cron,
            parameters={"source": source, "out_root": out_root, "policy": policy, "columns": columns,
                        "checks": checks, "image_root": image_root},
            tags=["integrity"], description=f"integrity scan of {source} on '{cron}'",
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
