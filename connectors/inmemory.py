"""Sources that live in memory (Hugging Face ``datasets`` objects, Polars and pandas data
frames) written as Parquet shards, and ``hf://datasets/...`` splits resolved to the files
that hold them, so the scan reads them like any other source.

Nothing here imports ``datasets`` or pandas at module level: objects are recognized by
their type's module and name, and each kind is streamed batch by batch (an
``IterableDataset`` is never materialized).
"""
from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.errors import SourceError

#: records per staged Parquet shard (one shard is one task of the scan)
ROWS_PER_SHARD = 100_000
_BATCH = 10_000


def kind_of(obj: Any) -> str | None:
    """``"dataset"``, ``"dataset_dict"``, ``"iterable"``, ``"iterable_dict"``, ``"polars"``,
    ``"polars_lazy"``, ``"pandas"``, ``"arrow"``, or None for anything else (a path)."""
    mod = type(obj).__module__.split(".")[0]
    name = type(obj).__name__
    return {
        ("datasets", "Dataset"): "dataset",
        ("datasets", "DatasetDict"): "dataset_dict",
        ("datasets", "IterableDataset"): "iterable",
        ("datasets", "IterableDatasetDict"): "iterable_dict",
        ("polars", "DataFrame"): "polars",
        ("polars", "LazyFrame"): "polars_lazy",
        ("pandas", "DataFrame"): "pandas",
        ("pyarrow", "Table"): "arrow",
    }.get((mod, name))


def select_split(obj: Any, split: str | None) -> Any:
    """One split of a ``DatasetDict``/``IterableDatasetDict`` (``split`` is required when there are
    several); other objects are returned as they are (a ``split`` given for them must be None)."""
    kind = kind_of(obj)
    if kind in ("dataset_dict", "iterable_dict"):
        names = list(obj.keys())
        if split is None:
            if len(names) == 1:
                return obj[names[0]]
            raise SourceError(f"the source is a {type(obj).__name__} with splits {', '.join(names)}: "
                              f"choose one with split=, e.g. split={names[0]!r}")
        if split not in obj:
            raise SourceError(f"split {split!r} is not in the {type(obj).__name__}; its splits: {', '.join(names)}")
        return obj[split]
    if split is not None and kind is not None:
        raise SourceError(f"split={split!r} was given, but the source is a {type(obj).__name__}, which has no "
                          f"splits; leave split out")
    return obj


def _batches(obj: Any) -> Iterator[pa.RecordBatch]:
    """The object's rows as Arrow record batches, streamed."""
    kind = kind_of(obj)
    if kind == "dataset":
        # the Arrow table behind the dataset (memory-mapped cache files), in its current row order
        table = obj.with_format("arrow")
        for start in range(0, len(obj), _BATCH):
            yield from table[start:start + _BATCH].to_batches()
    elif kind == "iterable":
        for chunk in obj.iter(batch_size=_BATCH):
            yield pa.RecordBatch.from_pydict(dict(chunk))
    elif kind == "polars":
        yield from obj.to_arrow().to_batches(max_chunksize=_BATCH)
    elif kind == "polars_lazy":
        for frame in obj.collect_batches(chunk_size=_BATCH) if hasattr(obj, "collect_batches") else [obj.collect()]:
            yield from frame.to_arrow().to_batches(max_chunksize=_BATCH)
    elif kind == "pandas":
        for start in range(0, len(obj), _BATCH):
            yield pa.RecordBatch.from_pandas(obj.iloc[start:start + _BATCH], preserve_index=False)
    elif kind == "arrow":
        yield from obj.to_batches(max_chunksize=_BATCH)
    else:
        raise SourceError(f"cannot scan a {type(obj).__module__}.{type(obj).__name__} object: give a path or URL, "
                          f"a datasets Dataset/DatasetDict/IterableDataset, or a Polars or pandas DataFrame")


def stage(obj: Any, root: str | Path, rows_per_shard: int = ROWS_PER_SHARD) -> Path:
    """Write ``obj`` (see :func:`kind_of`) as Parquet shards ``part-00000.parquet``, ... into a
    directory below ``root`` named by the SHA-256 of what was written, and return it.

    The same rows give the same directory and bytes, so a later scan of the same data reuses
    its cached per-shard results. Raises :class:`SourceError` for an object with no rows.
    """
    root = Path(root)
    tmp = root / f".staging-{uuid.uuid4().hex[:12]}"
    tmp.mkdir(parents=True)
    try:
        rows, digest = _write_shards(_batches(obj), tmp, rows_per_shard)
        if rows == 0:
            raise SourceError(f"the {type(obj).__name__} has no rows: nothing to scan")
        final = root / f"staged-{digest[:16]}"
        if final.exists():  # the same rows were staged before: keep those files (and their cache entries)
            shutil.rmtree(tmp)
        else:
            tmp.rename(final)
        return final
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _write_shards(batches: Iterator[pa.RecordBatch], out: Path, rows_per_shard: int) -> tuple[int, str]:
    h = hashlib.sha256()
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    total = in_shard = part = 0
    try:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if schema is None:
                schema = batch.schema
            elif batch.schema != schema:  # later chunks of an iterable may infer other types
                batch = pa.Table.from_batches([batch]).cast(schema).to_batches()[0]
            offset = 0
            while offset < batch.num_rows:
                if writer is None:
                    writer = pq.ParquetWriter(out / f"part-{part:05d}.parquet", schema)
                n = min(batch.num_rows - offset, rows_per_shard - in_shard)
                writer.write_batch(batch.slice(offset, n))
                offset += n
                in_shard += n
                total += n
                if in_shard == rows_per_shard:
                    writer.close()
                    writer, in_shard, part = None, 0, part + 1
    finally:
        if writer is not None:
            writer.close()
    for f in sorted(out.glob("part-*.parquet")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return total, h.hexdigest()


def hub_split_source(url: str, split: str, storage_options: dict | None = None) -> str:
    """The glob of the files of one split of a ``hf://datasets/OWNER/NAME[@REV]/...`` repository,
    by the Hub's naming conventions: the split in the file name (``data/train-00000-of-00002.parquet``,
    ``train.jsonl``) or as a directory (``train/...``). Raises :class:`SourceError` naming the
    files there are when neither matches."""
    import fsspec

    base = url.rstrip("/")
    fs, path = fsspec.core.url_to_fs(base, **(storage_options or {}))
    for pattern in (f"{base}/**/{split}[-._0-9]*", f"{base}/{split}[-._0-9]*", f"{base}/**/{split}/**",
                    f"{base}/{split}/**"):
        _, pat = fsspec.core.url_to_fs(pattern, **(storage_options or {}))
        if any(fs.isfile(p) for p in fs.glob(pat)):
            return pattern
    try:
        files = sorted(p[len(path):].lstrip("/") for p in fs.find(path))
    except (FileNotFoundError, OSError) as e:
        raise SourceError(f"{url}: cannot list the repository ({e}); check the name and your Hub access") from e
    shown = ", ".join(files[:12]) + (" ..." if len(files) > 12 else "")
    raise SourceError(f"{url}: no files of split {split!r} (looked for {split}-*, {split}.*, {split}/...); "
                      f"files there: {shown or 'none'}")
