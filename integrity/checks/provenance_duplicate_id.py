"""``provenance.duplicate_id``: a shard whose id column is not unique.

Findings name records by ``record_id``, the id column's value; when two rows
share an id, every finding about either names the same id and a consumer
cannot tell the records apart (issue 13). This check warns once per shard:
one shard-level finding (``record_id`` null) whose detail says how many rows
repeat an earlier row's id and gives example row pairs. Per-record findings
of every per-shard check carry ``detail.row`` (the 0-based row index in the
shard, see :func:`integrity.engine.shard.with_rows`), which tells records
that share an id apart.

Ids are compared by a 64-bit hash (8 bytes per record kept until the shard
ends; a collision between different ids is ~1e-10 likely at a million
records). A shard without an id column (ids are row positions) never repeats.
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field

from connectors.schema import CONTENT_FIELDS
from integrity.checks.base import Check, CheckOptions, CheckOutput, findings_frame

RECORD_ID, ROW = "record_id", "row"


class DuplicateIdCheck(Check):
    name = "provenance.duplicate_id"
    report_section = "provenance"
    description = "a shard whose record ids are not unique (findings then need detail.row)"
    requires = CONTENT_FIELDS
    class Options(CheckOptions):
        max_examples: int = Field(5, ge=0, description="example row pairs in the finding")
    default_severity = "warn"

    def __init__(self, options=None, shard=None):
        super().__init__(options, shard)
        self._hashes: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []

    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        ids = pl.from_arrow(batch.column(RECORD_ID))
        self._hashes.append(ids.hash(seed=0).to_numpy())
        self._rows.append(batch.column(ROW).to_numpy(zero_copy_only=False))
        return CheckOutput()

    def finish_shard(self) -> CheckOutput:
        if not self._hashes:
            return CheckOutput()
        hashes, rows = np.concatenate(self._hashes), np.concatenate(self._rows)
        self._hashes, self._rows = [], []
        order = np.argsort(hashes, kind="stable")  # stable: rows of one id stay in shard order
        ordered = hashes[order]
        repeat = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1  # positions repeating the previous hash
        if repeat.size == 0:
            return CheckOutput()
        first_of = np.searchsorted(ordered, ordered[repeat])  # first row holding that hash
        distinct = np.unique(ordered[repeat]).size
        examples = [{"row": int(rows[order[r]]), "same_id_as_row": int(rows[order[f]])}
                    for r, f in zip(repeat[: self.options["max_examples"]], first_of)]
        detail = {"kind": "duplicate_record_id", "rows_repeating_an_id": int(repeat.size),
                  "ids_repeated": int(distinct), "rows": int(hashes.size), "examples": examples,
                  "hint": "findings of this shard name records by id: use detail.row to tell apart "
                          "records that share one, and make the id column unique"}
        return CheckOutput(findings=findings_frame([None], [repeat.size / hashes.size], [detail]))
