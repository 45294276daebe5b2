"""Queries over a scan's findings a group of shards at a time.

A corpus of a million records has millions of findings. An aggregation that reads their key
columns whole (a distinct count of flagged records per shard, the worst findings of each check)
holds hundreds of megabytes in the process that runs it, growing with the corpus. Most of these
aggregations are per shard, or sums of per-shard figures, so they can read the findings one group
of shards at a time: ``findings.parquet`` is sorted by shard, so a group's filter reads only its
own row groups, and memory is bounded by the group, not by the corpus.
"""
from __future__ import annotations

from typing import Callable, Iterator

import polars as pl

#: findings read at a time by :func:`collect_by_shard_groups` (a shard with more is a group of its own)
GROUP_ROWS = 100_000


def shard_groups(counts: pl.DataFrame, group_rows: int) -> list[list[str] | None]:
    """Consecutive runs of the sorted shard names (``counts``: ``shard``, ``len``) holding at most
    ``group_rows`` findings each (a bigger shard alone); ``None`` stands for the findings without
    a shard, last (as ``nulls_last`` sorts them)."""
    named = counts.filter(pl.col("shard").is_not_null()).sort("shard")
    groups: list[list[str] | None] = []
    current: list[str] = []
    rows = 0
    for shard, n in named.select("shard", "len").iter_rows():
        if current and rows + n > group_rows:
            groups.append(current)
            current, rows = [], 0
        current.append(shard)
        rows += n
    if current:
        groups.append(current)
    if counts.filter(pl.col("shard").is_null()).height:
        groups.append(None)
    return groups


def shard_group_frames(findings: pl.LazyFrame, group_rows: int = GROUP_ROWS) -> Iterator[pl.LazyFrame]:
    """``findings`` filtered to one group of shards (:func:`shard_groups`) after the other; every
    finding is in exactly one group, and every finding of a shard in the same one."""
    counts = findings.group_by("shard").len().collect(engine="streaming")
    for group in shard_groups(counts, group_rows):
        yield findings.filter(pl.col("shard").is_null() if group is None else pl.col("shard").is_in(group))


def collect_by_shard_groups(findings: pl.LazyFrame, query: Callable[[pl.LazyFrame], pl.LazyFrame],
                            group_rows: int = GROUP_ROWS) -> pl.DataFrame:
    """``query`` run on each group of shards' findings and the results concatenated: the same as
    ``query(findings)`` for a query whose rows each come from one shard (a ``group_by`` with
    ``shard`` in its key, a filter), and the parts to combine for sums of per-shard figures."""
    parts = [query(group).collect() for group in shard_group_frames(findings, group_rows)]
    return pl.concat(parts, how="vertical_relaxed") if parts else query(findings.head(0)).collect()
