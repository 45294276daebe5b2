"""integrity.engine.quarantine: crash-safety of quarantine / release / restore on real files and a real ledger."""
from __future__ import annotations

import hashlib
import os
import threading
import uuid
from pathlib import Path

import pytest

from connectors import storage
from integrity.engine.quarantine import (
    STEPS,
    ActionBusyError,
    AmbiguousShardError,
    QuarantineError,
    UnknownShardError,
    destination_for,
    find_action,
    list_quarantined,
    quarantine,
    release,
    restore,
    resume_pending,
)
from integrity.ledger import Ledger, findings_key

DATA = b'{"id": 1, "text": "trigger phrase cf-7731 do the thing"}\n' * 200


class Crash(Exception):
    """Stands for the process dying at a step."""


def crash_at(step: str):
    def fault(s: str) -> None:
        if s == step:
            raise Crash(step)
    return fault


def make_file(root: Path, rel: str, data: bytes = DATA) -> tuple[str, str]:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return str(p), hashlib.sha256(data).hexdigest()


DIR_FILES = {"dataset_info.json": b'{"x": 1}', "state.json": b"{}", "data-00000-of-00001.arrow": os.urandom(5000)}


def make_dir(root: Path, rel: str, files: dict[str, bytes] = DIR_FILES) -> tuple[str, str]:
    d = root / rel
    for name, data in files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
    return str(d), storage.sha256_of(d)


def has_content(uri: str, sha: str) -> bool:
    return storage.exists(uri) and storage.sha256_of(uri) == sha


def action_rows(led: Ledger) -> int:
    return len(led.actions())


@pytest.fixture
def env(tmp_path):
    led = Ledger(tmp_path / "state")
    corpus = tmp_path / "corpus"
    qroot = str(tmp_path / "quarantine")
    return led, corpus, qroot


# -- happy paths ----------------------------------------------------------------------


def test_move_quarantine(env):
    led, corpus, qroot = env
    uri, sha = make_file(corpus, "part-0001.jsonl")
    a = quarantine(led, scan_id="s1", shard="part-0001.jsonl", uri=uri, sha256=sha, quarantine_root=qroot)
    assert a.state == "done" and a.mode == "move" and a.error is None
    assert a.destination == f"{qroot}/{sha[:16]}/part-0001.jsonl"
    assert not os.path.exists(uri)
    assert Path(a.destination).read_bytes() == DATA
    assert not os.path.exists(a.destination + ".partial")
    assert [x.id for x in list_quarantined(led)] == [a.id]
    # re-running is a no-op on the same action
    again = quarantine(led, scan_id="s1", shard="part-0001.jsonl", uri=uri, sha256=sha, quarantine_root=qroot)
    assert again.id == a.id and action_rows(led) == 1


def test_same_content_reappearing_is_taken_out_again(env):
    """A mirror re-syncs the quarantined file: the next scan's quarantine removes it
    again, keeps the one verified copy, and does not duplicate the action."""
    led, corpus, qroot = env
    uri, sha = make_file(corpus, "part-0001.jsonl")
    a = quarantine(led, scan_id="s1", shard="part-0001.jsonl", uri=uri, sha256=sha, quarantine_root=qroot)
    make_file(corpus, "part-0001.jsonl")  # back, same bytes
    b = quarantine(led, scan_id="s2", shard="part-0001.jsonl", uri=uri, sha256=sha, quarantine_root=qroot)
    assert b.id == a.id and action_rows(led) == 1 and b.state == "done"
    assert not os.path.exists(uri) and has_content(a.destination, sha)
    assert "reappeared" in (b.error or "")
    # the held copy was lost meanwhile: it is copied again before the original goes
    os.remove(a.destination)
    make_file(corpus, "part-0001.jsonl")
    quarantine(led, scan_id="s3", shard="part-0001.jsonl", uri=uri, sha256=sha, quarantine_root=qroot)
    assert not os.path.exists(uri) and has_content(a.destination, sha)


