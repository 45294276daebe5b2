"""The compiled stable sort of hash keys against NumPy's stable argsort."""
from __future__ import annotations

import numpy as np
import pytest

from integrity.analysis import sorting
from integrity.analysis.sorting import stable_sort_u64, stable_sort_u64_parts


def hashed_keys(n: int, distinct: int, seed: int = 0) -> np.ndarray:
    """``n`` hash-like keys drawn from ``distinct`` values (so most keys repeat: copies of
    a record share their band keys), with the full 64-bit range used."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**64 - 1, distinct, dtype=np.uint64, endpoint=True)
    return values[rng.integers(0, distinct, n)]


@pytest.mark.parametrize("keys", [
    hashed_keys(200_000, 60_000),                       # many ties, spread over every bucket
    hashed_keys(100_000, 100_000, seed=1),              # almost all distinct
    np.full(50_000, 7, dtype=np.uint64),                # one key: one bucket, one merge sort
    np.arange(60_000, 0, -1, dtype=np.uint64),          # small integers: all in the first bucket
    np.concatenate([hashed_keys(30_000, 5_000), np.full(20_000, 2**64 - 1, dtype=np.uint64),
                    np.zeros(10_000, dtype=np.uint64)]),  # extremes and a skewed bucket
    hashed_keys(1000, 300),                             # small: NumPy's own sort
    np.zeros(0, dtype=np.uint64),
], ids=["ties", "distinct", "one-key", "small-ints", "skewed", "small", "empty"])
def test_equals_numpy_stable_argsort(keys):
    out, order = stable_sort_u64(keys)
    expected = np.argsort(keys, kind="stable")
    assert order.dtype == np.int64
    np.testing.assert_array_equal(order, expected)
    np.testing.assert_array_equal(out, keys[expected])


@pytest.mark.parametrize("n", [0, 1000, 200_000])
def test_uint32_order_equals_the_int64_one(n):
    """``order_dtype=np.uint32`` (half the memory of a sort of tens of millions of keys) gives
    the same order, on the compiled path and on NumPy's; an order type that cannot hold it is refused."""
    keys = hashed_keys(n, max(1, n // 3), seed=7)
    out, order = stable_sort_u64(keys, order_dtype=np.uint32)
    assert order.dtype == np.uint32
    np.testing.assert_array_equal(order, np.argsort(keys, kind="stable"))
    np.testing.assert_array_equal(out, np.sort(keys))
    with pytest.raises(ValueError, match="order_dtype"):
        stable_sort_u64(keys, order_dtype=np.int32)


def test_large_buckets_use_the_stable_merge_sort():
    """Buckets above the insertion limit (many keys sharing their top bits) stay stable."""
    rng = np.random.default_rng(3)
    top = rng.integers(0, 4, 80_000, dtype=np.uint64) << np.uint64(60)   # 4 crowded buckets
    keys = top | rng.integers(0, 1000, 80_000, dtype=np.uint64)          # ties inside them
    out, order = stable_sort_u64(keys)
    np.testing.assert_array_equal(order, np.argsort(keys, kind="stable"))
    _, order32 = stable_sort_u64(keys, order_dtype=np.uint32)
    np.testing.assert_array_equal(order32, order)


def test_without_numba_the_numpy_path_gives_the_same(monkeypatch):
    keys = hashed_keys(20_000, 4_000, seed=2)
    compiled = stable_sort_u64(keys)
    monkeypatch.setattr(sorting, "HAVE_NUMBA", False)
    plain = stable_sort_u64(keys)
    np.testing.assert_array_equal(compiled[1], plain[1])
    np.testing.assert_array_equal(compiled[0], plain[0])


@pytest.mark.parametrize("x", [
    np.random.default_rng(4).integers(0, 10**6, 200_000) * 1_000_003 + np.random.default_rng(5).integers(0, 99, 200_000),
    np.random.default_rng(6).integers(0, 50, 100_000),          # few values: large buckets, the sort inside
    np.full(10_000, 2**62, dtype=np.int64),
    np.arange(5000)[::-1].copy(),
    np.array([3, -1, 3, 2] * 2000),                            # negative: NumPy's path
    np.array([5, 5, 1]),
], ids=["pair-codes", "few-values", "one-value", "descending", "negative", "tiny"])
def test_sorted_unique_equals_numpy(x):
    got = sorting.sorted_unique_i64(x)
    np.testing.assert_array_equal(got, np.unique(x))
    assert got.dtype == np.int64


@pytest.mark.parametrize("n", [0, 100, 50_000, 300_000])
def test_sorting_parts_read_twice_equals_sorting_their_concatenation(n):
    """stable_sort_u64_parts never holds the input keys whole: it reads the parts twice (count,
    then scatter) and gives what the sort of their concatenation gives, duplicates in order."""
    rng = np.random.default_rng(n)
    keys = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    keys[::7] = keys[0] if n else 0  # many copies of one key, and equal keys across parts
    cuts = sorted(rng.integers(0, n + 1, size=5).tolist()) if n else []
    parts = np.split(keys, cuts)
    reads = []

    def read():
        reads.append(1)
        return iter(parts)

    got_keys, got_order = stable_sort_u64_parts(read, n, order_dtype=np.uint32)
    want_order = np.argsort(keys, kind="stable")
    assert np.array_equal(got_keys, keys[want_order]) and np.array_equal(got_order, want_order)
    assert got_order.dtype == np.uint32
    assert len(reads) == (2 if n >= 4096 else 1)


def test_sorting_parts_that_hold_other_keys_than_counted_is_an_error():
    keys = np.random.default_rng(1).integers(0, 2**64, size=20_000, dtype=np.uint64)
    with pytest.raises(ValueError, match="hold 20000"):
        stable_sort_u64_parts(lambda: iter([keys]), 20_001)
    with pytest.raises(ValueError, match="hold 20000"):
        stable_sort_u64_parts(lambda: iter([keys]), 19_999)
    readings = iter([[keys], [np.sort(keys)[::-1].copy() ^ np.uint64(2**63)]])  # same count, other keys
    with pytest.raises(ValueError, match="changed between"):
        stable_sort_u64_parts(lambda: iter(next(readings)), len(keys))
