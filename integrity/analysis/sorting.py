"""A compiled stable sort of 64-bit hash keys (numba), for the indexes of hashed keys.

NumPy's stable ``argsort`` of uint64 is a timsort; on tens of millions of hashed keys
(the dedup history's band keys: 20 per record) it is several CPU seconds. Hashed keys
are close to uniform, so :func:`stable_sort_u64` scatters them by their top bits into
buckets of about 16 keys (a counting sort: stable), then sorts each bucket by
insertion (stable; a large bucket, such as many copies of one key, by a stable merge
sort). It returns what ``np.argsort(keys, kind="stable")`` gives, plus the sorted keys
(one gather less for the caller), about 3x faster on 20 M keys. Keys that are not
uniform (small integers) are still sorted correctly, only no faster than NumPy.

It lives in :mod:`integrity.analysis` itself, not in the dedup or history package, so
that both may use it without importing each other. Without numba, NumPy's stable
argsort runs (the same result).
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np

try:  # numba is a dependency; without it NumPy's stable argsort runs (same result, slower)
    from numba import njit
    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    HAVE_NUMBA = False

    def njit(*args, **kwargs):  # type: ignore[no-redef]
        return (lambda f: f) if not args or not callable(args[0]) else args[0]

#: below this many keys NumPy's own stable argsort is as fast (and needs no compiled code)
MIN_COMPILED = 4096
#: buckets of at most this many keys are sorted by insertion, larger ones by a merge sort
_INSERTION_MAX = 48


@njit(cache=True)
def _insertion_sort_run(out, order, lo, hi):
    """Stable sort of ``out[lo:hi]`` (and ``order`` alike): insertion for a few keys, a
    merge sort (numba's is stable) for a large run such as many copies of one key."""
    if hi - lo < 2:
        return
    if hi - lo <= _INSERTION_MAX:
        for i in range(lo + 1, hi):
            k = out[i]
            o = order[i]
            j = i - 1
            while j >= lo and out[j] > k:  # strictly greater: equal keys keep their order
                out[j + 1] = out[j]
                order[j + 1] = order[j]
                j -= 1
            out[j + 1] = k
            order[j + 1] = o
    else:
        sub = np.argsort(out[lo:hi], kind="mergesort")
        out[lo:hi] = out[lo:hi][sub]
        order[lo:hi] = order[lo:hi][sub]


@njit(cache=True)
def _count_top(keys, shift, starts):
    """Add the count of each top-bits bucket (``keys >> shift``) of ``keys`` to ``starts[b + 1]``."""
    for i in range(keys.shape[0]):
        starts[np.int64(keys[i] >> shift) + 1] += 1


@njit(cache=True)
def _scatter_top(keys, shift, fill, end, out, order, base):
    """Scatter ``keys`` (the keys ``base``, ``base + 1``, ... of the whole input) stably into
    their top-bits buckets of ``out``, their input positions into ``order``; ``fill`` holds
    each bucket's next free place and is advanced, ``end`` its end. Returns False (and stops)
    when a bucket would overflow: keys other than the ones counted."""
    for i in range(keys.shape[0]):
        b = np.int64(keys[i] >> shift)
        p = fill[b]
        if p >= end[b]:
            return False
        order[p] = base + i
        out[p] = keys[i]
        fill[b] = p + 1
    return True


@njit(cache=True)
def _sort_runs(out, order, starts, bits, b1):
    """Finish the sort of keys scattered on their top ``b1`` bits (runs ``starts``): each run
    sorted stably, after a second scatter on the next ``bits - b1`` bits when ``bits`` > ``b1``.

    The scatter goes in two rounds when ``bits`` > 8: first on the top 8 bits into 256 runs
    (:func:`_count_top`, :func:`_scatter_top`), then here each run (about n / 256 keys: in
    cache) on the next ``bits - 8``. One round over 2**21 buckets wrote every key to a random
    place in memory (a cache miss each); two rounds write to at most a few thousand places at
    a time and are about 2x faster. The second round copies one run at a time into a small
    buffer and scatters it back, so the sort needs no second pair of arrays of the whole input."""
    nb1 = starts.shape[0] - 1
    if b1 == bits:
        for b in range(nb1):
            _insertion_sort_run(out, order, starts[b], starts[b + 1])
        return
    longest = 0
    for r in range(nb1):
        longest = max(longest, starts[r + 1] - starts[r])
    buf_k = np.empty(longest, dtype=np.uint64)
    buf_o = order[:longest].copy()  # of order's type
    b2 = bits - b1
    shift2 = np.uint64(64 - bits)
    nb2 = 1 << b2
    mask2 = np.uint64(nb2 - 1)
    sub = np.zeros(nb2 + 1, dtype=np.int64)
    fill2 = np.empty(nb2, dtype=np.int64)
    for r in range(nb1):
        lo = starts[r]
        hi = starts[r + 1]
        if hi - lo < 2:
            continue
        sub[:] = 0
        for i in range(lo, hi):
            buf_k[i - lo] = out[i]
            buf_o[i - lo] = order[i]
            sub[np.int64((out[i] >> shift2) & mask2) + 1] += 1
        for b in range(nb2):
            sub[b + 1] += sub[b]
        for b in range(nb2):
            fill2[b] = lo + sub[b]
        for i in range(hi - lo):
            b = np.int64((buf_k[i] >> shift2) & mask2)
            p = fill2[b]
            out[p] = buf_k[i]
            order[p] = buf_o[i]
            fill2[b] = p + 1
        for b in range(nb2):
            _insertion_sort_run(out, order, lo + sub[b], lo + sub[b + 1])


def _sort_bits(n: int) -> int:
    # about 16 keys a bucket: the insertion sorts stay in cache, the bucket counts too (<= 32 MB)
    return int(min(22, max(8, n.bit_length() - 4)))


def _order_dtype(order_dtype: np.dtype | type, n: int) -> np.dtype:
    order_dtype = np.dtype(order_dtype)
    if order_dtype not in (np.dtype(np.int64), np.dtype(np.uint32)) or (
            order_dtype == np.uint32 and n >= 2**32):
        raise ValueError(f"order_dtype must be int64, or uint32 for fewer than 2**32 keys (got {order_dtype})")
    return order_dtype


def stable_sort_u64(keys: np.ndarray, order_dtype: np.dtype | type = np.int64) -> tuple[np.ndarray, np.ndarray]:
    """``(keys[order], order)`` with ``order = np.argsort(keys, kind="stable")``: equal keys
    keep their input order. ``keys`` is read as uint64; ``order`` is ``order_dtype`` (int64,
    or uint32 for fewer than 2**32 keys: half the memory)."""
    keys = np.ascontiguousarray(keys, dtype=np.uint64)
    n = len(keys)
    order_dtype = _order_dtype(order_dtype, n)
    if not HAVE_NUMBA or n < MIN_COMPILED:
        order = np.argsort(keys, kind="stable")
        return keys[order], order.astype(order_dtype, copy=False)
    return stable_sort_u64_parts(lambda: (keys,), n, order_dtype)  # one part, in memory already


def stable_sort_u64_parts(parts: Callable[[], Iterable[np.ndarray]], n: int,
                          order_dtype: np.dtype | type = np.int64) -> tuple[np.ndarray, np.ndarray]:
    """:func:`stable_sort_u64` of the concatenation of the arrays ``parts()`` yields (``n`` keys
    in all), without that concatenation: ``parts`` is called twice, once to count the keys of
    each top-bits bucket and once to scatter them into place, so memory holds the sorted keys,
    their order and one part, not the input keys as well (at 20 M band keys, 160 MB less).
    Raises ValueError when the parts hold other than ``n`` keys."""
    order_dtype = _order_dtype(order_dtype, n)

    def each() -> Iterator[np.ndarray]:
        seen = 0
        for part in parts():
            part = np.ascontiguousarray(part, dtype=np.uint64).ravel()
            seen += len(part)
            if seen > n:
                break
            yield part
        if seen != n:
            raise ValueError(f"the parts hold {seen}{'+' if seen > n else ''} keys, not the {n} given")

    if not HAVE_NUMBA or n < MIN_COMPILED:
        return stable_sort_u64(np.concatenate([np.zeros(0, np.uint64), *each()]), order_dtype)
    bits = _sort_bits(n)
    b1 = min(bits, 8)
    shift1 = np.uint64(64 - b1)
    starts = np.zeros((1 << b1) + 1, dtype=np.int64)
    for part in each():
        _count_top(part, shift1, starts)
    np.cumsum(starts, out=starts)
    out, order = np.empty(n, dtype=np.uint64), np.empty(n, dtype=order_dtype)
    fill, base = starts[:-1].copy(), 0
    for part in each():
        if not _scatter_top(part, shift1, fill, starts[1:], out, order, base):
            raise ValueError("the parts changed between their two readings")
        base += len(part)
    _sort_runs(out, order, starts, bits, b1)
    return out, order


@njit(cache=True)
def insertion_sort(x, lo, hi):
    """Sort ``x[lo:hi]`` in place by insertion (stable): for runs of a few values."""
    for i in range(lo + 1, hi):
        k = x[i]
        j = i - 1
        while j >= lo and x[j] > k:
            x[j + 1] = x[j]
            j -= 1
        x[j + 1] = k


@njit(cache=True)
def _sort_unique_run(tmp, lo, hi, out, m):
    """Sort ``tmp[lo:hi]`` and append its values not yet at ``out[m - 1]`` to ``out``; returns m."""
    if hi - lo > _INSERTION_MAX:
        tmp[lo:hi] = np.sort(tmp[lo:hi])
    else:
        insertion_sort(tmp, lo, hi)
    for i in range(lo, hi):
        if m == 0 or tmp[i] != out[m - 1]:
            out[m] = tmp[i]
            m += 1
    return m


@njit(cache=True)
def _trimmed(out, m):
    """``out[:m]``, copied when that frees at least a quarter of ``out`` (a view would keep all
    of it alive: the distinct pair codes are often a fraction of the codes)."""
    if 4 * m < 3 * out.shape[0]:
        return out[:m].copy()
    return out[:m]


@njit(cache=True)
def _bucket_unique(x, shift, nb):
    """The distinct values of non-negative int64 ``x``, ascending: counting scatter on
    ``x >> shift`` (``nb`` buckets), then each bucket sorted and its repeats dropped. As in
    :func:`stable_sort_u64` (:func:`_sort_runs`), the scatter goes in two cache-friendly rounds (256 runs on the
    top bits of the bucket number, then each run on the rest) when ``nb`` > 256."""
    n = x.shape[0]
    top = 0
    while (nb - 1) >> top > 255:
        top += 1
    nb1 = ((nb - 1) >> top) + 1
    starts = np.zeros(nb1 + 1, dtype=np.int64)
    for i in range(n):
        starts[(x[i] >> (shift + top)) + 1] += 1
    for b in range(nb1):
        starts[b + 1] += starts[b]
    fill = starts[:-1].copy()
    tmp = np.empty(n, dtype=np.int64)
    for i in range(n):
        b = x[i] >> (shift + top)
        tmp[fill[b]] = x[i]
        fill[b] += 1
    out = np.empty(n, dtype=np.int64)
    m = 0
    if top == 0:
        for b in range(nb1):
            m = _sort_unique_run(tmp, starts[b], starts[b + 1], out, m)
        return _trimmed(out, m)
    nb2 = 1 << top
    mask2 = nb2 - 1
    sub = np.zeros(nb2 + 1, dtype=np.int64)
    fill2 = np.empty(nb2, dtype=np.int64)
    longest = 0
    for r in range(nb1):
        longest = max(longest, starts[r + 1] - starts[r])
    buf = np.empty(longest, dtype=np.int64)  # one run at a time: no third array of the input's size
    for r in range(nb1):
        lo = starts[r]
        hi = starts[r + 1]
        if hi - lo < 2:
            m = _sort_unique_run(tmp, lo, hi, out, m)
            continue
        sub[:] = 0
        for i in range(lo, hi):
            sub[((tmp[i] >> shift) & mask2) + 1] += 1
        for b in range(nb2):
            sub[b + 1] += sub[b]
        for b in range(nb2):
            fill2[b] = sub[b]
        for i in range(lo, hi):
            b = (tmp[i] >> shift) & mask2
            buf[fill2[b]] = tmp[i]
            fill2[b] += 1
        for b in range(nb2):
            m = _sort_unique_run(buf, sub[b], sub[b + 1], out, m)
    return _trimmed(out, m)


def sorted_unique_i64(x: np.ndarray) -> np.ndarray:
    """``np.unique(x)`` of non-negative integers (int64 out), by a compiled bucket sort:
    about 2x faster than NumPy's sort on tens of millions of pair codes."""
    x = np.ascontiguousarray(x, dtype=np.int64)
    n = len(x)
    if not HAVE_NUMBA or n < MIN_COMPILED or int(x.min()) < 0:
        x = np.sort(x)
        return x[np.concatenate(([True], x[1:] != x[:-1]))] if n else x
    bits = int(min(22, max(8, n.bit_length() - 4)))
    shift = max(0, int(x.max()).bit_length() - bits)
    return _bucket_unique(x, shift, (int(x.max()) >> shift) + 1)
