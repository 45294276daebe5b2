"""dedup.span: long repeated token spans inside otherwise different documents."""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from integrity.checks.base import CheckConfigError, CorpusContext
from integrity.checks.dedup_span import SpanDedup, merge_intervals, winnow

WORDS = [f"{a}{b}" for a in ("ba", "de", "fi", "go", "hu", "ja", "ke", "li", "mo", "ny") for b in range(300)]


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(WORDS, k=n))


def batch(records, prefix, field="text"):
    return pa.RecordBatch.from_pylist(
        [{"record_id": f"{prefix}{i}", "row": i, field: t} for i, t in enumerate(records)],
        schema=pa.schema([("record_id", pa.string()), ("row", pa.int64()), (field, pa.large_string())]))


def corpus(shards: dict[str, list[str]], field="text", **options) -> pl.DataFrame:
    frames = []
    for i, (name, texts) in enumerate(shards.items()):
        out = SpanDedup(options).process_batch(batch(texts, name, field))
        if out.features is not None:
            frames.append(out.features.lazy().with_columns(shard=pl.lit(name), shard_index=pl.lit(i, dtype=pl.Int32)))
    ctx = CorpusContext(run_dir=Path("."), state_dir=Path("/nonexistent-state"), shards=list(shards),
                        shard_findings=pl.LazyFrame())
    return SpanDedup(options).corpus_pass(pl.concat(frames), ctx)


def details(found):
    return {r: json.loads(d) for r, d in zip(found["record_id"], found["detail"])}


def test_a_long_passage_inside_different_documents_is_found_with_offsets():
    rng = random.Random(1)
    passage = "Licensed under the Apache License, Version 2.0; " + words(rng, 60) + "."
    docs = {
        "a": [words(rng, 200), words(rng, 80) + " " + passage + " " + words(rng, 40)],
        "b": [words(rng, 30) + ",\n" + passage, words(rng, 150)],
        "c": [passage + " " + words(rng, 300)],
    }
    found = corpus(docs)
    d = details(found)
    assert set(d) == {"b0", "c0"}
    for rid, text in (("b0", docs["b"][0]), ("c0", docs["c"][0])):
        v = d[rid]
        assert v["representative"] == "a1" and v["representative_shard"] == "a" and v["cluster_size"] == 3
        assert v["other_docs"] == 2
        # the passage has 67 tokens; winnowing may miss up to winnow - 1 = 7 at either end
        assert 67 - 14 <= v["repeated_tokens"] <= 67
        assert v["share"] == pytest.approx(v["repeated_tokens"] / v["tokens"], abs=1e-3)
        (m,) = v["matches"]
        assert m["field"] == "text"
        span = text[m["start"]:m["end"]]
        assert span in passage and len(re.findall(r"\w+", span)) == v["repeated_tokens"]
    assert found["score"].to_list() == [d[r]["share"] for r in found["record_id"]]


def test_short_shared_phrases_and_unrelated_documents_are_not_reported():
    rng = random.Random(2)
    phrase = words(rng, 45)  # shorter than span_tokens = 50
    docs = [words(rng, 100) + " " + phrase + " " + words(rng, 100) for _ in range(6)]
    docs += [words(rng, 300) for _ in range(50)]
    assert corpus({"s": docs}).height == 0
    # ... but with a smaller span length the same phrase is found
    assert corpus({"s": docs}, span_tokens=40, winnow=4).height == 5


def test_spans_of_the_guaranteed_length_are_always_found():
    rng = random.Random(3)
    W, w = 50, 8
    for trial in range(20):
        shared = words(rng, W + w - 1)  # guaranteed by winnowing
        found = corpus({"s": [words(rng, rng.randrange(0, 50)) + " " + shared + " " + words(rng, 20),
                              words(rng, 20) + " " + shared]}, span_tokens=W, winnow=w)
        assert found["record_id"].to_list() == ["s1"], trial
        assert json.loads(found["detail"][0])["repeated_tokens"] >= W


