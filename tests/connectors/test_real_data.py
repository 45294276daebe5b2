"""Reading the shared Debian descriptions corpus end to end (skipped when absent)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from connectors import ShardReader, list_shards
from connectors.schema import ColumnMapping

DEBIAN = Path(__file__).resolve().parents[3] / "shared" / "data" / "debian" / "descriptions.parquet"


@pytest.mark.skipif(not DEBIAN.exists(), reason=f"shared corpus not present at {DEBIAN}")
def test_debian_descriptions_read_fully():
    [ref] = list_shards(str(DEBIAN))
    reader = ShardReader(ref, ColumnMapping(), batch_size=8192)
    rows = 0
    for batch in reader:
        assert batch.num_rows <= 8192
        assert batch.schema.names == ["record_id", "row", "text"]
        assert batch.column("record_id").null_count == 0
        rows += batch.num_rows
    assert rows == reader.rows == 63_956
    assert reader.sha256 == hashlib.sha256(DEBIAN.read_bytes()).hexdigest()
