"""Limits that keep reading hostile or broken shards bounded in memory and time.

A shard past any limit is refused with a :class:`connectors.errors.ShardReadError`
that names the limit (its policy key under ``limits:``) and what to do, so the
scan reports it ``unreadable`` and goes on with the other shards. Every limit is
checked while streaming, before the bytes it guards are held in memory:

* ``max_shard_bytes``: content bytes of one shard once decompressed (the
  decompressed stream of a ``.gz``/``.zst`` file, a plain file's bytes, a
  Parquet file's uncompressed column data as its metadata states it);
* ``max_record_bytes``: one record (a JSON line, a CSV row, one Parquet /
  Arrow cell, one tar member);
* ``max_expansion_ratio``: decompressed bytes per compressed byte read so far,
  checked once ``ratio_grace_bytes`` have been decompressed (so a small,
  highly compressible file is never refused for its ratio alone);
* ``max_json_depth``: nesting of ``[`` / ``{`` in a JSON line. pyarrow's JSON
  parser crashes the process (SIGSEGV) on lines nested some thousands deep and
  the stdlib parser raises ``RecursionError``, so deeper lines are refused by a
  vectorized pre-scan before any parser sees them.

The pixel budget of decoded images is ``image.decode``'s ``max_pixels`` option.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

GIB = 1 << 30
MIB = 1 << 20


@dataclass(frozen=True)
class ReadLimits:
    """Read limits of one scan (the policy's ``limits:`` section)."""

    max_shard_bytes: int = 64 * GIB
    max_record_bytes: int = 64 * MIB
    max_expansion_ratio: float = 200.0
    ratio_grace_bytes: int = 16 * MIB
    max_json_depth: int = 100

    def to_dict(self) -> dict:
        """Plain dict (for cache keys and summaries)."""
        return asdict(self)


DEFAULT_LIMITS = ReadLimits()


def human_bytes(n: float) -> str:
    """``n`` bytes as a short human figure (``64 MiB``, ``1.5 GiB``)."""
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{int(n)} bytes"