def test_copy_mode_keeps_original(env):
    led, corpus, qroot = env
    uri, sha = make_file(corpus, "a.jsonl")
    a = quarantine(led, scan_id="s", shard="a.jsonl", uri=uri, sha256=sha, mode="copy", quarantine_root=qroot)
    assert a.state == "done"
    assert Path(uri).read_bytes() == DATA and Path(a.destination).read_bytes() == DATA


def test_mark_mode_touches_nothing(env):
    led, corpus, qroot = env
    uri, sha = make_file(corpus, "a.jsonl")
    steps: list[str] = []
    a = quarantine(led, scan_id="s", shard="a.jsonl", uri=uri, sha256=sha, mode="mark", fault=steps.append)
    assert a.state == "done" and a.destination is None
    assert steps == ["pending", "done"]
    assert Path(uri).read_bytes() == DATA
    assert not os.path.exists(qroot)
    assert [x.id for x in led.quarantined()] == [a.id]


def test_fault_hook_sees_every_step_in_order(env):
    led, corpus, qroot = env
    uri, sha = make_file(corpus, "a.jsonl")
    steps: list[str] = []
    quarantine(led, scan_id="s", shard="a.jsonl", uri=uri, sha256=sha, quarantine_root=qroot, fault=steps.append)
    assert steps == list(STEPS)
    uri2, sha2 = make_file(corpus, "b.jsonl", b"other")
    steps.clear()
    quarantine(led, scan_id="s", shard="b.jsonl", uri=uri2, sha256=sha2, mode="copy", quarantine_root=qroot,
               fault=steps.append)
    assert steps == ["pending", "copied", "verified", "done"]


def test_source_changed_since_scan_fails_and_touches_nothing(env):
    led, corpus, qroot = env
    uri, sha = make_file(corpus, "a.jsonl")
    Path(uri).write_bytes(DATA + b'{"id": 2}\n')
    a = quarantine(led, scan_id="s", shard="a.jsonl", uri=uri, sha256=sha, quarantine_root=qroot)
    assert a.state == "failed"
    assert "content changed since it was scanned" in a.error and "re-scan" in a.error
    assert Path(uri).read_bytes() == DATA + b'{"id": 2}\n'
    assert not os.path.exists(a.destination)
    assert led.quarantined() == []


def test_missing_source_fails_clearly(env):
    led, corpus, qroot = env
    sha = hashlib.sha256(b"x").hexdigest()
    a = quarantine(led, scan_id="s", shard="gone.jsonl", uri=str(corpus / "gone.jsonl"), sha256=sha,
                   quarantine_root=qroot)
    assert a.state == "failed" and "missing" in a.error


def test_bad_arguments(env):
    led, corpus, qroot = env
    uri, sha = make_file(corpus, "a.jsonl")
    with pytest.raises(QuarantineError, match="SHA-256"):
        quarantine(led, scan_id="s", shard="a", uri=uri, sha256="abc", quarantine_root=qroot)
    with pytest.raises(QuarantineError, match="mode"):
        quarantine(led, scan_id="s", shard="a", uri=uri, sha256=sha, mode="delete", quarantine_root=qroot)
    with pytest.raises(QuarantineError, match="quarantine_root"):
        quarantine(led, scan_id="s", shard="a", uri=uri, sha256=sha)
    assert action_rows(led) == 0


def test_destination_layout_and_containment(tmp_path):
    sha = "0123456789abcdef" + "0" * 48
    assert destination_for("/q", sha, "sub/dir/a.jsonl") == "/q/0123456789abcdef/sub/dir/a.jsonl"
    assert destination_for("s3://b/q/", sha, "a.jsonl") == "s3://b/q/0123456789abcdef/a.jsonl"
    assert destination_for("/q", sha, "../../etc/passwd") == "/q/0123456789abcdef/__/__/etc/passwd"
    with pytest.raises(QuarantineError):
        destination_for("/q", sha, "/")


