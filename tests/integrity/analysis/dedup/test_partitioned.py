"""The partitioned LSH band join and the sketch subset it verifies with."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from integrity.analysis.dedup.graph import components
from integrity.analysis.dedup.partitioned import SketchSubset, band_join, bucket_keys, pair_members, partition_count
from integrity.analysis.history import take_ragged


def planted_bands(n: int = 3000, nb: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bands = rng.integers(0, 2**63, (n, nb), dtype=np.uint64)
    for _ in range(400):  # records sharing one band key with another record
        i, j, band = rng.integers(n), rng.integers(n), rng.integers(nb)
        bands[j, band] = bands[i, band]
    return bands


def shards_of(bands: np.ndarray, sizes=(700, 1, 0, 1299, 1000)):
    first = 0
    for s in sizes:
        yield first, bands[first:first + s]
        first += s


def join_pairs(*args, **kwargs) -> tuple[np.ndarray, np.ndarray, int]:
    """``band_join``'s pair codes decoded into their ends (a, b) and the entries."""
    codes, m, entries = band_join(*args, **kwargs)
    return codes // m, codes % m, entries


def brute_components(bands: np.ndarray) -> np.ndarray:
    n, nb = bands.shape
    rows, cols = [], []
    for j in range(nb):
        order = np.argsort(bands[:, j], kind="stable")
        same = np.flatnonzero(bands[order[1:], j] == bands[order[:-1], j])
        rows.append(order[same])
        cols.append(order[same + 1])
    r, c = np.concatenate(rows), np.concatenate(cols)
    g = coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    return connected_components(g, directed=False)[1]


def same_partition(x: np.ndarray, y: np.ndarray) -> bool:
    _, fx = np.unique(x, return_inverse=True)
    _, fy = np.unique(y, return_inverse=True)
    pairs = set(zip(fx.tolist(), fy.tolist()))
    return len(pairs) == len(set(fx.tolist())) == len(set(fy.tolist()))


def test_partitions_give_the_same_pairs_as_one(tmp_path):
    bands = planted_bands()
    a1, b1, entries = join_pairs(shards_of(bands), 1, spill_dir=tmp_path)
    with ThreadPoolExecutor(2) as pool:  # partitions are independent: any executor's map runs them
        a7, b7, _ = join_pairs(shards_of(bands), 7, spill_dir=tmp_path, run=pool.map)
    assert entries == bands.size and len(a1) > 300
    assert np.array_equal(a1, a7) and np.array_equal(b1, b7) and (a1 < b1).all()
    assert same_partition(components(len(bands), a7, b7), brute_components(bands))
    assert list(tmp_path.iterdir()) == []  # spill files are removed


def test_pair_codes_and_their_members_are_the_pairs_and_their_ends(tmp_path):
    """dedup.near keeps the candidates as ``band_join``'s codes ``a * m + b`` (8 bytes a pair),
    ascending and unique, and finds the records to gather sketches for from them: the unique ends
    of every pair (plus the history's query records), whatever the chunk they are decoded by."""
    bands = planted_bands()
    codes, m, entries = band_join(shards_of(bands), 3, spill_dir=tmp_path, n_records=len(bands))
    a, b = codes // m, codes % m
    assert m == len(bands) and entries == bands.size and len(codes) > 300
    assert (np.diff(codes) > 0).all() and (a < b).all()
    also = np.array([5, 2999, 5, 17])
    for chunk in (1, 7, 1 << 20):  # decoded a chunk at a time: any chunk gives the same records
        got = pair_members(codes, m, len(bands), also=also, chunk=chunk)
        assert np.array_equal(got, np.unique(np.concatenate([a, b, also])))
    assert np.array_equal(pair_members(codes[:0], m, len(bands)), np.zeros(0, np.int64))


def test_a_url_spill_dir_gives_the_same_pairs(tmp_path):
    """Object stores cannot append: on an fsspec URL each shard writes one object per
    partition, each partition task reads its folder, and the spill is removed afterwards."""
    import fsspec

    bands = planted_bands()
    a1, b1, _ = join_pairs(shards_of(bands), 1, spill_dir=tmp_path)
    seen: list[str] = []

    def run(step, items):  # what a scan's map_partitions receives: URLs of partition folders
        seen.extend(items)
        return [step(i) for i in items]

    a7, b7, entries = join_pairs(shards_of(bands), 7, spill_dir="memory://bucket/run/.work", run=run)
    assert entries == bands.size
    assert np.array_equal(a1, a7) and np.array_equal(b1, b7)
    assert len(seen) == 7 and all(s.startswith("memory://bucket/run/.work/lsh-") for s in seen)
    assert fsspec.filesystem("memory").find("/bucket/run/.work") == []


