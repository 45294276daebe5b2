"""Freed heap memory goes back to the operating system between a scan's passes and stages."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from integrity.engine.memory import _malloc_trim, release_free_memory


@pytest.mark.skipif(not sys.platform.startswith("linux") or _malloc_trim() is None, reason="glibc only")
def test_free_pages_left_in_the_heap_are_returned():
    # in a fresh process: 3,000 arrays of 96 KB (below glibc's mmap threshold, so in the heap)
    # freed while a later allocation pins the heap's top; only malloc_trim returns their pages
    code = textwrap.dedent("""
        import os, numpy as np
        from integrity.engine.memory import release_free_memory
        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        blocks = [np.ones(12_000) for _ in range(3000)]
        pin = np.ones(10)
        del blocks
        before = rss()
        assert release_free_memory()
        print((before - rss()) / 2**20)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) > 150  # of the 281 MB freed


def test_without_glibc_nothing_happens(monkeypatch):
    from integrity.engine import memory

    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    assert release_free_memory() is False
