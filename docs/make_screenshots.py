"""Screenshots of the ops console for the README (headless Debian chromium via Playwright).

    .venv/bin/python docs/make_screenshots.py --state .integrity/demo [--trend-state DIR]

``--state``: a state dir with real scans (the demo's: ``make demo``) for the scan, shard and
quarantine pages; ``--trend-state``: one with many nights for the scans page and its trend charts
(e.g. ``benchmarks/console.py --scans 60 --shards 300 --state DIR``); default: ``--state``.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _console(state: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "console", "--state-dir", str(state), "--port",
                             str(port)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/login", timeout=2).close()
            return proc, url
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("the console did not start")


def _open(page, url: str, state: Path) -> None:
    """Open the console's home, signing in as a viewer ``docs`` when the state dir has users."""
    page.goto(url + "/")
    if "/login" in page.url:
        from integrity.console import add_user
        from integrity.ledger import Ledger

        add_user(Ledger(state), "docs", "viewer", "docs-screenshots")
        page.fill("input[name=name]", "docs")
        page.fill("input[name=password]", "docs-screenshots")
        page.click("main form button[type=submit]")
        page.wait_for_url(url + "/")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--state", type=Path, required=True)
    ap.add_argument("--trend-state", type=Path)
    ap.add_argument("--shard", default="web/web-0003.parquet")
    args = ap.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        proc, url = _console(args.trend_state or args.state)
        try:
            _open(page, url, args.trend_state or args.state)
            page.screenshot(path=str(DOCS / "console-scans.png"), full_page=False)
        finally:
            proc.terminate()
            proc.wait()
        proc, url = _console(args.state)
        try:
            _open(page, url, args.state)
            page.click("table.scans tbody tr a")
            page.screenshot(path=str(DOCS / "console-scan.png"), full_page=False)
            page.goto(url + "/quarantine")
            page.screenshot(path=str(DOCS / "console-quarantine.png"), full_page=False)
            page.goto(url + f"/shard?name={args.shard}")
            page.screenshot(path=str(DOCS / "console-shard.png"), full_page=False)
        finally:
            proc.terminate()
            proc.wait()
        browser.close()


if __name__ == "__main__":
    main()
