"""KGW green-list watermark z-test: text generated with a known key against unwatermarked text.

The generator is a toy (a Zipf unigram model over a word vocabulary) that adds
``delta`` to the logits of the key's green list after each token, which is all
KGW watermarking does to a language model's logits; no model is needed.
"""
import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from integrity.analysis.watermark import (WatermarkConfigError, WatermarkDetector, _TorchGreenLists, prf_green, toy_generate,
                                          z_score)
from integrity.checks.base import CorpusContext

VOCAB = [f"w{i}" for i in range(800)]
KEY = 424242


def word_tokenizer_file(tmp_path: Path) -> Path:
    """A real Hugging Face `tokenizers` WordLevel tokenizer over VOCAB (word i has id i)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)} | {"[UNK]": len(VOCAB)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.fixture
def detector(tmp_path):
    return WatermarkDetector.from_options({"key": KEY, "tokenizer": str(word_tokenizer_file(tmp_path)), "gamma": 0.25})


def test_watermarked_text_has_high_z_and_plain_text_does_not(detector):
    rng = np.random.default_rng(1)
    marked = [detector.score(toy_generate(VOCAB, 150, KEY, rng, delta=2.0)) for _ in range(20)]
    plain = [detector.score(toy_generate(VOCAB, 150, None, rng)) for _ in range(20)]
    other_key = [detector.score(toy_generate(VOCAB, 150, KEY + 1, rng, delta=2.0)) for _ in range(20)]
    assert min(s.z for s in marked) > 4.0
    assert max(s.z for s in plain) < 4.0 and abs(np.mean([s.z for s in plain])) < 1.0
    assert max(s.z for s in other_key) < 4.0  # another key's watermark is not this one
    assert all(s.p_value < 1e-4 for s in marked)


def test_z_statistic_matches_the_formula(detector):
    ids = list(range(0, 400, 3))
    s = detector.score_ids(ids)
    prev, cur = np.asarray(ids[:-1]), np.asarray(ids[1:])
    green = int(prf_green(__import__("integrity.analysis.watermark", fromlist=["key_seed"]).key_seed(KEY), prev, cur, 0.25).sum())
    assert s.green == green and s.tokens == len(cur)
    assert s.z == pytest.approx((green - 0.25 * len(cur)) / np.sqrt(len(cur) * 0.25 * 0.75))


def test_repeated_pairs_are_scored_once(detector):
    # find a green pair, then repeat it: with ignore_repeated it is one token, so z stays small
    seed_green = None
    for a in range(50):
        for b in range(50):
            if detector.score_ids([a, b]).green == 1:
                seed_green = (a, b)
                break
        if seed_green:
            break
    text_ids = list(seed_green) * 200
    s = detector.score_ids(text_ids)
    assert s.tokens <= 2 and s.z is None  # below min_tokens: no claim either way
    naive = WatermarkDetector(KEY, lambda t: [], ignore_repeated=False).score_ids(text_ids)
    assert naive.z > 4  # what a detector without de-duplication would (wrongly) report


def test_short_text_makes_no_claim(detector):
    s = detector.score(" ".join(VOCAB[:5]))
    assert s.z is None and s.p_value is None


def test_reference_implementation_scheme(tmp_path):
    """kgw-torch: green list = first gamma*V of torch.randperm(V) seeded with key * previous token."""
    import torch

    v = 300
    lists = _TorchGreenLists(15485863, v, 0.25)
    g = torch.Generator().manual_seed(15485863 * 7)
    expect = set(torch.randperm(v, generator=g)[: int(v * 0.25)].tolist())
    assert set(np.flatnonzero(lists._compute(7)).tolist()) == expect
    rng = np.random.default_rng(0)
    det = WatermarkDetector(15485863, lambda t: [int(x) for x in t.split()], gamma=0.25, scheme="kgw-torch",
                            vocab_size=v)
    zs_marked, zs_plain = [], []
    for marked in (True, False):
        for _ in range(5):
            prev, out = int(rng.integers(v)), []
            for _ in range(120):
                logits = np.zeros(v) + (2.5 * lists._compute(prev) if marked else 0)
                p = np.exp(logits - logits.max())
                prev = int(rng.choice(v, p=p / p.sum()))
                out.append(prev)
            (zs_marked if marked else zs_plain).append(det.score(" ".join(map(str, out))).z)
    assert min(zs_marked) > 4 and max(zs_plain) < 4


def test_bad_options_are_reported():
    with pytest.raises(WatermarkConfigError, match="key"):
        WatermarkDetector.from_options({"tokenizer": "x.json"})
    with pytest.raises(WatermarkConfigError, match="vocab_size"):
        WatermarkDetector(1, lambda t: [], scheme="kgw-torch")
    with pytest.raises(WatermarkConfigError, match="unknown"):
        WatermarkDetector.from_options({"key": 1, "tokenizer": "x", "salt": 3})
    assert z_score(0, 0, 0.25) is None


def test_synthetic_check_reports_watermarked_records(tmp_path, monkeypatch):
    from integrity.checks.synthetic_text import SyntheticTextCheck

    monkeypatch.setenv("WM_KEY", str(KEY))
    opts = {"watermark": {"key_env": "WM_KEY", "tokenizer": str(word_tokenizer_file(tmp_path)), "gamma": 0.25}}
    rng = np.random.default_rng(3)
    texts = [toy_generate(VOCAB, 120, KEY if i % 4 == 0 else None, rng) for i in range(40)]
    batch = pa.RecordBatch.from_pylist([{"record_id": f"r{i}", "row": i, "text": t} for i, t in enumerate(texts)])
    check = SyntheticTextCheck(opts)
    feats = check.process_batch(batch).features.with_columns(shard=pl.lit("s"), shard_index=pl.lit(0, pl.Int32))
    ctx = CorpusContext(run_dir=tmp_path, state_dir=tmp_path / "state", shards=["s"], shard_findings=pl.LazyFrame())
    found = SyntheticTextCheck(opts).corpus_pass(feats.lazy(), ctx)
    recs = found.filter(pl.col("record_id").is_not_null())
    assert sorted(recs["record_id"].to_list(), key=lambda r: int(r[1:])) == [f"r{i}" for i in range(0, 40, 4)]
    assert set(recs["severity"]) == {"warn"}
    assert json.loads(recs["detail"][0])["evidence"][0]["kind"] == "watermark"
    shard = json.loads(found.filter(pl.col("record_id").is_null())["detail"][0])
    assert shard["markers"]["watermarked"] == 10 and shard["watermark"]["shard_z"] > 4
    assert shard["estimate"] == pytest.approx(0.25)
