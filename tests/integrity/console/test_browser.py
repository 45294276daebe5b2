"""The console in a real headless Chromium (Debian's ``chromium``, driven by Playwright; no downloaded browser)
against a real ``integrity console`` process serving a real gate run."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import polars as pl
import pytest

from integrity.ledger import Ledger

from .conftest import OPERATOR_PW, VIEWER_PW

CHROMIUM = os.environ.get("INTEGRITY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# skipped on a developer machine without chromium; in CI (CI=true, where `make test` installs it) a missing
# browser fails the run instead of skipping it
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                                reason="Debian's chromium is not installed (make test installs it)")
DOCS = Path(__file__).resolve().parents[3] / "docs"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def _login(browser, url: str, name: str, password: str):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = ctx.new_page()
    page.goto(url + "/")
    assert "/login" in page.url  # users exist: a login is required
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("main form button[type=submit]")
    page.wait_for_url(url + "/")
    return ctx, page


def _shot(page, name: str) -> None:
    """Refresh the README's screenshots when asked (INTEGRITY_SCREENSHOTS=1)."""
    if os.environ.get("INTEGRITY_SCREENSHOTS"):
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS / f"console-{name}.png"), full_page=True)


def test_viewer_browses_filters_downloads_and_cannot_release(browser, console_url, with_users, tmp_path):
    ctx, page = _login(browser, console_url, "vera", VIEWER_PW)
    try:
        assert page.locator("header .who").inner_text().startswith("vera · viewer")
        _shot(page, "scans")
        page.click(f"a[href='/scans/{with_users.scan_id}']")
        # the <script> record is shown as text and never runs
        assert page.locator("pre.excerpt", has_text="<script>window.__pwned").count() == 1
        assert page.evaluate("window.__pwned") is None and page.title() != "pwned"
        assert page.locator("mark").count() >= 1  # evidence highlighted
        # filter findings by check
        page.select_option("select[name=check]", "privacy.pii")
        page.click("form.filters button[type=submit]")
        rows = page.locator("table.findings tbody tr")
        assert rows.count() == 1 and "privacy.pii" in rows.first.inner_text()
        _shot(page, "scan")
        # download the drop list for that filter
        with page.expect_download() as dl:
            page.click("p.downloads a:text('CSV')")
        path = tmp_path / "drop.csv"
        dl.value.save_as(path)
        assert pl.read_csv(path).to_dicts() == [{"shard": "a.jsonl", "record_id": "xss", "checks": "privacy.pii",
                                                 "severity": "warn"}]
        # the scan's report, served sandboxed: matplotlib charts, compact, the release how-to present
        page.goto(f"{console_url}/scans/{with_users.scan_id}/report")
        assert page.locator("svg.chart").count() >= 3
        assert page.evaluate("document.documentElement.scrollHeight") < 5000
        assert page.locator("#release h2").inner_text() == "Releasing a quarantined shard"
        # a viewer sees no release button, and a forged release is refused
        page.goto(console_url + "/quarantine")
        assert page.locator("a:text('Release…')").count() == 0
        action = Ledger(with_users.state).quarantined()[0]
        token = page.locator("input[name=csrf]").first.get_attribute("value")
        resp = page.request.post(f"{console_url}/quarantine/{action.id}/release",
                                 form={"csrf": token, "reason": "viewer tries", "confirm": "yes"})
        assert resp.status == 403 and "Only operators" in resp.text()
        assert not (with_users.corpus / "b.jsonl").exists()
    finally:
        ctx.close()


def test_operator_releases_a_quarantined_shard(browser, console_url, with_users):
    ctx, page = _login(browser, console_url, "otto", OPERATOR_PW)
    ledger = Ledger(with_users.state)
    action = ledger.quarantined()[0]
    try:
        # a POST without the CSRF token is refused, even for an operator
        resp = page.request.post(f"{console_url}/quarantine/{action.id}/release",
                                 form={"reason": "no token", "confirm": "yes"})
        assert resp.status == 403 and "CSRF" in resp.text()
        assert not (with_users.corpus / "b.jsonl").exists()

        page.goto(console_url + "/quarantine")
        _shot(page, "quarantine")
        page.click(f"a[href='/quarantine/{action.id}/release']")
        page.fill("textarea[name=reason]", "the key is a revoked test fixture")
        page.check("input[name=confirm]")
        page.click("main form button[type=submit]")
        page.wait_for_url(lambda u: u.startswith(f"{console_url}/quarantine?done="))
        assert "file put back" in page.locator("p.ok").inner_text()
        # on disk: the file is back, byte for byte what was scanned
        assert (with_users.corpus / "b.jsonl").exists()
        # in the ledger: the release with who and why, and the console's audit entry
        rel = ledger.release_of_action(action.id)
        assert rel.who == "otto" and rel.reason == "the key is a revoked test fixture" and rel.restored
        assert ledger.action(action.id).restore_state == "done"
        done = ledger.console_actions(target="b.jsonl")[0]
        assert (done.who, done.action, done.outcome) == ("otto", "release", "done")
        assert "Nothing is quarantined" in page.locator("table.queue").inner_text()
        page.goto(console_url + "/shard?name=b.jsonl")
        assert "the key is a revoked test fixture" in page.content()
        _shot(page, "shard")
    finally:
        ctx.close()
