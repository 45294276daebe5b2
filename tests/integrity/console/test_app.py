"""integrity.console over HTTP (Starlette's test client on the real app, a real ledger and run dir)."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import polars as pl
import pytest
from starlette.testclient import TestClient

from integrity.console import BindError, add_user, check_binding, create_app, is_loopback
from integrity.ledger import Ledger

from .conftest import OPERATOR_PW, VIEWER_PW, cli


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def login(client: TestClient, name: str, password: str) -> TestClient:
    page = client.get("/login")
    r = client.post("/login", data={"name": name, "password": password, "csrf": _csrf(page.text), "next": "/"},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    return client


@pytest.fixture()
def viewer(with_users):
    return login(TestClient(create_app(with_users.state)), "vera", VIEWER_PW)


@pytest.fixture()
def operator(with_users):
    return login(TestClient(create_app(with_users.state)), "otto", OPERATOR_PW)


def test_no_users_means_read_only_loopback(tmp_path):
    client = TestClient(create_app(tmp_path))
    r = client.get("/")
    assert r.status_code == 200 and "read-only" in r.text and "holds no scan yet" in r.text
    with pytest.raises(BindError, match="no console user is configured"):
        check_binding("0.0.0.0", Ledger(tmp_path))
    check_binding("127.0.0.1", Ledger(tmp_path))
    add_user(Ledger(tmp_path), "ann", "viewer", "long-enough")
    check_binding("0.0.0.0", Ledger(tmp_path))  # users exist: allowed
    assert client.get("/", follow_redirects=False).status_code == 303  # and now a login is needed
    assert is_loopback("localhost") and is_loopback("::1") and not is_loopback("10.1.2.3")


def test_cli_refuses_a_public_address_without_users(tmp_path):
    r = cli("console", "--state-dir", str(tmp_path), "--host", "0.0.0.0", "--port", "1", check=False, timeout=60)
    assert r.returncode == 3
    assert "not a loopback address and no console user" in r.stderr and "users add" in r.stderr


def test_users_add_prints_a_token_once_and_stores_only_a_hash(tmp_path):
    r = cli("console", "users", "add", "carol", "--role", "operator", "--state-dir", str(tmp_path), timeout=60)
    token = r.stdout.strip().splitlines()[-1]
    assert len(token) >= 20
    role, stored = Ledger(tmp_path).user_hash("carol")
    assert role == "operator" and stored.startswith("$argon2id$") and token not in stored
    assert token not in (tmp_path / "ledger.sqlite").read_bytes().decode("latin-1")
    client = login(TestClient(create_app(tmp_path)), "carol", token)
    assert "carol · operator" in client.get("/").text
    with pytest.raises(ValueError, match="unknown role 'admin'"):
        add_user(Ledger(tmp_path), "dave", "admin")


def test_login_is_required_and_a_wrong_password_is_refused(with_users):
    client = TestClient(create_app(with_users.state))
    r = client.get(f"/scans/{with_users.scan_id}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    page = client.get("/login")
    r = client.post("/login", data={"name": "vera", "password": "wrong", "csrf": _csrf(page.text)})
    assert r.status_code == 401 and "Wrong name or password" in r.text
    r = client.post("/login", data={"name": "vera", "password": VIEWER_PW})  # no CSRF token
    assert r.status_code == 403
    cookie = client.cookies.get("integrity_console")
    assert cookie and "vera" not in cookie  # signed, and no user in an unauthenticated session


def test_scans_page_lists_the_scan_with_its_counts(viewer, with_users):
    html = viewer.get("/").text
    assert with_users.scan_id in html
    assert "privacy.secret 1" in html and "1 / 1 / <b>1</b> / 0" in html  # pass / warn / quarantine / unreadable
    svg = viewer.get("/charts/findings.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert "<svg" in svg.text and "privacy.secret" in svg.text


def test_scan_page_verdicts_worst_first_filters_and_inert_script(viewer, with_users):
    html = viewer.get(f"/scans/{with_users.scan_id}").text
    shards = re.findall(r'/shard\?name=([abc])\.jsonl">', html.split("Findings by check")[0])
    assert shards[:3] == ["b", "a", "c"]  # quarantine, warn, pass
    assert "<script>window.__pwned" not in html
    assert "&lt;script&gt;window.__pwned = 1;" in html
    assert "AKIAZ7Q2M4N8P3R6T1W5" not in html and "Zr8fK2pQ9vX4mN7bL1cT6yH3jW5sD0gA8eR2uI9o" not in html
    only = viewer.get(f"/scans/{with_users.scan_id}?check=privacy.pii").text
    table = only.split('class="findings"')[1].split("</table>")[0]
    assert "privacy.pii" in table and "dedup.exact" not in table and "privacy.secret" not in table
    crit = viewer.get(f"/scans/{with_users.scan_id}?severity=critical&shard=b.jsonl").text
    table = crit.split('class="findings"')[1].split("</table>")[0]
    assert "privacy.secret" in table and "privacy.pii" not in table


def test_drop_list_csv_and_parquet(viewer, with_users):
    r = viewer.get(f"/scans/{with_users.scan_id}/droplist.csv")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    df = pl.read_csv(io.BytesIO(r.content))
    assert sorted(zip(df["shard"], df["record_id"])) == [("a.jsonl", "dup2"), ("a.jsonl", "xss"), ("b.jsonl", "key")]
    r = viewer.get(f"/scans/{with_users.scan_id}/droplist.parquet?check=privacy.secret")
    df = pl.read_parquet(io.BytesIO(r.content))
    assert df.to_dicts() == [{"shard": "b.jsonl", "record_id": "key", "checks": "privacy.secret",
                              "severity": "critical"}]


def test_report_is_served_sandboxed(viewer, with_users):
    r = viewer.get(f"/scans/{with_users.scan_id}/report")
    assert r.status_code == 200 and "<html" in r.text.lower()
    assert r.headers["content-security-policy"].startswith("sandbox")


def test_shard_page_shows_history(viewer, with_users):
    html = viewer.get("/shard?name=b.jsonl").text
    assert "move →" in html and "critical privacy.secret finding" in html
    assert viewer.get("/shard?name=nope.jsonl").status_code == 404


def test_actions_need_csrf_and_the_operator_role(viewer, operator, with_users):
    ledger = Ledger(with_users.state)
    action = ledger.quarantined()[0]
    # a viewer is refused, even with a valid token
    form = viewer.get(f"/quarantine/{action.id}/release")
    assert "Only operators" in form.text
    r = viewer.post(f"/quarantine/{action.id}/release",
                    data={"csrf": _csrf(viewer.get("/").text), "reason": "looks fine", "confirm": "yes"})
    assert r.status_code == 403 and "Only operators" in r.text
    # an operator without the CSRF token is refused
    r = operator.post(f"/quarantine/{action.id}/release", data={"reason": "looks fine", "confirm": "yes"})
    assert r.status_code == 403 and "CSRF" in r.text
    # an operator with the token but no reason is asked for one
    token = _csrf(operator.get(f"/quarantine/{action.id}/release").text)
    r = operator.post(f"/quarantine/{action.id}/release", data={"csrf": token, "reason": " ", "confirm": "yes"})
    assert r.status_code == 400 and "Say why" in r.text
    assert ledger.action(action.id).resolution is None
    assert not (with_users.corpus / "b.jsonl").exists()
    log = ledger.console_actions(target="b.jsonl")
    assert [(e.who, e.outcome) for e in log[:2]] == [("otto", "refused"), ("vera", "refused")]
    assert "CSRF" in log[0].detail


def test_excerpts_of_an_old_unmasked_run_dir_are_masked(tmp_path):
    """A run dir written before excerpts were masked at write time still shows no secret."""
    from integrity.console.queries import examples, findings

    from .conftest import SECRET

    pl.DataFrame({"shard": ["b.jsonl"], "record_id": ["key"], "check": ["privacy.secret"], "severity": ["critical"],
                  "score": [0.95], "field": ["text"], "excerpt": [f"deploy with {SECRET}"],
                  "highlights": ["[[12, 50]]"]}).write_parquet(tmp_path / "examples.parquet")
    pl.DataFrame({"shard": ["b.jsonl"], "record_id": ["key"], "check": ["privacy.secret"], "severity": ["critical"],
                  "score": [0.95], "detail": [json.dumps({"match": SECRET})]}).write_parquet(tmp_path / "findings.parquet")
    ex = examples(str(tmp_path))[0]
    assert "AKIAZ7Q2M4N8P3R6T1W5" not in ex["excerpt"] and ex["excerpt"].startswith("deploy with aws_")
    assert len(ex["excerpt"]) == len(f"deploy with {SECRET}")  # highlight offsets stay valid
    assert "Zr8fK2pQ9vX4mN7bL1cT6yH3jW5sD0gA8eR2uI9o" not in findings(str(tmp_path)).rows[0]["detail"]


def test_removing_a_user_ends_their_session_and_a_public_console_never_opens_anonymously(tmp_path):
    ledger = Ledger(tmp_path)
    add_user(ledger, "erin", "operator", "erin-password")
    client = login(TestClient(create_app(tmp_path)), "erin", "erin-password")
    assert client.get("/", follow_redirects=False).status_code == 200
    assert ledger.remove_user("erin")
    # no user left: the loopback console is read-only for anyone, erin's session included
    assert "local viewer" in client.get("/").text
    # a console listening on a public address admits nobody without a user
    public = TestClient(create_app(tmp_path, loopback=False))
    assert public.get("/", follow_redirects=False).status_code == 303


def test_integrity_console_finds_the_demo_state_dir(tmp_path, monkeypatch):
    """`make demo` then `integrity console` (no --state-dir) shows the demo's ledger."""
    from flows.cli import console_state_dir

    monkeypatch.chdir(tmp_path)
    assert console_state_dir() == Path(".integrity")
    Ledger(tmp_path / ".integrity" / "demo")
    assert console_state_dir() == Path(".integrity") / "demo"
    Ledger(tmp_path / ".integrity")
    assert console_state_dir() == Path(".integrity")
