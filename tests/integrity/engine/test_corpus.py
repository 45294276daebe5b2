"""Stage 3 (corpus passes): what a corpus-level check is given."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from flows.build import build_spec
from integrity.engine.corpus import corpus_context, features_of
from integrity.engine.pipeline import list_stage
from integrity.engine.shard import scan_shard


def test_checks_read_one_shard_from_its_own_file(tmp_path: Path, state_policy: Path):
    src = tmp_path / "src"
    src.mkdir()
    for k in range(3):
        pl.DataFrame({"id": [f"{k}-{i}" for i in range(20)],
                      "text": [f"shard {k} says thing number {i}" for i in range(20)]}).write_parquet(
            src / f"part-{k}.parquet")
    spec = build_spec(str(src), tmp_path / "run", state_policy, checks="provenance.changed,dedup.near")
    results = [scan_shard(ref, spec) for ref in list_stage(spec)]
    ctx = corpus_context(spec, results)
    assert ctx.mapping is spec.mapping
    everything = features_of("provenance.changed", results)
    files = ctx.feature_files["provenance.changed"]
    assert [(s, i) for s, i, _ in files] == [("part-0.parquet", 0), ("part-1.parquet", 1), ("part-2.parquet", 2)]
    one = ctx.shard_frame("provenance.changed", "part-1.parquet", everything).collect()
    # the same rows a filter of the corpus-wide frame gives, read from one file instead of all
    expected = everything.filter(pl.col("shard") == "part-1.parquet").collect()
    assert one.sort("row").equals(expected.sort("row")) and one.height == 20
    # a context built by hand (tests, plug-ins) without the file list falls back to the filter
    ctx.feature_files = {}
    assert ctx.shard_frame("provenance.changed", "part-2.parquet", everything).collect()["shard"].unique().to_list() \
        == ["part-2.parquet"]


def test_findings_finished_slice_by_slice_equal_the_whole_frame_finished(tmp_path: Path):
    from integrity.engine.corpus import finish_findings, write_finished
    from integrity.engine.redact import mask_frame

    key = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"  # a GitHub token: masked before it reaches the disk
    found = pl.DataFrame({
        "shard": [f"part-{i % 3}.parquet" for i in range(7)], "record_id": [f"r{i}" for i in range(7)],
        "row": list(range(7)), "score": [i / 10 for i in range(7)],
        "detail": [f'{{"cluster_size": {i + 2}, "quote": "token {key if i == 4 else "none"}"}}' for i in range(7)],
    })
    got = pl.read_parquet(write_finished(found, "dedup.span", tmp_path / "spill.parquet", chunk=2))
    assert got.equals(mask_frame(finish_findings(found, "dedup.span")))
    assert got["check"].unique().to_list() == ["dedup.span"]
    assert [json.loads(d)["row"] for d in got["detail"]] == list(range(7))  # the row moved into the detail
    assert key not in "".join(got["detail"].to_list())
    empty = pl.read_parquet(write_finished(found.head(0), "dedup.span", tmp_path / "none.parquet"))
    assert empty.height == 0 and "detail" in empty.columns