def test_nested_shard_name(env):
    led, corpus, qroot = env
    uri, sha = make_file(corpus, "2024/06/part-7.jsonl")
    a = quarantine(led, scan_id="s", shard="2024/06/part-7.jsonl", uri=uri, sha256=sha, quarantine_root=qroot)
    assert a.state == "done"
    assert Path(qroot, sha[:16], "2024", "06", "part-7.jsonl").read_bytes() == DATA


def test_directory_shard_move_and_restore(env):
    led, corpus, qroot = env
    uri, sha = make_dir(corpus, "hf_shard")
    a = quarantine(led, scan_id="s", shard="hf_shard", uri=uri, sha256=sha, quarantine_root=qroot)
    assert a.state == "done" and not os.path.exists(uri)
    assert storage.sha256_of(a.destination) == sha
    r = restore(led, "hf_shard")
    assert r.restore_state == "done" and r.resolution == "restored"
    assert storage.sha256_of(uri) == sha
    assert not os.path.exists(a.destination)


def test_memory_quarantine_root(env):
    led, corpus, _ = env
    qroot = f"memory://q-{uuid.uuid4().hex}"
    uri, sha = make_file(corpus, "a.jsonl")
    a = quarantine(led, scan_id="s", shard="a.jsonl", uri=uri, sha256=sha, quarantine_root=qroot)
    assert a.state == "done" and not os.path.exists(uri)
    assert has_content(a.destination, sha)
    rel = release(led, "a.jsonl", reason="ok")
    assert rel.restored and Path(uri).read_bytes() == DATA
    assert not storage.exists(a.destination)


# -- crashes during quarantine ------------------------------------------------------------


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("how", ["resume_pending", "rerun"])
def test_move_crash_at_each_step_loses_nothing_and_resumes(env, step, how):
    led, corpus, qroot = env
    uri, sha = make_file(corpus, "a.jsonl")
    kw = dict(scan_id="s", shard="a.jsonl", uri=uri, sha256=sha, quarantine_root=qroot)
    with pytest.raises(Crash):
        quarantine(led, **kw, fault=crash_at(step))
    dest = destination_for(qroot, sha, "a.jsonl")
    # no data lost: the original, or a verified copy, is there with the right bytes
    assert has_content(uri, sha) or has_content(dest, sha)
    if not os.path.exists(uri):
        assert led.action(led.actions()[0].id).state in ("verified", "done")

    if how == "resume_pending":
        out = resume_pending(led)
        assert len(out) == (0 if step == "done" else 1)
    else:
        quarantine(led, **kw)
    [a] = led.actions()
    assert a.state == "done" and a.error is None
    assert not os.path.exists(uri)
    assert Path(dest).read_bytes() == DATA
    assert not os.path.exists(dest + ".partial")
    assert led.unfinished() == []


@pytest.mark.parametrize("step", ["pending", "copied", "verified", "done"])
def test_copy_mode_crash_resumes(env, step):
    led, corpus, qroot = env
    uri, sha = make_file(corpus, "a.jsonl")
    with pytest.raises(Crash):
        quarantine(led, scan_id="s", shard="a.jsonl", uri=uri, sha256=sha, mode="copy", quarantine_root=qroot,
                   fault=crash_at(step))
    assert Path(uri).read_bytes() == DATA
    resume_pending(led)
    [a] = led.actions()
    assert a.state == "done" and Path(uri).read_bytes() == DATA and Path(a.destination).read_bytes() == DATA


@pytest.mark.parametrize("step", STEPS)
def test_directory_shard_crash_resumes(env, step):
    led, corpus, qroot = env
    uri, sha = make_dir(corpus, "hf")
    with pytest.raises(Crash):
        quarantine(led, scan_id="s", shard="hf", uri=uri, sha256=sha, quarantine_root=qroot, fault=crash_at(step))
    dest = destination_for(qroot, sha, "hf")
    assert has_content(uri, sha) or has_content(dest, sha)
    resume_pending(led)
    [a] = led.actions()
    assert a.state == "done" and not os.path.exists(uri) and storage.sha256_of(dest) == sha


