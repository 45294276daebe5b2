"""Handing freed memory back to the operating system between the steps of a scan.

The corpus passes, the policy and the report each build large NumPy arrays and frames for a
moment and free them. glibc keeps what a process freed in its heap for reuse, and after a few
passes over millions of findings several hundred megabytes of a process's resident memory are
free pages no step is using: the flow process of an inline scan grew this way from one stage to
the next. :func:`release_free_memory` returns them (``malloc_trim``); it is called between passes
and stages, where nothing large is live.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return the C heap's free pages to the operating system; True when there was a C library
    to ask (glibc), False elsewhere (nothing happens)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
