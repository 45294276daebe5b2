"""The normalized record schema every connector produces and every check reads.

A connector maps a source's columns onto these names (see :class:`ColumnMapping`).
Only ``record_id`` is always present; the other columns appear when the source
has them. ``record_id`` is the id column's value as a string, or the row index
within the shard when the source has no id column (DESIGN.md contract).
"""
from __future__ import annotations

from dataclasses import dataclass, field, asdict
from typing import Iterator

import polars as pl
import pyarrow as pa

RECORD_ID = "record_id"
ROW = "row"  # 0-based row index within the shard, always present
TEXT_FIELDS = ("text", "prompt", "response", "caption")
#: the fields that carry a record's content: a shard with none of them has nothing to scan
CONTENT_FIELDS = (*TEXT_FIELDS, "image")

RECORD_FIELDS: dict[str, pa.DataType] = {
    RECORD_ID: pa.string(),
    ROW: pa.int64(),
    "text": pa.large_string(),
    "label": pa.string(),
    "prompt": pa.large_string(),
    "response": pa.large_string(),
    "caption": pa.large_string(),
    "image": pa.large_binary(),  # seam for the image-caption connector (WebDataset etc.)
}

FINDING_SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("record_id", pa.string()),
        ("check", pa.string()),
        ("severity", pa.string()),
        ("score", pa.float64()),
        ("detail", pa.string()),
    ]
)

#: findings.parquet's columns in Polars types (the same contract as FINDING_SCHEMA)
SCAN_FINDING_COLUMNS: dict[str, pl.DataType] = dict(pl.from_arrow(FINDING_SCHEMA.empty_table()).schema)
#: the findings a check's per-shard pass returns (the engine adds ``shard`` and ``check``)
FINDING_COLUMNS: dict[str, pl.DataType] = {c: SCAN_FINDING_COLUMNS[c] for c in ("record_id", "score", "detail",
                                                                                  "severity")}
#: the findings a corpus pass returns (the engine adds ``check``)
CORPUS_FINDING_COLUMNS: dict[str, pl.DataType] = {"shard": SCAN_FINDING_COLUMNS["shard"], **FINDING_COLUMNS}
#: examples.parquet: the findings shown with an excerpt of their record (and, for duplicates,
#: of the record they duplicate)
EXAMPLE_COLUMNS: dict[str, pl.DataType] = {
    **{c: SCAN_FINDING_COLUMNS[c] for c in ("shard", "record_id", "check", "severity", "score")},
    "field": pl.Utf8, "excerpt": pl.Utf8, "highlights": pl.Utf8, "detail": pl.Utf8,
    "representative_shard": pl.Utf8, "representative_excerpt": pl.Utf8,
}

SEVERITIES = ("info", "warn", "critical")
VERDICTS = ("pass", "warn", "quarantine", "unreadable")


@dataclass(frozen=True)
class ColumnMapping:
    """Which source column feeds each normalized field.

    ``explicit`` names the fields the user set on the command line: a missing
    explicit column is an error, a missing default column is simply absent.
    """

    id: str = "id"
    text: str = "text"
    label: str = "label"
    prompt: str = "prompt"
    response: str = "response"
    image: str = "image"
    caption: str = "caption"
    explicit: frozenset[str] = field(default_factory=frozenset)
    #: directory or URL prefix that absolute image paths and URLs must lie inside (None: only
    #: paths relative to the shard are read); see :mod:`connectors.image_paths`
    image_root: str | None = None

    def items(self) -> Iterator[tuple[str, str]]:
        """(normalized field, source column) pairs; ``id`` maps to ``record_id``."""
        for name in ("id", "text", "label", "prompt", "response", "image", "caption"):
            yield name, getattr(self, name)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["explicit"] = sorted(self.explicit)
        if d["image_root"] is None:  # not a column; left out so earlier cache keys stay valid
            del d["image_root"]
        return d


def text_columns(batch: pa.RecordBatch | pa.Table) -> list[str]:
    """The text-bearing normalized columns present in ``batch``."""
    names = set(batch.schema.names)
    return [c for c in TEXT_FIELDS if c in names]