def test_partial_copy_left_by_crash_is_redone(env):
    led, corpus, qroot = env
    uri, sha = make_file(corpus, "a.jsonl")
    with pytest.raises(Crash):
        quarantine(led, scan_id="s", shard="a.jsonl", uri=uri, sha256=sha, quarantine_root=qroot,
                   fault=crash_at("pending"))
    dest = destination_for(qroot, sha, "a.jsonl")
    Path(dest).parent.mkdir(parents=True)
    Path(dest + ".partial").write_bytes(DATA[:100])  # the crash happened mid-copy
    [a] = resume_pending(led)
    assert a.state == "done"
    assert Path(dest).read_bytes() == DATA and not os.path.exists(dest + ".partial") and not os.path.exists(uri)


def test_corrupt_unverified_copy_is_deleted_and_original_kept(env):
    led, corpus, qroot = env
    uri, sha = make_file(corpus, "a.jsonl")
    with pytest.raises(Crash):
        quarantine(led, scan_id="s", shard="a.jsonl", uri=uri, sha256=sha, quarantine_root=qroot,
                   fault=crash_at("copied"))
    dest = destination_for(qroot, sha, "a.jsonl")
    Path(dest).write_bytes(b"bit rot")  # destination exists but is not what was copied
    [a] = resume_pending(led)
    assert a.state == "failed" and "does not match" in a.error and "untouched" in a.error
    assert not os.path.exists(dest)
    assert Path(uri).read_bytes() == DATA
    # running the quarantine again starts a fresh action and completes
    b = quarantine(led, scan_id="s", shard="a.jsonl", uri=uri, sha256=sha, quarantine_root=qroot)
    assert b.state == "done" and b.id != a.id and Path(dest).read_bytes() == DATA


def test_original_changed_after_copy_is_not_removed(env):
    led, corpus, qroot = env
    uri, sha = make_file(corpus, "a.jsonl")
    with pytest.raises(Crash):
        quarantine(led, scan_id="s", shard="a.jsonl", uri=uri, sha256=sha, quarantine_root=qroot,
                   fault=crash_at("verified"))
    Path(uri).write_bytes(b"new content appended by a writer")
    [a] = resume_pending(led)
    assert a.state == "failed" and "NOT removed" in a.error
    assert Path(uri).read_bytes() == b"new content appended by a writer"
    assert Path(a.destination).read_bytes() == DATA


def test_lost_ledger_update_after_removal_still_completes(env):
    """The ledger says pending, but the copy was made and the original removed (e.g. a lost commit)."""
    led, corpus, qroot = env
    uri, sha = make_file(corpus, "a.jsonl")
    with pytest.raises(Crash):
        quarantine(led, scan_id="s", shard="a.jsonl", uri=uri, sha256=sha, quarantine_root=qroot,
                   fault=crash_at("pending"))
    dest = destination_for(qroot, sha, "a.jsonl")
    storage.copy(uri, dest)
    os.remove(uri)
    [a] = resume_pending(led)
    assert a.state == "done" and Path(dest).read_bytes() == DATA


def test_storage_error_keeps_state_and_is_retried(env, monkeypatch):
    led, corpus, qroot = env
    uri, sha = make_file(corpus, "a.jsonl")
    import integrity.engine.quarantine as q

    real_copy = storage.copy

    def failing_copy(*a, **k):
        raise storage.StorageError(str(a[1]), "I/O error; check the storage")

    monkeypatch.setattr(q.storage, "copy", failing_copy)
    with pytest.raises(storage.StorageError):
        quarantine(led, scan_id="s", shard="a.jsonl", uri=uri, sha256=sha, quarantine_root=qroot)
    [a] = led.actions()
    assert a.state == "pending" and "I/O error" in a.error
    assert Path(uri).read_bytes() == DATA
    [a] = resume_pending(led)  # still failing: left as is, no exception
    assert a.state == "pending"
    monkeypatch.setattr(q.storage, "copy", real_copy)
    [a] = resume_pending(led)
    assert a.state == "done" and a.error is None


