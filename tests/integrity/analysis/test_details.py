"""integrity.analysis.details: fields of the findings' detail JSON, parsed once per row, a slice at a time."""
from __future__ import annotations

import json

import polars as pl

from integrity.analysis import details

FIELDS = ("cluster", "group_size", "cluster_size", "representative", "history")


def test_detail_fields_equal_one_json_path_per_field_across_slices_and_odd_details(monkeypatch):
    """What one parse per row gives equals one JSON path per field, across slice boundaries, for
    missing and null details, and for details that are not flat objects (a plug-in's list or
    object at a field falls back to the paths for its slice)."""
    monkeypatch.setattr(details, "DETAIL_SLICE", 3)
    rows = [json.dumps({"cluster": f"near-{i % 4}", "cluster_size": 3 + i % 4, "representative": f"r{i}",
                        "history": i % 5 == 0, "similarity": 0.9, "matches": [{"start": 1, "end": 2}]})
            for i in range(10)]
    rows += [None, "{}", json.dumps({"cluster": {"nested": 1}, "group_size": "7"}), json.dumps({"group_size": 2.5})]
    lf = pl.LazyFrame({"shard": ["a.parquet"] * len(rows), "score": [0.5] * len(rows), "detail": rows})
    got = details.detail_fields(lf, FIELDS, keep=("shard", "score"))
    want = lf.select("shard", "score", *[pl.col("detail").str.json_path_match(f"$.{f}").alias(f"d_{f}")
                                         for f in FIELDS]).collect()
    assert got.equals(want)
    assert got["d_history"].to_list()[:6] == ["true", "false", "false", "false", "false", "true"]
    empty = details.detail_fields(lf.head(0), FIELDS, keep=("shard",))
    assert empty.height == 0 and empty.columns == ["shard", *[f"d_{f}" for f in FIELDS]]
