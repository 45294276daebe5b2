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
    # parts, as Check.corpus_parts yields them, are finished and written one after the other
    parts = iter([found.slice(0, 3), found.head(0), found.slice(3)])
    assert pl.read_parquet(write_finished(parts, "dedup.span", tmp_path / "parts.parquet", chunk=2)).equals(got)
    # a check that masks its details itself (Check.masks_own_details): they are written as given
    own = pl.read_parquet(write_finished(found, "dedup.near", tmp_path / "own.parquet", details_masked=True))
    assert own.equals(finish_findings(found, "dedup.near"))


def test_memorization_findings_spilled_in_parts_equal_the_whole_pass(tmp_path: Path, state_policy: Path, monkeypatch):
    """memorization.risk hands its findings to the engine in parts (Check.corpus_parts): the
    spilled findings equal its corpus_pass frame, finished, whatever the part size."""
    from integrity.checks import memorization_risk
    from integrity.engine.corpus import CORPUS_SPILL, WORK, finish_findings, run_corpus_checks

    src = tmp_path / "src"
    src.mkdir()
    for k in range(2):
        pl.DataFrame({"id": [f"{k}-{i}" for i in range(30)],
                      "text": [f"a repeated line about package number {i % 7} and its many files" for i in range(30)]}
                     ).write_parquet(src / f"part-{k}.parquet")
    spec = build_spec(str(src), tmp_path / "run", state_policy, checks="dedup.exact,memorization.risk")
    results = [scan_shard(ref, spec) for ref in list_stage(spec)]
    monkeypatch.setattr(memorization_risk, "PART_ROWS", 7)
    run_corpus_checks(spec, results, tmp_path / "corpus.parquet")
    spilled = sorted((tmp_path / "run" / WORK / CORPUS_SPILL).glob("*.parquet"))
    assert len(spilled) == 2  # dedup.exact, then memorization.risk
    got = pl.read_parquet(spilled[1])
    ctx = corpus_context(spec, results)
    ctx.earlier_findings["dedup.exact"] = pl.scan_parquet(spilled[0])
    whole = spec.check_instance("memorization.risk").corpus_pass(features_of("memorization.risk", results), ctx)
    assert got.height == whole.height == 60  # every record has 8+ copies
    assert got.equals(finish_findings(whole, "memorization.risk"))


def test_a_single_row_moves_into_the_detail_as_the_list_form_puts_it():
    """One row per finding (every corpus check's case) takes a path without lists; it must
    write exactly what the general form (a list of candidate rows) writes, edge cases too."""
    from integrity.engine.shard import detail_with_rows, rows_into_detail

    found = pl.DataFrame({
        "detail": ['{}', '{ }', ' { } ', '{"a": 1}', '{"a":1,"b":"x"}', 'not json', '{"row": 3}', None,
                   '  {"b":2}  ', '{"x":"}"}', '{"rows": [1]}'],
        "row": [1, 2, 3, None, 5, 6, 7, 8, 9, 10, 11],
    }, schema={"detail": pl.Utf8, "row": pl.Int32})
    fast = rows_into_detail(found)
    general = found.with_columns(
        detail=detail_with_rows(pl.concat_list(pl.col("row").cast(pl.Int64)).list.drop_nulls())).drop("row")
    assert fast.columns == ["detail"]
    assert fast["detail"].to_list() == general["detail"].to_list()
    assert fast["detail"][0] == '{"row": 1}' and fast["detail"][4] == '{"row": 5, "a":1,"b":"x"}'
    assert fast["detail"][3] == '{"a": 1}'  # no row: unchanged
