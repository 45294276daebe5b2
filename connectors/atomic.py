"""Atomic writes of local output files: a failed write leaves neither the file nor its temporary.

Used for every file of a run directory (the engine's outputs, the report), so a
full disk or a read-only directory gives one clear :class:`OutputError` naming
the file instead of a truncated output.
"""
from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

import polars as pl

DISK_FULL_BYTES = 1 << 20  # a failed write with less free space than this was a full disk


class OutputError(Exception):
    """An output file could not be written (a full disk, a read-only run directory, ...).
    The message names the file; nothing half-written is left behind."""


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` when the block
    succeeds, delete it when it fails (a full disk leaves no truncated output)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        with suppress(OSError):
            tmp.unlink()
        if isinstance(e, (OSError, pl.exceptions.PolarsError)) and not isinstance(e, OutputError):
            raise OutputError(f"{path}: could not be written ({_why(e, path)}); {_fix(e, path)}") from e
        raise


def _disk_full(e: BaseException, path: Path) -> bool:
    # polars reports a full disk as e.g. "Invalid thrift: transport error": ask the disk
    if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(path.parent).free < DISK_FULL_BYTES
    except OSError:
        return False


def _why(e: BaseException, path: Path) -> str:
    if _disk_full(e, path):
        return "no space left on the device"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _fix(e: BaseException, path: Path) -> str:
    if _disk_full(e, path):
        return "free space on that disk (or choose another --out) and run the scan again"
    return "check that the run directory is writable and run the scan again"
