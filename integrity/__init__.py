"""corpus-integrity: the engine and the checks (plain Python, no Prefect).

The Python API is :func:`integrity.scan` (see :mod:`integrity.api`), which returns a
:class:`integrity.ScanResult`. Both are imported on first use, so ``import integrity.x``
stays cheap.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# Polars allocates through its own jemalloc, which it sets to keep freed pages for 0.5-1 s: in a
# scan, one query's memory was still resident while the next one ran, and a 16x corpus's passes
# peaked 150-300 MB higher for it (the shard stage ~70 MB). Freed pages are kept 200 ms and then
# returned (muzzy 0: no second, lazily-freed stage): the same peaks as returning them at once,
# without faulting them in again on every allocation (at once, a 16x dedup.near scan took 3.1 M
# page faults and 2.2 s longer). Polars appends this after its own defaults (the last wins). It
# counts only when set before Polars is first imported: ``integrity`` is imported first by the
# CLI, the flows and the API. A value the user exported is kept; one made only of Polars' own
# defaults is what a parent process that imported Polars passes to its children (a benchmark
# harness, a notebook starting workers), so ours goes after it.
POLARS_ALLOCATOR_OPTIONS = "dirty_decay_ms:200,muzzy_decay_ms:0"
_POLARS_OWN_OPTIONS = frozenset({"dirty_decay_ms:500", "muzzy_decay_ms:1000", "thp:always", "metadata_thp:always"})
_inherited = os.environ.get("_RJEM_MALLOC_CONF", "")
if set(filter(None, _inherited.split(","))) <= _POLARS_OWN_OPTIONS:
    os.environ["_RJEM_MALLOC_CONF"] = ",".join(filter(None, (_inherited, POLARS_ALLOCATOR_OPTIONS)))

# NumPy asks the kernel for transparent huge pages (madvise) for every array of 4 MB or more. Where
# the kernel compacts memory to fault one in (THP "defrag" set to madvise, a common default), a
# scan, which allocates and frees large arrays all the time, waits in the kernel for it: a 16x
# dedup.near scan spent ~1 s more system time (20.2 -> 18.8 s wall, medians of 5 interleaved runs)
# with the same peak. Off unless the user exported the variable; like Polars' options above it
# counts only before NumPy is first imported (and passes to worker processes started from here).
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

if TYPE_CHECKING:
    from integrity.api import ScanResult, scan

__all__ = ["ScanResult", "scan"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from integrity import api

        return getattr(api, name)
    raise AttributeError(f"module 'integrity' has no attribute {name!r}")