def test_repeats_inside_one_document_alone_are_not_cross_document_duplication():
    rng = random.Random(4)
    block = words(rng, 70)
    assert corpus({"s": [block + " " + words(rng, 10) + " " + block, words(rng, 200)]}).height == 0


def test_instruction_data_reports_the_field_of_the_span():
    rng = random.Random(5)
    leaked = words(rng, 80)
    b = pa.RecordBatch.from_pylist([
        {"record_id": "0", "row": 0, "prompt": words(rng, 20), "response": leaked},
        {"record_id": "1", "row": 1, "prompt": "Repeat: " + leaked, "response": words(rng, 30)},
    ])
    feats = SpanDedup().process_batch(b).features.lazy().with_columns(shard=pl.lit("s"), shard_index=pl.lit(0))
    ctx = CorpusContext(run_dir=Path("."), state_dir=Path("/nonexistent"), shards=["s"], shard_findings=pl.LazyFrame())
    d = details(SpanDedup().corpus_pass(feats, ctx))
    assert list(d) == ["1"] and d["1"]["representative"] == "0"
    (m,) = d["1"]["matches"]
    assert m["field"] == "prompt"
    prompt = "Repeat: " + leaked
    assert prompt[m["start"]:m["end"]] in leaked and len(prompt[m["start"]:m["end"]].split()) >= 80 - 14


def test_min_share_and_option_validation():
    rng = random.Random(6)
    p = words(rng, 60)
    docs = [p + " " + words(rng, 20), p + " " + words(rng, 500)]  # shares 0.75 and ~0.11
    assert corpus({"s": docs}).height == 1
    assert corpus({"s": docs}, min_share=0.5).height == 0  # the second record is the one reported
    with pytest.raises(CheckConfigError, match="min_share"):
        SpanDedup({"min_share": 2})
    with pytest.raises(CheckConfigError, match="unknown option"):
        SpanDedup({"tokens": 50})


def test_winnow_and_interval_helpers():
    h = np.array([5, 3, 9, 3, 7, 1, 8, 8, 2], dtype=np.uint64)
    g = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2])
    sel = winnow(h, g, 3)
    assert sel.tolist() == [1, 3, 5, 6, 8]  # window minima in group 0; the minimum of each short group
    o, s, e = merge_intervals(np.array([1, 0, 0, 0, 1]), np.array([5, 0, 3, 20, 5]), np.array([9, 4, 8, 25, 6]))
    assert list(zip(o.tolist(), s.tolist(), e.tolist())) == [(0, 0, 8), (0, 20, 25), (1, 5, 9)]


def test_sorted_intervals_merge_in_one_compiled_pass_as_the_sorting_path_does(monkeypatch):
    """Fingerprints come by record then position, so the union per record skips the sort
    (a compiled pass); unsorted input, or no numba, takes the NumPy path: the same intervals."""
    import integrity.checks.dedup_span as span

    rng = np.random.default_rng(5)
    owner = np.sort(rng.integers(0, 300, 20_000))
    start = rng.integers(0, 2_000, len(owner))
    order = np.lexsort((start, owner))
    owner, start = owner[order], start[order]
    end = start + rng.integers(1, 80, len(owner))
    assert span.merge_sorted_intervals(owner, start, end) is not None  # the compiled path runs
    fast = merge_intervals(owner, start, end)
    monkeypatch.setattr(span, "merge_sorted_intervals", lambda *a: None)
    slow = merge_intervals(owner, start, end)
    assert len(fast[0]) < len(owner) / 2  # intervals did merge
    for f, s_ in zip(fast, slow):
        assert f.dtype == np.int64 and np.array_equal(f, s_)
    monkeypatch.undo()
    shuffled = rng.permutation(len(owner))  # not sorted: the compiled path declines
    assert span.merge_sorted_intervals(owner[shuffled], start[shuffled], end[shuffled]) is None
    for f, s_ in zip(merge_intervals(owner[shuffled], start[shuffled], end[shuffled]), slow):
        assert np.array_equal(f, s_)


