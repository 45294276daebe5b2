"""Records done / total and an ETA while shards are read; seconds per check in the outputs."""
from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import write_jsonl


def corpus(root: Path, shards: int = 4, rows: int = 300) -> Path:
    for s in range(shards):
        write_jsonl(root / f"part-{s}.jsonl",
                    [{"id": f"{s}-{i}", "text": f"shard {s} record {i} about lanterns, tides and rope"} for i in range(rows)])
    return root


def test_engine_reports_records_batch_by_batch_with_an_eta(tmp_path: Path):
    from flows.build import build_spec
    from integrity.engine import pipeline, progress

    src = corpus(tmp_path / "src")
    policy = tmp_path / "p.yaml"
    policy.write_text(f"state_dir: {tmp_path / 'state'}\nbatch_size: 50\n")
    spec = build_spec(str(src), out=tmp_path / "run", policy=policy, checks="dedup.exact,privacy.secret")
    seen: list[progress.Snapshot] = []
    tracker = progress.ScanProgress(on_update=seen.append, every_s=0.0)
    progress.register(spec.scan_id, tracker)
    try:
        summary = pipeline.run_scan(spec, workers=1)
    finally:
        progress.unregister(spec.scan_id)
    done = [s.records_done for s in seen]
    assert done == sorted(done) and done[-1] == 1200
    assert any(s.records_done % 300 and s.shards_done < 4 for s in seen)  # inside a shard, not only between
    assert any(s.eta_s is not None and not s.exact for s in seen)  # an ETA before the end
    assert any(s.records_total == 1200 and not s.exact for s in seen)  # the estimate holds up
    last = seen[-1]
    assert last.exact and last.records_total == 1200 and last.shards_done == 4
    assert progress.format_snapshot(last) == "1,200 / 1,200 records, 4/4 shards"
    # seconds per check: every check that ran, in summary.json and in the report
    assert set(summary["check_seconds"]) == {"dedup.exact", "privacy.secret"}
    assert all(v >= 0 for v in summary["check_seconds"].values())
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["check_seconds"] == summary["check_seconds"]
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Time per check (its passes" in html


def test_estimate_ignores_unreadable_shards_and_formats_eta():
    from integrity.engine.progress import ScanProgress, format_snapshot

    p = ScanProgress({"a": 1000, "bad": 1000, "c": 2000})
    p.shard_done("bad", 0, ok=False)
    assert p.snapshot().records_total is None  # nothing read yet: no guess
    p.shard_done("a", 100)
    p.batch("c", 50)
    s = p.snapshot()
    assert s.records_total == 300 and s.records_done == 150 and not s.exact
    assert 0.5 < s.fraction < 1 and s.eta_s is not None
    assert format_snapshot(s).startswith("150 / ~300 records, 2/3 shards, ETA ")


def test_verbose_logging_leaves_out_http_clients():
    import logging

    from flows.cli import _setup_logging

    _setup_logging(True)
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert not logging.getLogger("httpcore.http11").isEnabledFor(logging.INFO)
    assert logging.getLogger("integrity.engine.pipeline").isEnabledFor(logging.INFO)
