import json
from pathlib import Path

import polars as pl
import pyarrow as pa

from integrity.checks.base import CorpusContext
from integrity.checks.dedup_exact import ExactDedup, normalized_text


def _batch(texts, prefix="r", **extra):
    rows = [{"record_id": f"{prefix}{i}", "row": i, "text": t, **{k: v[i] for k, v in extra.items()}}
            for i, t in enumerate(texts)]
    return pa.RecordBatch.from_pylist(rows)


def _corpus(shards: dict[str, list[str]], **options) -> pl.DataFrame:
    frames = []
    for i, (name, texts) in enumerate(shards.items()):
        out = ExactDedup(options).process_batch(_batch(texts, prefix=name))
        if out.features is not None:
            frames.append(out.features.lazy().with_columns(shard=pl.lit(name), shard_index=pl.lit(i, dtype=pl.Int32)))
    ctx = CorpusContext(run_dir=Path("."), state_dir=Path("."), shards=list(shards), shard_findings=pl.LazyFrame())
    return ExactDedup(options).corpus_pass(pl.concat(frames), ctx)


def test_normalization_folds_unicode_case_and_whitespace():
    b = _batch(["Ｈello\u00a0  WORLD \n", "hello world", "hello  worlds", None])
    assert normalized_text(b).to_pylist() == ["hello world", "hello world", "hello worlds", None]


def test_groups_across_shards_keep_first_and_name_the_group():
    found = _corpus({"s1": ["Same text here.", "unique one"], "s2": ["other", "SAME   text here."],
                     "s3": ["same text here.", "x"]})
    assert sorted(found["record_id"].to_list()) == ["s21", "s30"]
    for d in found["detail"].to_list():
        d = json.loads(d)
        assert d["representative"] == "s10" and d["representative_shard"] == "s1"
        assert d["group_size"] == 3 and d["cluster"].startswith("exact-")
    assert found["shard"].to_list() in (["s2", "s3"], ["s3", "s2"])


def test_near_misses_are_not_exact_duplicates():
    found = _corpus({"s1": ["The cat sat on the mat.", "The cat sat on the mat!", "The cat sat on a mat."]})
    assert found.height == 0


def test_prompt_response_pairs_are_compared_as_a_pair():
    b = pa.RecordBatch.from_pylist([
        {"record_id": "0", "row": 0, "prompt": "Q", "response": "A"},
        {"record_id": "1", "row": 1, "prompt": "Q", "response": "B"},
        {"record_id": "2", "row": 2, "prompt": "q ", "response": "a"},
    ])
    feats = ExactDedup().process_batch(b).features
    h = feats["h"].to_list()
    assert h[0] == h[2] and h[0] != h[1]


def test_min_chars_and_nulls_are_skipped():
    found = _corpus({"s": ["", "", None, None, "ab", "ab"]}, min_chars=3)
    assert found.height == 0


def test_a_huge_record_is_hashed_in_pieces_with_the_same_result(monkeypatch):
    """Records over HUGE_TEXT_BYTES are normalized piece by piece (bounded memory); the hash
    and length must equal normalizing the whole text, whatever the Unicode at the cuts."""
    import random

    import pyarrow.compute as pc
    import xxhash

    from integrity.checks import dedup_exact

    rng = random.Random(7)
    alphabet = list("abcXYZ019  \t\n\u00a0\u0301\u00e9\u1e9b\u0323\ufb01\u3000\u2163\uff21\u212b\u03a3\u4e2d\u1100\u1161")
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))) for _ in range(40)] + [None]
    batch = _batch(texts)
    want_text = normalized_text(batch)
    want = [None if t is None else xxhash.xxh3_128_digest(t.encode()) for t in want_text.to_pylist()]
    want_len = [-1 if n is None else n for n in pc.utf8_length(want_text).to_pylist()]
    monkeypatch.setattr(dedup_exact, "HUGE_TEXT_BYTES", 60)
    monkeypatch.setattr(dedup_exact, "_PIECE_BYTES", 9)
    assert len(dedup_exact._pieces(pa.array(["ab" * 50]))) > 5  # really cut
    hashes, lengths = dedup_exact.text_hashes(batch)
    assert hashes == want and list(lengths) == want_len
    # and the check groups a huge record with its normalized twin
    big = "Lorem IPSUM  dolor\u00a0sit " * 20
    out = ExactDedup({}).process_batch(_batch([big, " ".join(big.lower().split()), "other"]))
    assert out.features["h"][0] == out.features["h"][1] != out.features["h"][2]


def test_corpus_parts_cut_the_hashes_into_partitions_with_the_same_findings(monkeypatch):
    import integrity.checks.dedup_exact as mod

    shards = {f"s{k}": [f"text number {i % 9}" if i % 3 else f"unique {k}-{i}" for i in range(12)] for k in range(3)}
    frames = []
    for i, (name, texts) in enumerate(shards.items()):
        out = ExactDedup({}).process_batch(_batch(texts, prefix=name))
        frames.append(out.features.lazy().with_columns(shard=pl.lit(name), shard_index=pl.lit(i, dtype=pl.Int32)))
    features = pl.concat(frames)
    ctx = CorpusContext(run_dir=Path("."), state_dir=Path("."), shards=list(shards), shard_findings=pl.LazyFrame())
    whole = ExactDedup({}).corpus_pass(features, ctx)
    monkeypatch.setattr(mod, "PART_RECORDS", 7)  # 36 records: 6 partitions
    parts = list(ExactDedup({}).corpus_parts(features, ctx))
    assert len(parts) == 6 and sum(p.height > 0 for p in parts) >= 2
    key = ["shard", "record_id"]
    assert whole.height == 18  # two texts of 6 copies and four of 3: 2 * 5 + 4 * 2 duplicates
    assert pl.concat(parts).sort(key).equals(whole.sort(key))


def test_hash_matrix_holds_each_hash_s_bytes_in_order():
    import os

    import numpy as np

    from integrity.checks.dedup_exact import _hash_matrix

    raw = [os.urandom(16) for _ in range(50)] + [bytes(range(16)), b"\xff" * 16]
    got = _hash_matrix(pl.Series("h", raw, dtype=pl.Binary))
    assert got.shape == (52, 16) and got.dtype == np.uint8
    assert [bytes(r) for r in got] == raw
