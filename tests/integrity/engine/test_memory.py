"""Freed heap memory goes back to the operating system between a scan's passes and stages."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from integrity.engine.memory import _malloc_trim, release_free_memory


@pytest.mark.skipif(not sys.platform.startswith("linux") or _malloc_trim() is None, reason="glibc only")
def test_free_pages_left_in_the_heap_are_returned():
    # in a fresh process: 3,000 arrays of 96 KB (in the heap, below the mmap threshold) are freed.
    # glibc's own trimming at free() is switched off through its tunables, so that how much
    # free() hands back by itself (it varied between machines: 110-140 MB of 275) does not decide
    # the test: every freed page is then still resident, and only malloc_trim can return it.
    code = textwrap.dedent("""
        import os, numpy as np
        from integrity.engine.memory import release_free_memory
        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        start = rss()
        blocks = [np.ones(12_000) for _ in range(3000)]
        allocated = rss() - start
        del blocks
        before = rss()
        assert release_free_memory()
        print(allocated / 2**20, (before - start) / 2**20, (before - rss()) / 2**20)
    """)
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": str(2**32 - 1), "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    allocated, held_after_free, returned = map(float, out.stdout.split())
    assert allocated > 250  # 3,000 x 96 KB
    assert held_after_free > 0.9 * allocated  # free() kept the pages
    assert returned > 0.9 * allocated  # and release_free_memory gave them back


def test_without_glibc_nothing_happens(monkeypatch):
    from integrity.engine import memory

    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    assert release_free_memory() is False


def _polars_allocator_options(code: str, env: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"} | env
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout.strip()


def test_polars_returns_freed_pages_soon_in_a_scan_unless_the_user_says_otherwise():
    # the CLI's import path (flows first) and the API's (integrity) both set it before Polars
    # loads; Polars puts its own defaults first (500 / 1000 ms) and ours after them (the last wins in
    # jemalloc); a value the user exported is kept instead of ours
    show = "import os, polars; print(os.environ.get('_RJEM_MALLOC_CONF'))"
    ours = ",dirty_decay_ms:200,muzzy_decay_ms:0"
    assert _polars_allocator_options("import flows.cli; " + show, {}).endswith(ours)
    assert _polars_allocator_options("import integrity; " + show, {}).endswith(ours)
    user = _polars_allocator_options("import integrity; " + show, {"_RJEM_MALLOC_CONF": "narenas:2"})
    assert user.endswith(",narenas:2") and ours not in user
    # what a parent that imported Polars (without integrity first) hands its children is Polars'
    # defaults, not a user's choice: ours goes after it
    inherited = _polars_allocator_options("import polars, os; print(os.environ['_RJEM_MALLOC_CONF'])", {})
    assert ours.strip(",") not in inherited
    child = _polars_allocator_options("import integrity; " + show, {"_RJEM_MALLOC_CONF": inherited})
    assert child.endswith(ours)


def test_numpy_does_not_ask_for_huge_pages_in_a_scan_unless_the_user_says_otherwise():
    # the CLI's and the API's import paths set it before NumPy loads; a value the user exported is kept
    show = "import numpy._core.multiarray as m; print(m._get_madvise_hugepage())"
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}

    def huge_pages(code: str, **extra: str) -> str:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env=env | extra).stdout.strip()

    if huge_pages(show) != "True":  # NumPy's own default without integrity: on where the kernel has THP
        pytest.skip("NumPy does not ask for huge pages on this platform")
    assert huge_pages("import flows.cli; " + show) == "False"
    assert huge_pages("import integrity; " + show) == "False"
    assert huge_pages("import integrity; " + show, NUMPY_MADVISE_HUGEPAGE="1") == "True"
