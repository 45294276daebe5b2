"""The persistent dedup history: segments, lookups, exclusion, drops, compaction."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from integrity.analysis import history as H
from integrity.analysis.history import HistoryIndex

PARAMS = {"v": 1}


def records(sha: str, shard: str, n: int, prefix: str) -> pl.DataFrame:
    return pl.DataFrame({"sha256": [sha] * n, "shard": [shard] * n, "record_id": [f"{prefix}{i}" for i in range(n)],
                         "row": list(range(n))})


def add(index, sha, shard, keys_per_record, prefix, scan="s1", ragged=True):
    """Records i holds keys keys_per_record[i]; payload: the record number and a ragged list."""
    n = len(keys_per_record)
    keys = np.array([k for ks in keys_per_record for k in ks], dtype=np.uint64)
    rows = np.array([i for i, ks in enumerate(keys_per_record) for _ in ks], dtype=np.int64)
    payload = {"num": np.arange(n, dtype=np.int64) + 1000 * len(prefix)}
    if ragged:
        lens = np.arange(n) % 3 + 1
        offsets = np.concatenate([[0], np.cumsum(lens)])
        payload["lst"] = (np.concatenate([np.full(l, i, dtype=np.int32) for i, l in enumerate(lens)]), offsets)
    return index.add("k", PARAMS, records(sha, shard, n, prefix), keys=keys, key_rows=rows, payload=payload,
                     scan_id=scan)


def found(index, keys, exclude=(), max_hits=16, params=PARAMS):
    hits = index.lookup("k", params, np.array(keys, dtype=np.uint64), exclude=exclude, max_hits=max_hits)
    desc = index.describe(hits)
    return hits, sorted(zip(hits.query.tolist(), desc["record_id"].to_list()))


def test_empty_history_finds_nothing_and_creates_nothing(tmp_path):
    index = HistoryIndex(tmp_path)
    hits, got = found(index, [1, 2, 3])
    assert got == [] and hits.count.tolist() == [0, 0, 0]
    assert not (tmp_path / H.DIRNAME).exists()


def test_lookup_finds_records_by_key_oldest_first_with_payload(tmp_path):
    index = HistoryIndex(tmp_path)
    add(index, "sha-a", "a.jsonl", [[10, 11], [11], [12]], "a")
    add(index, "sha-b", "b.jsonl", [[11], [99]], "b", scan="s2")
    hits, got = found(index, [11, 12, 5])
    assert got == [(0, "a0"), (0, "a1"), (0, "b0"), (1, "a2")]
    assert hits.count.tolist() == [3, 1, 0]
    # order puts the older segment (night) first
    q0 = np.flatnonzero(hits.query == 0)
    first = q0[np.argmin(hits.order[q0])]
    assert index.describe(hits, [first])["record_id"][0] == "a0"
    desc = index.describe(hits)
    assert set(desc["scan_id"]) == {"s1", "s2"} and set(desc["sha256"]) == {"sha-a", "sha-b"}
    nums = index.gather(hits, "num")
    vals, offs = index.gather(hits, "lst")
    assert len(nums) == len(hits) and len(offs) == len(hits) + 1
    for k in range(len(hits)):
        i = int(nums[k]) % 1000  # record number within its shard
        assert vals[offs[k]:offs[k + 1]].tolist() == [i] * (i % 3 + 1)


def test_max_hits_caps_per_key_and_skips_excluded_content(tmp_path):
    index = HistoryIndex(tmp_path)
    add(index, "sha-x", "x", [[7]] * 5, "x")
    add(index, "sha-y", "y", [[7]] * 5, "y")  # merged with x (same size): one segment
    hits, got = found(index, [7], max_hits=3)
    assert [r for _, r in got] == ["x0", "x1", "x2"]
    hits, got = found(index, [7], exclude={"sha-x"}, max_hits=3)
    assert [r for _, r in got] == ["y0", "y1", "y2"]
    assert hits.count.tolist()[0] >= 5


def test_content_is_added_once_and_scans_of_it_are_not_matched_with_itself(tmp_path):
    index = HistoryIndex(tmp_path)
    assert add(index, "sha-a", "a", [[1]], "a") is not None
    assert add(index, "sha-a", "a", [[1]], "a") is None  # same content approved again
    assert index.live_sha256("k") == {"sha-a"}
    _, got = found(index, [1], exclude={"sha-a"})
    assert got == []


def test_dropped_content_is_not_matched_and_is_removed_by_compaction(tmp_path):
    index = HistoryIndex(tmp_path)
    add(index, "sha-big", "big", [[i] for i in range(100)], "g")
    add(index, "sha-bad", "bad", [[1], [2]], "bad")  # too small to be merged into "big"
    assert len(index.segments("k")) == 2
    assert index.drop("sha-bad", reason="quarantined later")
    assert not index.drop("sha-unknown")
    _, got = found(index, [1, 2])
    assert [r for _, r in got] == ["g1", "g2"]
    assert "sha-bad" not in index.live_sha256("k") and "sha-bad" in index.dropped()
    index.compact("k", full=True)
    segs = index.segments("k")
    assert len(segs) == 1 and [s["sha256"] for s in segs[0].shards] == ["sha-big"]
    assert index.dropped() == {}
    hits, got = found(index, [1, 2, 99])
    assert [r for _, r in got] == ["g1", "g2", "g99"]
    assert index.gather(hits, "num").tolist() == [1001, 1002, 1099]
    # the dropped content may come back (released, approved again)
    assert add(index, "sha-bad", "bad", [[1]], "bad") is not None
    _, got = found(index, [1])
    assert sorted(r for _, r in got) == ["bad0", "g1"]


def test_merging_keeps_every_lookup_answer(tmp_path):
    rng = np.random.default_rng(0)
    index = HistoryIndex(tmp_path)
    truth: dict[int, list[str]] = {}
    for night in range(7):
        n = int(rng.integers(5, 40))
        per = [[int(k) for k in rng.integers(0, 60, size=int(rng.integers(1, 4)))] for _ in range(n)]
        add(index, f"sha{night}", f"shard{night}", per, f"n{night}-", scan=f"scan{night}")
        for i, ks in enumerate(per):
            for k in set(ks):
                truth.setdefault(k, []).append(f"n{night}-{i}")
    assert len(index.segments("k")) < 7  # merged log-structured style
    keys = list(range(60))
    hits, got = found(index, keys, max_hits=1000)
    want = sorted((k, r) for k in keys for r in truth.get(k, []))
    assert sorted(set(got)) == want
    manifest = json.loads((tmp_path / H.DIRNAME / "manifest.json").read_text())
    on_disk = {p.name for p in (tmp_path / H.DIRNAME / "segments" / "k").iterdir()}
    assert on_disk == {s["id"] for s in manifest["segments"]}  # merged segments are deleted


def test_other_parameters_are_not_compared(tmp_path):
    index = HistoryIndex(tmp_path)
    add(index, "sha-a", "a", [[1]], "a")
    _, got = found(index, [1], params={"v": 2})
    assert got == []
    assert index.live_sha256("k", {"v": 2}) == set()


def test_contents_lists_live_shards(tmp_path):
    index = HistoryIndex(tmp_path)
    add(index, "sha-a", "a", [[1], [2]], "a")
    add(index, "sha-b", "b", [[3]], "b")
    index.drop("sha-b")
    c = index.contents("k")
    assert c["sha256"].to_list() == ["sha-a"] and c["records"].to_list() == [2]


def test_excluded_content_includes_what_the_ledger_holds_quarantined(tmp_path):
    from integrity.checks.base import CorpusContext
    from integrity.ledger import Ledger

    index = HistoryIndex(tmp_path)
    add(index, "sha-q", "q", [[1]], "q")
    ledger = Ledger(tmp_path)
    ledger.begin_action(scan_id="s", shard="q", uri="/data/q", sha256="sha-q", mode="mark", destination=None)
    ctx = CorpusContext(run_dir=tmp_path, state_dir=tmp_path, shards=["t"], shard_findings=pl.LazyFrame(),
                        shard_sha256={"t": "sha-t"})
    assert H.excluded_content(ctx) == {"sha-t", "sha-q"}


def test_bad_manifest_version_is_a_clear_error(tmp_path):
    (tmp_path / H.DIRNAME).mkdir()
    (tmp_path / H.DIRNAME / "manifest.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(RuntimeError, match="version"):
        HistoryIndex(tmp_path).segments("k")


def test_own_earlier_version_compares_shard_and_id_of_history_representatives_only():
    from integrity.analysis.history import own_earlier_version

    h_info = pl.DataFrame({"shard": ["a.parquet", "b.parquet", None], "record_id": ["r1", "r9", None]})
    shards, ids = pl.Series(["a.parquet", "a.parquet", "b.parquet", None]), pl.Series(["r1", "r2", "r1", None])
    found = np.array([0, 1, 2, 3])
    rep = np.array([4, 0, 5, 6])  # n = 4: nodes 4.. are history rows 0..
    want = [True, False, False, True]  # same shard and id (nulls equal); an in-scan representative never
    assert own_earlier_version(found, rep, 4, shards, ids, h_info).tolist() == want
    assert own_earlier_version(found, rep, 4, shards.to_list(), ids.to_list(), h_info).tolist() == want
    assert not own_earlier_version(found, rep, 4, shards, ids, None).any()


@pytest.mark.parametrize("dtype", [np.uint32, np.int64, np.float32, np.dtype([("h", "<u4"), ("p", "<u2")])])
def test_take_ragged_compiled_and_numpy_paths_agree(dtype, monkeypatch):
    """take_ragged gathers large row sets with a compiled copy per row (plain numbers) and
    otherwise by an index array (structured items, numba missing): the same rows either way."""
    from integrity.analysis.history import segments

    rng = np.random.default_rng(7)
    lens = rng.integers(0, 40, 5_000)
    lens[::97] = 0  # empty rows
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    values = np.zeros(int(offsets[-1]), dtype=dtype)
    if values.dtype.names:
        values["h"] = rng.integers(0, 2**32, len(values))
        values["p"] = rng.integers(0, 2**16, len(values))
    else:
        values[:] = rng.integers(0, 2**31, len(values)).astype(dtype)
    rows = np.concatenate([np.sort(rng.choice(len(lens), 3_000, replace=False)), [0, 4_999, 17, 17]])
    got_v, got_o = segments.take_ragged(values, offsets, rows)
    monkeypatch.setattr(segments, "HAVE_NUMBA", False)
    ref_v, ref_o = segments.take_ragged(values, offsets, rows)
    expect = np.concatenate([values[offsets[r]:offsets[r + 1]] for r in rows])
    np.testing.assert_array_equal(got_o, ref_o)
    assert got_v.dtype == values.dtype and np.array_equal(got_v, ref_v) and np.array_equal(got_v, expect)


def test_presorted_keys_and_chunked_ragged_payload_write_the_same_segment(tmp_path):
    """What dedup.near hands the history at the end of a scan (keys sorted by
    ``sort_record_keys``, ragged sketches as one array per batch, never concatenated) writes
    the very bytes of the plain call (keys and rows sorted inside, one values array)."""
    rng = np.random.default_rng(11)
    n, per = 3000, 5
    keys = rng.integers(0, 400, n * per).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # ties, spread
    lens = rng.integers(0, 9, n)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    values = rng.integers(0, 2**32 - 1, int(offsets[-1]), dtype=np.uint32)
    recs = records("sha-a", "a.parquet", n, "r")
    plain = HistoryIndex(tmp_path / "plain").add(
        "k", PARAMS, recs, keys=keys, key_rows=np.repeat(np.arange(n, dtype=np.uint32), per),
        payload={"lst": (values, offsets)})
    sorted_keys, rows = H.sort_record_keys(keys, per)
    assert rows.dtype == np.uint32
    # the keys given a shard at a time (dedup.near reads each shard's bands twice): the same
    blocks = np.split(keys.reshape(n, per), [1000, 1000, 2500])
    in_parts = H.sort_record_keys(lambda: iter(blocks), per, n_records=n)
    assert np.array_equal(in_parts[0], sorted_keys) and np.array_equal(in_parts[1], rows)
    assert in_parts[1].dtype == np.uint32
    cuts = [0, 700, 700, 2100, int(offsets[-1])]  # an empty chunk too
    chunks = [values[a:b] for a, b in zip(cuts, cuts[1:])]
    fast = HistoryIndex(tmp_path / "fast").add("k", PARAMS, recs, keys=sorted_keys, key_rows=rows, keys_sorted=True,
                                               payload={"lst": (chunks, offsets)})
    # the values as an iterator, read one array at a time as the file is written (dedup.near's
    # sketches, a batch at a time from the spilled features)
    streamed = HistoryIndex(tmp_path / "streamed").add(
        "k", PARAMS, recs, keys=sorted_keys, key_rows=rows, keys_sorted=True,
        payload={"lst": ((c for c in chunks), offsets)})
    for name in ("keys.npy", "key_rows.npy", "payload_lst.values.npy", "payload_lst.offsets.npy", "records.arrow"):
        assert (plain.path / name).read_bytes() == (fast.path / name).read_bytes(), name
        assert (plain.path / name).read_bytes() == (streamed.path / name).read_bytes(), name
    # and answers lookups alike
    q = np.unique(keys)[:50]
    a = HistoryIndex(tmp_path / "plain").lookup("k", PARAMS, q, max_hits=1000)
    b = HistoryIndex(tmp_path / "fast").lookup("k", PARAMS, q, max_hits=1000)
    assert a.query.tolist() == b.query.tolist() and len(a) > 0



def test_values_that_end_before_their_offsets_leave_no_segment(tmp_path):
    """An iterator of ragged values shorter than its offsets say (features read back wrong)
    is an error, and the half-written segment is not moved into the history."""
    index = HistoryIndex(tmp_path)
    recs = records("sha-a", "a.jsonl", 3, "a")
    short = (c for c in [np.arange(4, dtype=np.uint32)])
    with pytest.raises(ValueError, match="4 values given for offsets that end at 6"):
        index.add("k", PARAMS, recs, keys=np.arange(3, dtype=np.uint64), key_rows=np.arange(3),
                  payload={"lst": (short, np.array([0, 2, 4, 6]))})
    assert index.lookup("k", PARAMS, np.arange(3, dtype=np.uint64), max_hits=10).query.tolist() == []
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_presorted_input_with_content_already_live_keeps_only_the_new_and_its_payload(tmp_path):
    """Keys sorted by the caller, when part of the content is live already (a shard scanned
    again): the rest is re-sorted after the live records are left out, and the chunked ragged
    payload follows its records."""
    index = HistoryIndex(tmp_path)
    add(index, "sha-a", "a.jsonl", [[1], [2]], "a")
    per_record = [[1, 5], [2, 6], [7, 8], [5, 9]]  # a0, a1 again, then b0, b1
    recs = pl.concat([records("sha-a", "a.jsonl", 2, "a"), records("sha-b", "b.jsonl", 2, "b")])
    keys = np.array([k for ks in per_record for k in ks], dtype=np.uint64)
    sorted_keys, rows = H.sort_record_keys(keys, 2)
    offsets = np.array([0, 1, 3, 6, 10])
    chunks = [np.arange(3, dtype=np.int32), np.arange(3, 10, dtype=np.int32)]
    seg = index.add("k", PARAMS, recs, keys=sorted_keys, key_rows=rows, keys_sorted=True,
                    payload={"lst": (iter(chunks), offsets)})
    assert seg.n_records == 2
    hits, got = found(index, [5, 7, 9])
    assert got == [(0, "b1"), (1, "b0"), (2, "b1")]  # a0 is stored with its first night's key only
    vals, offs = index.gather(hits, "lst")
    by_id = dict(zip(index.describe(hits)["record_id"].to_list(),
                     [vals[offs[k]:offs[k + 1]].tolist() for k in range(len(hits))]))
    assert by_id["b0"] == [3, 4, 5] and by_id["b1"] == [6, 7, 8, 9]
