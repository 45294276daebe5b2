"""Stage 3 (corpus passes): what a corpus-level check is given."""
from __future__ import annotations

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
