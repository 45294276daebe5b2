"""Connectors: list shards and read them as Arrow batches in the normalized schema.

Reading side (this package's public API)::

    from connectors import list_shards, ShardReader
    for ref in list_shards("s3://bucket/corpus/**/*.jsonl.zst"):
        reader = ShardReader(ref, ColumnMapping())
        for batch in reader:          # pyarrow.RecordBatch, normalized schema
            ...
        reader.sha256, reader.rows, reader.bytes

Storage writes (quarantine moves, cleaned shards) live in ``connectors.storage``.
"""
from connectors.errors import ConnectorError, ShardReadError, SourceError
from connectors.formats import detect_format, known_suffixes
from connectors.listing import ShardRef, list_shards
from connectors.readers import ShardReader, read_rows, read_shard
from connectors.registry import ReadContext, register_reader, registered_formats
from connectors.streams import hash_shard

__all__ = [
    "ConnectorError",
    "ReadContext",
    "ShardReadError",
    "ShardReader",
    "ShardRef",
    "SourceError",
    "detect_format",
    "hash_shard",
    "known_suffixes",
    "list_shards",
    "read_rows",
    "read_shard",
    "register_reader",
    "registered_formats",
]
