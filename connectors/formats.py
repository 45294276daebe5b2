"""Which file names are shards, and of which format.

A shard file's name ends with a *format suffix*, optionally followed by a
*compression suffix* (``data.jsonl.zst``). Adding a format is one line in
:data:`FORMAT_SUFFIXES` plus a reader registered with
:func:`connectors.registry.register_reader`.

Hugging Face ``datasets`` directories (``save_to_disk`` layout) are shards of
format ``hf_dataset``; they are recognised by their files, not by a suffix.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass

PARQUET = "parquet"
JSONL = "jsonl"
CSV = "csv"
HF_DATASET = "hf_dataset"
WEBDATASET = "webdataset"  # tar of image + caption samples (connectors.webdataset_format)

# format suffix -> format
FORMAT_SUFFIXES: dict[str, str] = {
    ".parquet": PARQUET,
    ".jsonl": JSONL,
    ".json": JSONL,
    ".ndjson": JSONL,
    ".csv": CSV,
    ".tar": WEBDATASET,
}

# compression suffix -> codec name understood by connectors.streams
COMPRESSION_SUFFIXES: dict[str, str] = {
    ".gz": "gzip",
    ".zst": "zstd",
}

# formats that may carry a compression suffix (Parquet compresses internally)
COMPRESSIBLE = frozenset({JSONL, CSV})

# files that make a directory a `datasets` save_to_disk layout
HF_STATE = "state.json"
HF_INFO = "dataset_info.json"
HF_DICT = "dataset_dict.json"
HF_METADATA = frozenset({HF_STATE, HF_INFO, HF_DICT})


@dataclass(frozen=True)
class FileFormat:
    """Format and compression of one shard file."""

    format: str
    compression: str | None = None


def detect_format(path: str) -> FileFormat | None:
    """The format of ``path`` from its suffixes, or ``None`` when it is not a shard."""
    name = posixpath.basename(path.rstrip("/")).lower()
    compression = None
    for suffix, codec in COMPRESSION_SUFFIXES.items():
        if name.endswith(suffix):
            name, compression = name[: -len(suffix)], codec
            break
    for suffix, fmt in FORMAT_SUFFIXES.items():
        if name.endswith(suffix) and len(name) > len(suffix):
            if compression is not None and fmt not in COMPRESSIBLE:
                return None
            return FileFormat(fmt, compression)
    return None


def known_suffixes() -> list[str]:
    """Every file suffix that :func:`detect_format` accepts, for error messages."""
    out = list(FORMAT_SUFFIXES)
    for fsuffix, fmt in FORMAT_SUFFIXES.items():
        if fmt in COMPRESSIBLE:
            out.extend(fsuffix + c for c in COMPRESSION_SUFFIXES)
    return out


def is_hf_dataset_dir(file_names: set[str]) -> bool:
    """Whether a directory holding ``file_names`` is a ``Dataset.save_to_disk`` layout.

    The layout is ``state.json`` plus ``dataset_info.json`` and/or ``*.arrow``
    files (an empty dataset has no ``.arrow`` file).
    """
    if HF_STATE not in file_names:
        return False
    return HF_INFO in file_names or any(n.endswith(".arrow") for n in file_names)
