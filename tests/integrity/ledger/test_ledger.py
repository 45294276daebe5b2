"""integrity.ledger: real SQLite in tmp_path."""
from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timezone

import pytest

from integrity.ledger import (
    SCHEMA_VERSION,
    Ledger,
    LedgerError,
    ShardVerdict,
    current_user,
    findings_key,
)

SHA_A = "a" * 64
SHA_B = "b" * 64


def _utc(ts: str) -> datetime:
    dt = datetime.fromisoformat(ts)
    assert dt.tzinfo is not None and dt.utcoffset().total_seconds() == 0
    return dt


def test_creates_database_wal_and_schema(tmp_path):
    state = tmp_path / "deep" / "state"
    led = Ledger(state)
    assert (state / "ledger.sqlite").exists()
    assert led.schema_version() == SCHEMA_VERSION
    con = sqlite3.connect(state / "ledger.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"schema_version", "scans", "shard_verdicts", "quarantine_actions", "releases", "hash_memo"} <= tables
    con.close()
    # reopening neither fails nor re-applies migrations
    Ledger(state)
    con = sqlite3.connect(state / "ledger.sqlite")
    assert con.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


def test_newer_schema_is_refused(tmp_path):
    Ledger(tmp_path)
    con = sqlite3.connect(tmp_path / "ledger.sqlite")
    con.execute("INSERT INTO schema_version VALUES (?, 'x')", (SCHEMA_VERSION + 1,))
    con.commit()
    con.close()
    with pytest.raises(LedgerError, match="newer"):
        Ledger(tmp_path)


def test_scan_start_and_end(tmp_path):
    led = Ledger(tmp_path)
    sid = led.record_scan_start(source="s3://bucket/corpus/", policy="policy.yaml", policy_sha256="f" * 64,
                                run_dir=tmp_path / "run")
    s = led.scan(sid)
    assert s.source == "s3://bucket/corpus/" and s.policy == "policy.yaml" and s.run_dir == str(tmp_path / "run")
    assert s.finished_at is None and s.verdict is None
    assert s.who == current_user()
    _utc(s.started_at), _utc(s.created_at)
    led.record_scan_end(sid, verdict="quarantine", counts={"shards": 3, "quarantine": 1})
    s = led.scan(sid)
    assert s.verdict == "quarantine" and s.counts == {"shards": 3, "quarantine": 1}
    assert _utc(s.finished_at) >= _utc(s.started_at)
    assert led.record_scan_start(source="x", scan_id="fixed") == "fixed"
    assert [x.scan_id for x in led.scans()] [:2] == ["fixed", sid]
    with pytest.raises(LedgerError, match="record_scan_start"):
        led.record_scan_end("unknown", verdict="pass")
    assert led.scan("unknown") is None


def test_record_verdicts_bulk(tmp_path):
    led = Ledger(tmp_path)
    sid = led.record_scan_start(source="corpus")
    n = led.record_verdicts(sid, [
        {"shard": "a.jsonl", "uri": "/c/a.jsonl", "sha256": SHA_A, "verdict": "pass", "reasons": []},
        ShardVerdict(shard="b.jsonl", uri="/c/b.jsonl", sha256=SHA_B, verdict="quarantine",
                     reasons=("poison.trigger", "privacy.secret")),
    ])
    assert n == 2
    vs = {v.shard: v for v in led.verdicts(sid)}
    assert vs["b.jsonl"].reasons == ("poison.trigger", "privacy.secret")
    assert vs["a.jsonl"].verdict == "pass" and vs["a.jsonl"].scan_id == sid
    # re-recording replaces, does not duplicate
    led.record_verdicts(sid, [{"shard": "a.jsonl", "uri": "/c/a.jsonl", "sha256": SHA_A, "verdict": "warn"}])
    assert len(led.verdicts(sid)) == 2
    assert led.verdict(sid, "a.jsonl").verdict == "warn"
    with pytest.raises(LedgerError):
        led.record_verdicts("no-such-scan", [{"shard": "a", "uri": "a", "verdict": "pass"}])
    with pytest.raises(LedgerError, match="verdict"):
        led.record_verdicts(sid, [{"shard": "a"}])


def test_begin_action_is_idempotent_and_states(tmp_path):
    led = Ledger(tmp_path)
    kw = dict(scan_id="s1", shard="a.jsonl", uri="/c/a.jsonl", sha256=SHA_A, mode="move", destination="/q/a")
    a1, created1 = led.begin_action(**kw)
    a2, created2 = led.begin_action(**kw)
    assert created1 and not created2 and a1.id == a2.id
    assert a1.state == "pending" and a1.who == current_user()
    assert [a.id for a in led.unfinished()] == [a1.id]
    assert [a.id for a in led.quarantined()] == [a1.id]
    led.set_state(a1.id, "copied")
    led.set_state(a1.id, "verified")
    done = led.set_state(a1.id, "done")
    assert done.state == "done" and done.updated_at >= done.created_at
    assert led.unfinished() == []
    assert [a.id for a in led.quarantined()] == [a1.id]
    # a done, unreleased action is still the live one
    assert led.begin_action(**kw)[0].id == a1.id
    # failed actions do not block a new attempt
    b, _ = led.begin_action(**{**kw, "uri": "/c/b.jsonl", "shard": "b.jsonl"})
    led.set_state(b.id, "failed", error="content changed")
    assert led.action(b.id).error == "content changed"
    assert b.id not in [a.id for a in led.quarantined()]
    b2, created = led.begin_action(**{**kw, "uri": "/c/b.jsonl", "shard": "b.jsonl"})
    assert created and b2.id != b.id
    with pytest.raises(LedgerError):
        led.begin_action(**{**kw, "mode": "teleport"})
    with pytest.raises(LedgerError):
        led.action(9999)


def test_release_and_release_for(tmp_path):
    led = Ledger(tmp_path)
    a, _ = led.begin_action(scan_id="s", shard="a", uri="/c/a", sha256=SHA_A, mode="mark", destination=None)
    led.set_state(a.id, "done")
    fk = findings_key(["privacy.pii", "poison.trigger", "privacy.pii"])
    assert fk == '["poison.trigger","privacy.pii"]'
    action, rel = led.begin_resolution(a.id, resolution="released", restore=False, who="alice",
                                       reason="synthetic PII, fine", findings_key=fk)
    assert action.resolution == "released" and action.resolved_by == "alice"
    assert rel.who == "alice" and rel.reason == "synthetic PII, fine" and rel.findings_key == fk
    _utc(rel.released_at)
    assert not rel.restored
    assert led.quarantined() == []
    assert led.release_for(SHA_A).id == rel.id
    assert led.release_for(SHA_A, fk).id == rel.id
    assert led.release_for(SHA_A, findings_key(["dedup.exact"])) is None
    assert led.release_for(SHA_B) is None
    # a second begin_resolution does not duplicate the release
    _, rel2 = led.begin_resolution(a.id, resolution="released", restore=False, reason="again")
    assert rel2.id == rel.id and len(led.releases()) == 1
    with pytest.raises(LedgerError, match="reason"):
        led.release(shard="b", uri="/c/b", sha256=SHA_B, reason="  ")
    direct = led.release(shard="b", uri="/c/b", sha256=SHA_B, reason="pre-approved")
    assert direct.action_id is None and direct.who == current_user()
    assert led.release_for(SHA_B).id == direct.id
    assert [r.shard for r in led.releases("b")] == ["b"]


def test_restore_resolution_keeps_release_and_marks_restored(tmp_path):
    led = Ledger(tmp_path)
    a, _ = led.begin_action(scan_id="s", shard="a", uri="/c/a", sha256=SHA_A, mode="move", destination="/q/a")
    led.set_state(a.id, "done")
    act, rel = led.begin_resolution(a.id, resolution="released", restore=True, reason="ok")
    assert act.restore_state == "pending"
    assert [x.id for x in led.quarantined()] == [a.id]  # still quarantined until the file is back
    assert [x.id for x in led.unfinished()] == [a.id]
    done = led.finish_restore(a.id)
    assert done.restore_state == "done" and done.resolution == "released"
    assert led.release_for(SHA_A).restored
    assert led.quarantined() == [] and led.held_copies() == []


def test_hash_memo(tmp_path):
    led = Ledger(tmp_path)
    assert led.memo_sha256("/c/a", "size=1;mtime=1") is None
    led.remember_sha256("/c/a", "size=1;mtime=1", SHA_A)
    assert led.memo_sha256("/c/a", "size=1;mtime=1") == SHA_A
    assert led.memo_sha256("/c/a", "size=1;mtime=2") is None
    led.remember_sha256("/c/a", "size=1;mtime=2", SHA_B)
    assert led.memo_sha256("/c/a", "size=1;mtime=2") == SHA_B
    assert led.memo_sha256("/c/a", "size=1;mtime=1") is None
    assert Ledger(tmp_path).memo_sha256("/c/a", "size=1;mtime=2") == SHA_B  # durable


def test_history(tmp_path):
    led = Ledger(tmp_path)
    sid = led.record_scan_start(source="c")
    led.record_verdicts(sid, [{"shard": "a", "uri": "/c/a", "sha256": SHA_A, "verdict": "quarantine",
                               "reasons": ["poison.trigger"]}])
    a, _ = led.begin_action(scan_id=sid, shard="a", uri="/c/a", sha256=SHA_A, mode="mark", destination=None)
    led.set_state(a.id, "done")
    led.begin_resolution(a.id, resolution="released", restore=False, reason="false positive", who="bob")
    events = led.history("a")
    assert [e["event"] for e in events] == ["verdict", "quarantine", "release"]
    assert events[2]["who"] == "bob" and events[2]["reason"] == "false positive"
    assert [e["event"] for e in led.history("/c/a")] == ["verdict", "quarantine", "release"]
    assert led.history("other") == []


def test_lease(tmp_path):
    led = Ledger(tmp_path)
    a, _ = led.begin_action(scan_id=None, shard="a", uri="/c/a", sha256=SHA_A, mode="move", destination="/q/a")
    assert led.claim(a.id, "me") is None
    assert led.claim(a.id, "me") is None  # renew
    assert led.claim(a.id, "other-host:1:1:x") == "me"
    led.unclaim(a.id, "me")
    assert led.claim(a.id, "other-host:1:1:x") is None  # free again
    assert led.claim(a.id, "me") == "other-host:1:1:x"
    # an expired lease is taken over
    assert led.claim(a.id, "other-host:1:1:x", lease_s=-1) is None
    assert led.claim(a.id, "me") is None


def test_lease_of_dead_local_process_is_taken_over(tmp_path):
    import socket
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dead = f"{socket.gethostname()}:{p.pid}:1:dead"
    led = Ledger(tmp_path)
    a, _ = led.begin_action(scan_id=None, shard="a", uri="/c/a", sha256=SHA_A, mode="move", destination="/q/a")
    assert led.claim(a.id, dead) is None
    assert led.claim(a.id, "me") is None


def test_concurrent_writers_from_threads(tmp_path):
    led = Ledger(tmp_path)
    sid = led.record_scan_start(source="c")
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(25):
                led.record_verdicts(sid, [{"shard": f"t{t}-{i}-{j}", "uri": f"/c/t{t}-{i}-{j}", "sha256": SHA_A,
                                           "verdict": "pass"} for j in range(4)])
                led.remember_sha256(f"/c/t{t}-{i}", f"fp{i}", SHA_B)
                a, _ = led.begin_action(scan_id=sid, shard=f"t{t}-{i}", uri=f"/c/t{t}-{i}", sha256=SHA_A,
                                        mode="mark", destination=None)
                led.set_state(a.id, "done")
                led.quarantined()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert len(led.verdicts(sid)) == 4 * 25 * 4
    assert len(led.quarantined()) == 4 * 25
    assert led.memo_sha256("/c/t3-24", "fp24") == SHA_B


def test_timestamps_are_utc_now(tmp_path):
    led = Ledger(tmp_path)
    before = datetime.now(timezone.utc)
    sid = led.record_scan_start(source="c")
    started = _utc(led.scan(sid).started_at)
    assert abs((started - before).total_seconds()) < 60


def test_a_schema_1_ledger_is_migrated_in_place(tmp_path):
    """A ledger written before the console (schema 1) keeps its rows and gains the console's tables."""
    from integrity.ledger.schema import _MIGRATIONS

    con = sqlite3.connect(tmp_path / "ledger.sqlite")
    con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    for stmt in _MIGRATIONS[1]:
        con.execute(stmt)
    con.execute("INSERT INTO schema_version VALUES (1, 'then')")
    con.execute("INSERT INTO scans (scan_id, source, policy, run_dir, started_at, created_at) "
                "VALUES ('old', 'data/', 'default', 'runs/old', '2025-01-01T02:00:00.000000+00:00', 'x')")
    con.commit()
    con.close()
    led = Ledger(tmp_path)
    assert led.schema_version() == SCHEMA_VERSION
    old = led.scan("old")
    assert old.run_dir == "runs/old" and old.flow_run_id is None
    led.record_scan_start(source="data/", scan_id="new", flow_run_id="f-1")
    assert led.scan("new").flow_run_id == "f-1"
    assert led.users() == [] and led.console_actions() == []