def test_action_held_by_live_worker_is_not_touched(env):
    led, corpus, qroot = env
    uri, sha = make_file(corpus, "a.jsonl")
    with pytest.raises(Crash):
        quarantine(led, scan_id="s", shard="a.jsonl", uri=uri, sha256=sha, quarantine_root=qroot,
                   fault=crash_at("pending"))
    [a] = led.actions()
    assert led.claim(a.id, "other-host:123:1:abc") is None
    with pytest.raises(ActionBusyError, match="other-host"):
        quarantine(led, scan_id="s", shard="a.jsonl", uri=uri, sha256=sha, quarantine_root=qroot)
    assert resume_pending(led)[0].state == "pending"
    led.unclaim(a.id, "other-host:123:1:abc")
    assert resume_pending(led)[0].state == "done"


def test_concurrent_quarantines_from_threads(env):
    led, corpus, qroot = env
    shards = [make_file(corpus, f"s{i}.jsonl", DATA + str(i).encode()) for i in range(8)]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            uri, sha = shards[i]
            quarantine(led, scan_id="s", shard=f"s{i}.jsonl", uri=uri, sha256=sha, quarantine_root=qroot)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(led.quarantined()) == 8
    assert all(a.state == "done" for a in led.actions())


# -- release / restore -----------------------------------------------------------------


def _quarantined(env, rel="a.jsonl", mode="move", data=DATA, scan_reasons=("poison.trigger",)):
    led, corpus, qroot = env
    uri, sha = make_file(corpus, rel, data)
    sid = led.record_scan_start(source=str(corpus))
    led.record_verdicts(sid, [{"shard": rel, "uri": uri, "sha256": sha, "verdict": "quarantine",
                               "reasons": list(scan_reasons)}])
    a = quarantine(led, scan_id=sid, shard=rel, uri=uri, sha256=sha, mode=mode, quarantine_root=qroot)
    assert a.state == "done"
    return a


def test_release_records_and_restores(env):
    led, _, _ = env
    a = _quarantined(env)
    rel = release(led, "a.jsonl", reason="trigger phrase is a product name", who="carol")
    assert rel.who == "carol" and rel.reason == "trigger phrase is a product name"
    assert rel.restored and rel.released_at and rel.restored_at
    assert rel.sha256 == a.sha256 and rel.shard == "a.jsonl" and rel.uri == a.uri
    assert rel.findings_key == findings_key(["poison.trigger"])
    assert Path(a.uri).read_bytes() == DATA
    assert not os.path.exists(a.destination)
    assert not os.path.exists(os.path.dirname(a.destination))  # empty sha dir pruned
    assert led.quarantined() == []
    assert led.release_for(a.sha256).id == rel.id
    assert led.release_for(a.sha256, findings_key(["poison.trigger"])).id == rel.id
    assert led.release_for(hashlib.sha256(b"different content").hexdigest()) is None
    act = led.action(a.id)
    assert act.resolution == "released" and act.restore_state == "done" and act.resolved_by == "carol"
    assert [e["event"] for e in led.history("a.jsonl")] == ["verdict", "quarantine", "release"]


def test_release_defaults_who_to_current_user(env):
    from integrity.ledger import current_user

    led, _, _ = env
    _quarantined(env)
    assert release(led, "a.jsonl", reason="ok").who == current_user()


def test_release_requires_reason_and_known_shard(env):
    led, _, _ = env
    _quarantined(env)
    with pytest.raises(QuarantineError, match="reason"):
        release(led, "a.jsonl", reason="   ")
    with pytest.raises(UnknownShardError) as ei:
        release(led, "nope.jsonl", reason="x")
    assert "a.jsonl" in str(ei.value) and "currently quarantined" in str(ei.value)
    with pytest.raises(UnknownShardError, match="a.jsonl"):
        restore(led, "nope.jsonl")
    assert led.releases() == []


