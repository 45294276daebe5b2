"""The whole engine in-process (no Prefect): outputs, verdicts, cache, bad input."""
import gzip
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from flows.build import build_spec
from integrity.engine import pipeline

CONTRACT = Path(__file__).resolve().parents[3].parent / "shared" / "tools" / "check_contract.py"


def run(source, tmp_path: Path, policy: Path, out="run", **kw):
    spec = build_spec(str(source), out=tmp_path / out, policy=policy, **kw)
    return spec, pipeline.run_scan(spec, workers=2)


def test_scan_writes_the_contract_and_finds_duplicates_pii_secrets(small_corpus, tmp_path, state_policy):
    spec, summary = run(small_corpus, tmp_path, state_policy)
    out = spec.out
    for f in ("findings.parquet", "shards.parquet", "summary.json", "report.html", "examples.parquet"):
        assert (out / f).exists(), f
    if CONTRACT.exists():
        r = subprocess.run([sys.executable, str(CONTRACT), str(out)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout
    f = pl.read_parquet(out / "findings.parquet")
    dups = f.filter(pl.col("check") == "dedup.exact")
    assert dups["record_id"].to_list() == ["b10"]
    assert json.loads(dups["detail"][0])["representative"] == "a3"
    pii = f.filter(pl.col("check") == "privacy.pii")
    assert "a4" in pii["record_id"].to_list()
    sec = f.filter(pl.col("check") == "privacy.secret")
    assert sec["record_id"].to_list() == ["c5"] and sec["severity"][0] == "critical"
    assert "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8" not in " ".join(f["detail"].to_list())
    shards = pl.read_parquet(out / "shards.parquet").sort("shard")
    verdicts = dict(zip(shards["shard"], shards["verdict"]))
    assert verdicts["c.jsonl.gz"] == "quarantine"
    assert verdicts["b.parquet"] == "warn"  # 1 of 50 records duplicated > 1 %
    assert summary["verdict"] == "fail"
    assert set(summary["timings"]) >= {"list", "shards", "corpus", "policy", "quarantine", "report", "total"}
    # the example of the secret (its shard now moved to quarantine) is masked in the report data too
    assert not (small_corpus / "c.jsonl.gz").exists()
    ex = pl.read_parquet(out / "examples.parquet").filter(pl.col("check") == "privacy.secret")
    assert "ghp_" in ex["excerpt"][0] and "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8" not in ex["excerpt"][0]
    assert "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8" not in (out / "report.html").read_text()


def test_unchanged_shard_is_not_reread(small_corpus, tmp_path, state_policy, monkeypatch):
    run(small_corpus, tmp_path, state_policy, out="r1", quarantine_mode="off")
    import integrity.engine.shard as shard_mod

    opened = []
    real = shard_mod.ShardReader

    class Spy(real):
        def __init__(self, ref, *a, **k):
            opened.append(ref.name)
            super().__init__(ref, *a, **k)

    monkeypatch.setattr(shard_mod, "ShardReader", Spy)
    monkeypatch.setattr(shard_mod, "hash_shard", lambda *a, **k: pytest.fail("an unchanged shard was re-hashed"))
    _, summary = run(small_corpus, tmp_path, state_policy, out="r2", quarantine_mode="off")
    assert opened == [] and summary["cached_shards"] == 3
    assert pl.read_parquet(tmp_path / "r2" / "findings.parquet").height == \
        pl.read_parquet(tmp_path / "r1" / "findings.parquet").height
    # a changed shard is read again; the others stay cached
    (small_corpus / "a.jsonl").write_text((small_corpus / "a.jsonl").read_text() + '{"id": "new", "text": "fresh"}\n')
    monkeypatch.setattr(shard_mod, "hash_shard", __import__("connectors").hash_shard)
    _, summary = run(small_corpus, tmp_path, state_policy, out="r3", quarantine_mode="off")
    assert opened == ["a.jsonl"] and summary["cached_shards"] == 2


@pytest.mark.parametrize("name, content, needle", [
    ("corrupt.parquet", b"PAR1 this is not parquet", "corrupt.parquet"),
    ("bad.jsonl", b'{"text": "ok"}\n{"text": "broken\n', "line 2"),
    ("latin1.jsonl", b'{"text": "caf\xe9"}\n', "latin1.jsonl"),
    ("notext.jsonl", b'{"body": "no text column"}\n', "text"),
    ("empty.jsonl", b"", "no records"),
])
def test_bad_input_is_reported_and_the_scan_goes_on(tmp_path, state_policy, name, content, needle):
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.jsonl").write_text('{"id": "1", "text": "fine"}\n')
    (src / name).write_bytes(content)
    spec, summary = run(src, tmp_path, state_policy)
    shards = pl.read_parquet(spec.out / "shards.parquet")
    bad = shards.filter(pl.col("shard") == name)
    assert bad["verdict"][0] == "unreadable"
    assert needle in bad["error"][0] and name in bad["error"][0]
    assert shards.filter(pl.col("shard") == "good.jsonl")["verdict"][0] == "pass"
    assert summary["verdict"] == "fail"


def test_released_content_is_not_quarantined_again(small_corpus, tmp_path, state_policy):
    from integrity.engine import quarantine
    from integrity.ledger import Ledger

    # privacy.secret alone sends c.jsonl.gz to quarantine (its token): what a release must outlast
    spec, _ = run(small_corpus, tmp_path, state_policy, out="r1", checks="privacy.secret")
    assert not (small_corpus / "c.jsonl.gz").exists()  # moved
    quarantine.release(Ledger(spec.state_dir), "c.jsonl.gz", reason="token is revoked", who="ops")
    assert (small_corpus / "c.jsonl.gz").exists()
    spec2, s2 = run(small_corpus, tmp_path, state_policy, out="r2", checks="privacy.secret")
    sh = pl.read_parquet(spec2.out / "shards.parquet").filter(pl.col("shard") == "c.jsonl.gz")
    assert sh["verdict"][0] == "warn" and "token is revoked" in sh["reasons"][0][0]
    assert (small_corpus / "c.jsonl.gz").exists()
    # new content: judged afresh
    with gzip.open(small_corpus / "c.jsonl.gz", "at") as f:
        f.write('{"id": "c99", "text": "more"}\n')
    spec3, _ = run(small_corpus, tmp_path, state_policy, out="r3", checks="privacy.secret")
    sh = pl.read_parquet(spec3.out / "shards.parquet").filter(pl.col("shard") == "c.jsonl.gz")
    assert sh["verdict"][0] == "quarantine"


def test_execute_runs_the_stages_in_order_with_the_orchestrators_mapping(small_corpus, tmp_path, state_policy):
    """The stage sequence is the engine's: an orchestrator supplies only how shards are mapped
    (here: in reverse, as an executor finishing out of order would), how a stage runs, and hooks."""
    stages, mapped, seen, quarantined = [], [], [], []

    def map_shards(scan, refs):
        for ref in reversed(refs):
            mapped.append(ref.name)
            yield scan(ref)

    def run_stage(name, stage, *args):
        stages.append(name)
        return stage(*args)

    spec = build_spec(str(small_corpus), out=tmp_path / "run", policy=state_policy, quarantine_mode="mark")
    summary = pipeline.execute(spec, pipeline.ScanHooks(map_shards=map_shards, run_stage=run_stage,
                                                        on_shard=lambda r: seen.append(r.shard),
                                                        on_quarantined=quarantined.append))
    assert stages == ["list", "corpus", "policy", "quarantine", "outputs"]
    assert mapped == ["c.jsonl.gz", "b.parquet", "a.jsonl"] and seen == mapped
    assert [q["shard"] for q in quarantined] == ["c.jsonl.gz"] and quarantined[0]["mode"] == "mark"
    assert summary["verdict"] == "fail" and set(summary["timings"]) >= {"list", "shards", "corpus", "policy"}
    # the same outputs as the in-process threads
    ref = build_spec(str(small_corpus), out=tmp_path / "ref", policy=state_policy, quarantine_mode="mark")
    pipeline.run_scan(ref, workers=2)
    assert pl.read_parquet(spec.out / "findings.parquet").equals(pl.read_parquet(ref.out / "findings.parquet"))
    cols = ["shard", "uri", "sha256", "rows", "bytes", "verdict", "reasons"]
    assert pl.read_parquet(spec.out / "shards.parquet").select(cols).equals(
        pl.read_parquet(ref.out / "shards.parquet").select(cols))