def test_equal_keys_of_different_bands_are_not_candidates(tmp_path):
    bands = np.array([[1, 2], [2, 1], [3, 2]], dtype=np.uint64)  # 0 and 1 swap keys; 0 and 2 share band 1
    a, b, _ = join_pairs([(0, bands)], 2, spill_dir=tmp_path)
    assert list(zip(a.tolist(), b.tolist())) == [(0, 2)]
    keys = bucket_keys(bands)
    assert keys[0, 0] != keys[1, 1] and keys[0, 1] == keys[2, 1]


def test_partition_count():
    assert partition_count(0, 100) == 1 and partition_count(100, 100) == 1 and partition_count(101, 100) == 2


def test_sketch_subset_gathers_only_the_wanted_records():
    rng = np.random.default_rng(3)
    lens = rng.integers(0, 9, 50)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    values = rng.integers(0, 2**32, offsets[-1], dtype=np.uint32)
    nsh = lens * 3
    wanted = np.array([0, 7, 8, 20, 49])

    def shards():
        for first, stop in ((0, 10), (10, 30), (30, 50)):
            v, o = take_ragged(values, offsets, np.arange(first, stop))
            yield first, (v, o), nsh[first:stop]

    # copied into one array as the shards come (dedup.near: the sketch size bounds each sketch)
    sub = SketchSubset(wanted, shards(), max_len=8)
    ev, eo = take_ragged(values, offsets, wanted)
    assert sub.values.dtype == np.uint32 and np.array_equal(sub.values, ev) and np.array_equal(sub.offsets, eo)
    with pytest.raises(ValueError, match="longer than max_len=5"):
        SketchSubset(wanted, shards(), max_len=5)
    assert np.array_equal(sub.nsh, nsh[wanted]) and np.array_equal(sub.index(np.array([20, 0])), [3, 0])
    # records outside the subset (the node-row helper evaluates them, then discards them) get
    # what a binary search gives, as do records past the last wanted one
    for records in ([20, 0, 49, 7], [20, 5], [60, 8], [], [49]):
        got = sub.index(np.array(records, dtype=np.int64))
        assert got.dtype == np.int64 and np.array_equal(got, np.searchsorted(wanted, records))


def test_key_counts_count_distinct_records_per_key(tmp_path):
    from integrity.analysis.dedup.partitioned import key_counts

    rng = np.random.default_rng(5)
    keys = rng.integers(0, 300, 20_000).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    recs = rng.integers(0, 2_000, 20_000)
    pieces = [(keys[i:i + 3000], recs[i:i + 3000]) for i in range(0, len(keys), 3000)]
    want_keys, first = np.unique(np.stack([keys, recs.astype(np.uint64)]), axis=1, return_index=True)
    expect_k, expect_n = np.unique(want_keys[0], return_counts=True)
    for spill in (tmp_path, "memory://bucket/counts/.work"):
        k, n = key_counts(iter(pieces), 9, spill_dir=spill)
        assert np.array_equal(k, expect_k) and np.array_equal(n, expect_n)
    assert list(tmp_path.iterdir()) == []


def test_compiled_routing_spills_the_same_entries_as_the_numpy_path(tmp_path, monkeypatch):
    """The compiled pass (bucket keys and partition grouping of a shard in one loop) writes
    the very bytes the NumPy path (bucket_keys, then a stable sort by partition) writes."""
    from integrity.analysis.dedup import partitioned

    bands = planted_bands(n=2_500, nb=5, seed=4)

    def spilled(directory):
        directory.mkdir()
        got = {}

        def keep(path):
            got[Path(path).name] = Path(path).read_bytes()
            return partitioned._pair_codes_of(path, 2**31)

        partitioned.map_spilled(partitioned._band_pieces(shards_of(bands, (900, 0, 1600)), 5), 5, keep, directory)
        return got

    compiled = spilled(tmp_path / "a")
    monkeypatch.setattr(partitioned, "routed_entries", lambda *a: None)
    plain = spilled(tmp_path / "b")
    assert len(plain) == 5 and sum(len(v) for v in plain.values()) == bands.size * 16
    assert compiled == plain