def test_unknown_shard_when_nothing_quarantined(env):
    led, _, _ = env
    with pytest.raises(UnknownShardError, match="nothing is quarantined"):
        release(led, "x", reason="y")


def test_release_without_restore_then_restore(env):
    led, _, _ = env
    a = _quarantined(env)
    rel = release(led, "a.jsonl", reason="fine", restore=False)
    assert not rel.restored
    assert not os.path.exists(a.uri) and Path(a.destination).read_bytes() == DATA
    assert led.quarantined() == []
    assert led.release_for(a.sha256).id == rel.id
    r = restore(led, "a.jsonl")
    assert r.restore_state == "done" and r.resolution == "released"
    assert Path(a.uri).read_bytes() == DATA
    assert led.release_for(a.sha256).restored


def test_restore_does_not_approve(env):
    led, _, _ = env
    a = _quarantined(env)
    r = restore(led, a.uri)
    assert r.resolution == "restored" and r.restore_state == "done"
    assert Path(a.uri).read_bytes() == DATA and not os.path.exists(a.destination)
    assert led.release_for(a.sha256) is None and led.releases() == []
    assert led.quarantined() == []
    assert [e["event"] for e in led.history("a.jsonl")] == ["verdict", "quarantine", "restore"]
    # the same content can be quarantined again afterwards
    b = quarantine(led, scan_id="s2", shard="a.jsonl", uri=a.uri, sha256=a.sha256, quarantine_root=env[2])
    assert b.id != a.id and b.state == "done"


def test_release_refuses_to_overwrite_other_content(env):
    led, _, _ = env
    a = _quarantined(env)
    Path(a.uri).write_bytes(b"someone put a new file here")
    with pytest.raises(QuarantineError, match="refusing to overwrite"):
        release(led, "a.jsonl", reason="ok")
    assert Path(a.uri).read_bytes() == b"someone put a new file here"
    assert Path(a.destination).read_bytes() == DATA
    assert led.releases() == [] and [x.id for x in led.quarantined()] == [a.id]


def test_release_copy_and_mark_modes(env):
    led, _, _ = env
    c = _quarantined(env, "c.jsonl", mode="copy", data=b"copy mode")
    rel = release(led, "c.jsonl", reason="ok")
    assert rel.restored and Path(c.uri).read_bytes() == b"copy mode" and not os.path.exists(c.destination)
    m = _quarantined(env, "m.jsonl", mode="mark", data=b"mark mode")
    rel = release(led, "m.jsonl", reason="ok")
    assert not rel.restored and Path(m.uri).read_bytes() == b"mark mode"
    assert led.quarantined() == []


def test_ambiguous_shard_names(env):
    led, corpus, qroot = env
    u1, s1 = make_file(corpus / "x", "a.jsonl", b"one")
    u2, s2 = make_file(corpus / "y", "a.jsonl", b"two")
    a1 = quarantine(led, scan_id="s", shard="a.jsonl", uri=u1, sha256=s1, quarantine_root=qroot)
    a2 = quarantine(led, scan_id="s", shard="a.jsonl", uri=u2, sha256=s2, quarantine_root=qroot)
    with pytest.raises(AmbiguousShardError) as ei:
        release(led, "a.jsonl", reason="ok")
    assert u1 in str(ei.value) and u2 in str(ei.value)
    assert find_action(led, u2).id == a2.id
    assert find_action(led, f"#{a1.id}").id == a1.id
    release(led, u1, reason="ok")
    assert Path(u1).read_bytes() == b"one" and not os.path.exists(u2)


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("how", ["resume_pending", "rerun"])
def test_release_crash_at_each_step_loses_nothing_and_resumes(env, step, how):
    led, _, _ = env
    a = _quarantined(env)
    with pytest.raises(Crash):
        release(led, "a.jsonl", reason="benign", who="dave", fault=crash_at(step))
    assert has_content(a.uri, a.sha256) or has_content(a.destination, a.sha256)
    if how == "resume_pending":
        resume_pending(led)
    else:
        release(led, "a.jsonl", reason="benign", who="dave")
    [rel] = led.releases()
    assert rel.restored and rel.who == "dave"
    assert Path(a.uri).read_bytes() == DATA and not os.path.exists(a.destination)
    [act] = led.actions()
    assert act.restore_state == "done" and act.resolution == "released"
    assert led.quarantined() == [] and led.unfinished() == []


