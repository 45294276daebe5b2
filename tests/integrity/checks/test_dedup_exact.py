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
