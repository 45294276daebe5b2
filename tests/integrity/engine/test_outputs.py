"""findings.parquet written a group of shards at a time equals one sort of every finding."""
from __future__ import annotations

import json

import polars as pl
import pytest

from connectors.schema import SCAN_FINDING_COLUMNS
from integrity.engine.outputs import SORT_KEY, write_findings


def _findings(tmp_path) -> pl.LazyFrame:
    """Findings of 12 shards (uneven counts, one shard with more than a group) and some
    without a shard, spread over three Parquet files as the policy stage reads them."""
    rows = []
    for s in range(12):
        for i in range(40 if s == 5 else 3 + s):
            rows.append({"shard": f"part-{(7 * s) % 12:02d}.parquet", "record_id": None if i % 9 == 0 else f"r{i % 7}",
                         "check": ["dedup.near", "dedup.exact", "privacy.pii"][i % 3], "severity": "warn",
                         "score": float(i), "detail": json.dumps({"i": i, "s": s})})
    rows += [{"shard": None, "record_id": None, "check": "distribution.drift", "severity": "info", "score": 0.5,
              "detail": "{}"}] * 2
    frame = pl.DataFrame(rows, schema=SCAN_FINDING_COLUMNS)
    paths = []
    for k, part in enumerate(frame.sample(fraction=1.0, shuffle=True, seed=1).iter_slices(60)):
        paths.append(tmp_path / f"in-{k}.parquet")
        part.write_parquet(paths[-1])
    return pl.concat([pl.scan_parquet(p) for p in paths])


@pytest.mark.parametrize("group_rows", [1, 25, 10_000])
def test_grouped_sort_writes_what_one_sort_of_all_findings_writes(tmp_path, group_rows, monkeypatch):
    from integrity.engine import outputs

    monkeypatch.setattr(outputs, "WRITE_SLICE_ROWS", 7)  # a sorted group is gathered and written in slices
    lf = _findings(tmp_path)
    out = tmp_path / f"run-{group_rows}"
    out.mkdir()
    got = pl.read_parquet(write_findings(lf, out, group_rows=group_rows))
    want = lf.sort(SORT_KEY, nulls_last=True).collect()
    assert got.schema == pl.Schema(SCAN_FINDING_COLUMNS)
    assert got.height == want.height == 2 + sum(40 if s == 5 else 3 + s for s in range(12))
    # the order of the sort key is the same; rows tied on it may come in any order (as before)
    assert got.select(SORT_KEY).equals(want.select(SORT_KEY))
    assert got.sort(got.columns, nulls_last=True).equals(want.sort(want.columns, nulls_last=True))
    assert got["shard"].tail(2).is_null().all()


def test_no_findings_writes_the_empty_table_of_the_contract(tmp_path):
    path = write_findings(pl.LazyFrame(schema=SCAN_FINDING_COLUMNS), tmp_path)
    got = pl.read_parquet(path)
    assert got.height == 0 and got.schema == pl.Schema(SCAN_FINDING_COLUMNS)