@pytest.mark.parametrize("step", STEPS)
def test_restore_crash_at_each_step_loses_nothing_and_resumes(env, step):
    led, _, _ = env
    a = _quarantined(env, data=b"restore me")
    with pytest.raises(Crash):
        restore(led, "a.jsonl", fault=crash_at(step))
    assert has_content(a.uri, a.sha256) or has_content(a.destination, a.sha256)
    resume_pending(led)
    [act] = led.actions()
    assert act.restore_state == "done" and act.resolution == "restored"
    assert Path(a.uri).read_bytes() == b"restore me" and not os.path.exists(a.destination)
    assert led.releases() == []


def test_release_of_interrupted_quarantine_finishes_it_first(env):
    led, corpus, qroot = env
    uri, sha = make_file(corpus, "a.jsonl")
    with pytest.raises(Crash):
        quarantine(led, scan_id="s", shard="a.jsonl", uri=uri, sha256=sha, quarantine_root=qroot,
                   fault=crash_at("copied"))
    rel = release(led, "a.jsonl", reason="ok")
    assert rel.restored and Path(uri).read_bytes() == DATA
    [a] = led.actions()
    assert a.state == "done" and a.restore_state == "done"
    assert not os.path.exists(a.destination)


def test_shared_destination_is_kept_while_another_action_needs_it(env):
    """Same content under the same shard name at two places maps to one quarantine copy."""
    led, corpus, qroot = env
    u1, sha = make_file(corpus / "x", "a.jsonl")
    u2, _ = make_file(corpus / "y", "a.jsonl")
    a1 = quarantine(led, scan_id="s", shard="a.jsonl", uri=u1, sha256=sha, quarantine_root=qroot)
    a2 = quarantine(led, scan_id="s", shard="a.jsonl", uri=u2, sha256=sha, quarantine_root=qroot)
    assert a1.destination == a2.destination and a1.id != a2.id
    assert not os.path.exists(u1) and not os.path.exists(u2)
    release(led, u1, reason="ok")
    assert Path(u1).read_bytes() == DATA
    assert Path(a2.destination).read_bytes() == DATA  # still needed by a2
    restore(led, u2)
    assert Path(u2).read_bytes() == DATA and not os.path.exists(a2.destination)


def test_nested_shard_restore_prunes_empty_dirs(env):
    led, corpus, qroot = env
    uri, sha = make_file(corpus, "2024/06/part-7.jsonl")
    quarantine(led, scan_id="s", shard="2024/06/part-7.jsonl", uri=uri, sha256=sha, quarantine_root=qroot)
    restore(led, "2024/06/part-7.jsonl")
    assert Path(uri).read_bytes() == DATA
    assert os.listdir(qroot) == []


def test_restore_failure_is_reported_and_retryable(env):
    led, _, _ = env
    a = _quarantined(env)
    moved_away = a.destination + ".moved"
    os.rename(a.destination, moved_away)  # someone tampered with the quarantine area
    with pytest.raises(QuarantineError, match="putting the file back failed"):
        release(led, "a.jsonl", reason="ok")
    assert [x.id for x in led.quarantined()] == [a.id]  # still quarantined
    assert led.action(a.id).restore_state == "failed"
    assert len(led.releases()) == 1 and not led.releases()[0].restored
    os.rename(moved_away, a.destination)
    rel = release(led, "a.jsonl", reason="ok")
    assert rel.restored and Path(a.uri).read_bytes() == DATA and len(led.releases()) == 1
