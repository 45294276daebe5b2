"""Fixtures for the connectors tests: real shard files of every format in tmp_path."""
from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from types import SimpleNamespace

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

RECORDS = [
    {"id": 100 + i, "text": f"record number {i} about rivers", "label": i % 2}
    for i in range(7)
]
RECORDS[3]["label"] = None  # nulls stay nulls


def _jsonl_bytes(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def write_jsonl(path: Path, records: list[dict], codec: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _jsonl_bytes(records)
    if codec == "gzip":
        data = gzip.compress(data)
    elif codec == "zstd":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def write_parquet(path: Path, records: list[dict], row_group_size: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=row_group_size)
    return path


def write_csv(path: Path, records: list[dict], codec: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    data = buf.getvalue().encode()
    path.write_bytes(gzip.compress(data) if codec == "gzip" else data)
    return path


def write_hf(path: Path, columns: dict[str, list]) -> Path:
    import datasets

    datasets.disable_progress_bars()
    datasets.Dataset.from_dict(columns).save_to_disk(str(path))
    return path


def write_hf_dict(path: Path, splits: dict[str, dict[str, list]]) -> Path:
    import datasets

    datasets.disable_progress_bars()
    datasets.DatasetDict({k: datasets.Dataset.from_dict(v) for k, v in splits.items()}).save_to_disk(str(path))
    return path


@pytest.fixture
def w() -> SimpleNamespace:
    """Writers for every format (``w.jsonl``, ``w.parquet``, ``w.csv``, ``w.hf``, ``w.hf_dict``)."""
    return SimpleNamespace(jsonl=write_jsonl, parquet=write_parquet, csv=write_csv,
                           hf=write_hf, hf_dict=write_hf_dict, jsonl_bytes=_jsonl_bytes)


@pytest.fixture
def records() -> list[dict]:
    return [dict(r) for r in RECORDS]


@pytest.fixture
def memfs():
    """A clean fsspec memory file system (global state, so wiped before and after)."""
    fs = fsspec.filesystem("memory")
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")
    yield fs
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")
