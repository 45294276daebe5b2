"""provenance.duplicate_id, and detail.row on findings: records that share an id stay distinguishable."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from flows.cli import app

KEY = "AKIAQ7RZ4TXW2MPLK9VB"


def test_duplicate_ids_warn_once_and_findings_name_their_rows(tmp_path: Path):
    """Issue 13 defect 13: five records with id "1" gave five findings all naming "1", silently."""
    src = tmp_path / "src"
    src.mkdir()
    lines = [{"id": 1, "text": f"deploy number {i} with key {KEY} please"} for i in range(5)]
    lines += [{"id": 100 + i, "text": f"an unrelated line {i} about gardens"} for i in range(55)]
    (src / "a.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (src / "b.jsonl").write_text("".join(json.dumps({"id": i, "text": f"clean {i}"}) + "\n" for i in range(20)))
    (tmp_path / "p.yaml").write_text(f"state_dir: {tmp_path / 'state'}\n")
    r = CliRunner().invoke(app, ["scan", str(src), "--out", str(tmp_path / "run"), "--policy", str(tmp_path / "p.yaml"),
                                 "--runner", "inline", "--checks", "privacy.secret,provenance.duplicate_id"])
    assert r.exit_code == 0, r.output
    found = pl.read_parquet(tmp_path / "run" / "findings.parquet")
    dup = found.filter(pl.col("check") == "provenance.duplicate_id")
    assert dup["shard"].to_list() == ["a.jsonl"] and dup["record_id"].to_list() == [None]  # once, shard level
    detail = json.loads(dup["detail"][0])
    assert detail["rows_repeating_an_id"] == 4 and detail["ids_repeated"] == 1
    assert detail["examples"][0] == {"row": 1, "same_id_as_row": 0}
    secrets = found.filter(pl.col("check") == "privacy.secret")
    assert secrets["record_id"].to_list() == ["1"] * 5  # the contract: record_id stays the id string
    assert sorted(json.loads(d)["row"] for d in secrets["detail"]) == [0, 1, 2, 3, 4]  # told apart by row
    examples = pl.read_parquet(tmp_path / "run" / "examples.parquet").filter(pl.col("check") == "privacy.secret")
    assert examples.height >= 2
    for detail, excerpt in examples.select("detail", "excerpt").iter_rows():
        assert f"deploy number {json.loads(detail)['row']} " in excerpt  # the example shows that very record
    shards = pl.read_parquet(tmp_path / "run" / "shards.parquet")
    assert shards.filter(pl.col("shard") == "b.jsonl")["verdict"].to_list() == ["pass"]