def test_fingerprint_counts_in_partition_tasks_give_the_same_findings(monkeypatch):
    """The counts per fingerprint are taken per hash partition, each a task of the scan's
    runner (``map_partitions``): many small partitions find exactly what one does."""
    import integrity.checks.dedup_span as span

    rng = random.Random(3)
    passage = words(rng, 70)
    docs = {s: [words(rng, 40) + " " + passage if i % 3 == 0 else words(rng, 90) for i in range(12)]
            for s in ("a", "b", "c")}

    def run(partition_entries: int, ran: list | None = None) -> pl.DataFrame:
        monkeypatch.setattr(span, "PARTITION_ENTRIES", partition_entries)
        frames = [SpanDedup({}).process_batch(batch(texts, name)).features.lazy().with_columns(
            shard=pl.lit(name), shard_index=pl.lit(i, dtype=pl.Int32)) for i, (name, texts) in enumerate(docs.items())]

        def map_partitions(step, items):
            if ran is not None:
                ran.extend(items)
            return [step(item) for item in items]

        ctx = CorpusContext(run_dir=Path("."), state_dir=Path("/nonexistent-state"), shards=list(docs),
                            shard_findings=pl.LazyFrame(), map_partitions=map_partitions)
        return SpanDedup({}).corpus_pass(pl.concat(frames), ctx)

    ran: list = []
    one, many = run(10**9), run(40, ran)
    assert len(ran) > 5 and one.height == 11  # 12 records share the passage: 11 are not the representative
    assert many.equals(one)


def test_findings_built_in_parts_equal_one_part(monkeypatch):
    """The pass yields its findings a few records at a time (their spans and details built per
    part, after the corpus's fingerprints are let go): the parts together are the one frame."""
    import integrity.checks.dedup_span as span

    rng = random.Random(5)
    passages = [words(rng, 70) for _ in range(3)]
    docs = {s: [words(rng, 30) + " " + passages[i % 3] + " " + words(rng, 20) if i % 2 else words(rng, 90)
                for i in range(14)] for s in ("a", "b", "c")}
    frames = [SpanDedup({}).process_batch(batch(texts, name)).features.lazy().with_columns(
        shard=pl.lit(name), shard_index=pl.lit(i, dtype=pl.Int32)) for i, (name, texts) in enumerate(docs.items())]
    ctx = CorpusContext(run_dir=Path("."), state_dir=Path("/nonexistent-state"), shards=list(docs),
                        shard_findings=pl.LazyFrame())
    one = SpanDedup({}).corpus_pass(pl.concat(frames), ctx)
    monkeypatch.setattr(span, "PART_ROWS", 4)
    parts = list(SpanDedup({}).corpus_parts(pl.concat(frames), ctx))
    assert len(parts) == -(-one.height // 4) and one.height == 18  # 21 records hold a passage, 3 kept
    assert pl.concat(parts).equals(one)
    assert all(d["matches"] for d in details(one).values())


def test_history_keys_read_batch_by_batch_equal_the_whole_column_unpacked(tmp_path: Path):
    """after_verdicts gathers the approved fingerprints' hashes a batch at a time: the same
    (hash, row) pairs as unpacking the whole column, rows counted across batches and files."""
    from integrity.analysis.dedup.blobs import unpack
    from integrity.checks.dedup_span import FP_DTYPE, approved_keys

    rng = random.Random(3)
    paths = []
    for k in range(3):
        texts = [words(rng, 60 + 20 * (i % 3)) if i % 4 else "" for i in range(9)]
        feats = SpanDedup().process_batch(batch(texts, f"s{k}")).features
        paths.append(tmp_path / f"f{k}.parquet")
        feats.write_parquet(paths[-1])
    lf = pl.concat([pl.scan_parquet(p) for p in paths]).select("fps")
    keys, rows = approved_keys(lf)
    items, offsets = unpack(lf.collect()["fps"], FP_DTYPE)
    assert len(keys) == len(items) > 0
    assert (keys == items["fp"]).all()
    assert (rows == np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))).all()
    assert rows.max() >= 9  # rows of the second and third file continue the count
    empty = approved_keys(lf.head(0))
    assert len(empty[0]) == len(empty[1]) == 0
