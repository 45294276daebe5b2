"""Running the console with uvicorn: in the foreground (``integrity console``) or beside another
service in a background thread (``integrity serve``)."""
from __future__ import annotations

import os
import threading
import time

import uvicorn

from integrity.console.app import create_app
from integrity.console.auth import BindError, check_binding, is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def _server(state_dir: str | os.PathLike, host: str, port: int, prefect_ui: str | None) -> uvicorn.Server:
    app = create_app(state_dir, prefect_ui=prefect_ui, loopback=is_loopback(host))
    check_binding(host, app.state.console.ledger)  # raises BindError before anything listens
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            server_header=False, proxy_headers=False)
    return uvicorn.Server(config)


def serve(state_dir: str | os.PathLike, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          prefect_ui: str | None = None) -> None:
    """Serve the console until interrupted (refuses a non-loopback host while no user exists; raises
    :class:`BindError` when the address cannot be listened on)."""
    server = _server(state_dir, host, port, prefect_ui)
    try:
        server.run()
    except SystemExit as e:  # uvicorn exits when it cannot bind
        if not server.started:
            raise BindError(f"cannot listen on {host}:{port} (is the port in use? choose another with --port)") from e
        raise


def serve_in_background(state_dir: str | os.PathLike, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                        prefect_ui: str | None = None, timeout: float = 30) -> uvicorn.Server:
    """Start the console in a daemon thread and wait until it listens; stop it with ``server.should_exit = True``."""
    server = _server(state_dir, host, port, prefect_ui)
    thread = threading.Thread(target=server.run, name="integrity-console", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the console did not start on {host}:{port}; is the port free? (--console-port)")
        time.sleep(0.05)
    return server
