"""dedup.near's compiled kernel against the NumPy reference path (and datasketch), on real text."""
from __future__ import annotations

import inspect
import random
import re

import numpy as np
import pyarrow as pa
import pytest

from connectors.schema import RECORD_ID, ROW
from integrity.analysis.dedup import kernel
from integrity.analysis.dedup.minhash import MinHasher, estimate, sketch_pairs
from integrity.analysis.dedup.text import CHUNK_CHARS
from integrity.checks.dedup_near import NearDedup

pytestmark = pytest.mark.skipif(not kernel.HAVE_NUMBA, reason="numba is a dependency; the kernel needs it")

_NORM = re.compile(r"[^\w\s]")

EDGE = [
    "", None, "   \t\n ", "!!! ... ---", "word", "just four words here", "Five words make one shingle.",
    # non-ASCII: case folding (Σ, ß, İ whose lower case is two characters), CJK, emoji, combining marks,
    # full width, digits of other scripts, NUL and other controls inside a record
    "ΣΟΦΙΑ σοφία Straße STRASSE İstanbul ǅemal naïve café 日本語のテキスト 😀 e\u0301te\u0301 Ｆｕｌｌ ٣٤٥ x_y",
    "tab\tseparated\x00nul\x01inside and \u2028 line separator \ud7ff end",
    "🙂" * 50 + " word " * 10 + "𝒳𝒴𝒵 𐍈 mixed 4-byte 𝟘𝟙 tokens",
]


def real_texts(limit: int = 1500, seed: int = 0) -> list[str]:
    """Docstrings of the standard library (real English prose and code), each also as an
    edited copy (0-3 word edits), so that near duplicates exist."""
    import importlib
    docs = []
    for name in ("argparse", "asyncio", "collections", "csv", "datetime", "decimal", "email.message", "http.client",
                 "json", "logging", "pathlib", "shutil", "subprocess", "tarfile", "textwrap", "threading",
                 "unittest", "urllib.request", "zipfile"):
        mod = importlib.import_module(name)
        for _, obj in inspect.getmembers(mod):
            for _, member in [(None, obj)] + (inspect.getmembers(obj) if inspect.isclass(obj) else []):
                d = inspect.getdoc(member)
                if d and len(d) > 40:
                    docs.append(d)
    docs = sorted(set(docs))[:limit // 2]
    rng = random.Random(seed)
    out = []
    for d in docs:
        w = d.split(" ")
        for _ in range(rng.randrange(4)):
            j = rng.randrange(len(w))
            w[j] = rng.choice(("lorem", "ipsum", "dolor", w[-1]))
        out += [d, " ".join(w)]
    return out


def scan_batch(texts: list[str | None]) -> pa.RecordBatch:
    """A batch as the engine hands it to a check: text plus record id and row."""
    return pa.record_batch({"text": pa.array(texts), RECORD_ID: pa.array([f"r{i}" for i in range(len(texts))]),
                            ROW: pa.array(np.arange(len(texts)))})


def numpy_path(check: NearDedup, batch: pa.RecordBatch) -> tuple[np.ndarray, ...]:
    return check._numpy_features(batch)


def compiled(check: NearDedup, batch: pa.RecordBatch, names=("text",)) -> tuple[np.ndarray, ...]:
    o = check.options
    got = kernel.near_features(batch, names, int(o["ngram"]), int(o["min_tokens"]), check.hasher.params,
                               int(o["sketch_size"]))
    assert got is not None
    return got


def assert_same(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> None:
    for name, x, y in zip(("docs", "signatures", "sketch values", "sketch offsets", "distinct shingles"), a, b):
        assert x.dtype == y.dtype, name
        assert np.array_equal(x, y), name


@pytest.mark.parametrize("options", [{}, {"ngram": 3, "min_tokens": 4, "sketch_size": 16, "bands": 9, "rows": 3}])
def test_kernel_equals_the_numpy_path_on_real_text_and_edge_cases(options):
    texts = real_texts() + EDGE
    random.Random(1).shuffle(texts)
    batch = scan_batch(texts)
    check = NearDedup(options)
    ref = numpy_path(check, batch)
    assert len(ref[0]) > 1000 and ref[1].shape[1] == check.hasher.num_perm
    assert_same(compiled(check, batch), ref)
    # and through the check itself: its features are the reference's
    feats = check.process_batch(batch).features
    assert feats.height == len(ref[0]) and feats["nsh"].to_numpy().tolist() == ref[4].tolist()


def test_kernel_equals_the_numpy_path_on_a_record_longer_than_the_tokenizer_chunk():
    words = " ".join(real_texts(200)).split()
    long = " ".join(random.Random(2).choices(words, k=CHUNK_CHARS // 4))  # > CHUNK_CHARS characters
    assert len(long) > CHUNK_CHARS
    batch = pa.record_batch({"text": pa.array(["short text of a few words only", long, "ünïcode " + long[:5000]])})
    check = NearDedup()
    ref = numpy_path(check, batch)
    assert ref[4][1] > 10_000
    assert_same(compiled(check, batch), ref)


def test_kernel_reads_prompt_and_response_as_one_record_with_nulls():
    texts = real_texts(400)
    prompts = [t if i % 7 else None for i, t in enumerate(texts)]
    responses = [texts[-i - 1] if i % 5 else "" for i in range(len(texts))]
    batch = pa.record_batch({"prompt": pa.array(prompts), "response": pa.array(responses)})
    check = NearDedup()
    ref = numpy_path(check, batch)
    assert_same(compiled(check, batch, ("prompt", "response")), ref)


def test_kernel_holds_the_densest_token_streams_across_fields():
    """One-character tokens between one-byte separators are the most tokens a text can
    hold ((bytes + 1) // 2): the kernel sizes its token buffer by that bound per record,
    over every field, and must neither overrun nor drop a token."""
    dense = " ".join("abcdefghij"[i % 10] for i in range(9_001))  # 9,001 tokens in 18,001 bytes
    rows = {"prompt": [dense, "x", dense + "y", "é" * 3, None],
            "response": [dense, dense[:4_097], "z", "ü ü", dense]}
    batch = pa.record_batch({k: pa.array(v) for k, v in rows.items()})
    check = NearDedup({"min_tokens": 2})
    ref = numpy_path(check, batch)
    assert ref[4].max() >= 10  # shingles of the dense records: word 5-grams over 10 letters
    assert_same(compiled(check, batch, ("prompt", "response")), ref)


def test_kernel_reads_every_arrow_string_layout_alike():
    texts = real_texts(300) + EDGE
    check = NearDedup()
    whole = pa.record_batch({"text": pa.array(texts)})
    ref = numpy_path(check, whole.slice(37, 200))
    for col in (pa.array(texts), pa.array(texts, pa.large_string()), pa.array(texts, pa.string_view()),
                pa.array(texts).dictionary_encode()):
        batch = pa.record_batch({"text": col}).slice(37, 200)  # a slice: the offsets start mid-buffer
        assert_same(compiled(check, batch), ref)
    table = pa.Table.from_batches([whole.slice(37, 100), whole.slice(137, 100)])  # chunked
    assert_same(compiled(check, table), ref)


def test_the_check_falls_back_to_numpy_without_numba(monkeypatch):
    batch = scan_batch(real_texts(200))
    check = NearDedup()
    fast = check.process_batch(batch).features
    monkeypatch.setattr(kernel, "HAVE_NUMBA", False)
    assert kernel.near_features(batch, ("text",), 5, 1, check.hasher.params, 128) is None
    assert check.process_batch(batch).features.equals(fast)


def test_pair_verification_merges_sketches_like_the_numpy_path():
    texts = real_texts(1200) + EDGE
    check = NearDedup({"sketch_size": 32})  # many truncated sketches: the estimate's branch
    docs, _, values, offsets, nsh = numpy_path(check, pa.record_batch({"text": pa.array(texts)}))
    rng = np.random.default_rng(3)
    n = len(docs)
    i = np.concatenate([rng.integers(0, n, 20_000), np.arange(n - 1), np.arange(n)])
    j = np.concatenate([rng.integers(0, n, 20_000), np.arange(1, n), np.arange(n)])
    fast = sketch_pairs(values, offsets, nsh, i, j, 32)
    slow = sketch_pairs(values, offsets, nsh, i, j, 32, compiled=False)
    assert np.array_equal(fast, slow)
    assert (fast >= 0.8).sum() > 100 and np.all(fast[-n:] == 1.0)
    # against another sketch set (the history's), and with no pairs at all
    half = np.arange(0, n, 2)
    other = (values, offsets, nsh)
    assert np.array_equal(sketch_pairs(values, offsets, nsh, half, half[::-1], 32, other=other),
                          sketch_pairs(values, offsets, nsh, half, half[::-1], 32, other=other, compiled=False))
    assert len(sketch_pairs(values, offsets, nsh, i[:0], j[:0], 32)) == 0


def test_kernel_minhash_estimates_real_text_like_datasketch():
    datasketch = pytest.importorskip("datasketch")
    texts = [t for t in real_texts(1200) if len(t.split()) >= 30]
    hasher = MinHasher(num_perm=128, bands=16, rows=8)
    docs, sig, *_ = kernel.near_features(pa.record_batch({"text": pa.array(texts)}), ("text",), 5, 1,
                                         hasher.params, 128)
    assert len(docs) == len(texts)
    ours, ref, truth = [], [], []
    for x in range(0, len(texts) - 1, 2):  # (original, edited copy) pairs
        sa, sb = shingle_set(texts[x]), shingle_set(texts[x + 1])
        truth.append(len(sa & sb) / len(sa | sb))
        ours.append(estimate(sig[x:x + 1], sig[x + 1:x + 2])[0])
        ma, mb = datasketch.MinHash(num_perm=128, seed=1), datasketch.MinHash(num_perm=128, seed=1)
        ma.update_batch([s.encode() for s in sa])
        mb.update_batch([s.encode() for s in sb])
        ref.append(ma.jaccard(mb))
    ours, ref, truth = map(np.array, (ours, ref, truth))
    assert len(truth) > 200 and truth.std() > 0.05
    assert abs((ours - truth).mean()) < 0.01  # unbiased
    assert np.abs(ours - truth).mean() <= 1.2 * np.abs(ref - truth).mean() + 0.005  # as accurate as datasketch


def shingle_set(t: str, n: int = 5) -> set[str]:
    w = _NORM.sub(" ", t.lower()).split()
    return {" ".join(w[i:i + n]) for i in range(max(1, len(w) - n + 1))}


@pytest.mark.parametrize("chain", [True, False])
def test_compiled_bucket_pairs_equal_the_sorting_path(monkeypatch, chain):
    from integrity.analysis.dedup import graph

    rng = np.random.default_rng(4)
    cases = [(np.array([5, 5], np.uint64), np.array([3, 3])),  # one item twice: no self pair
             (np.array([1, 2, 3], np.uint64), np.array([0, 1, 2]))]  # no bucket of two
    for n, distinct in [(50, 7), (20_000, 3_000), (200_000, 150_000)]:
        items = np.sort(rng.integers(0, n, n))
        keys = rng.integers(0, distinct, n)
        cases += [(keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15), items),  # hashed (band) keys
                  (keys.astype(np.int64), items)]  # small integer keys: one bin
    cases.append((np.zeros(5000, np.uint64), np.arange(5000)))  # one huge bucket stays linear
    for keys, items in cases:
        fast = graph.bucket_pairs(keys, items, chain)
        monkeypatch.setattr(graph, "HAVE_NUMBA", False)
        slow = graph.bucket_pairs(keys, items, chain)
        monkeypatch.setattr(graph, "HAVE_NUMBA", True)
        assert all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(fast, slow))
    assert len(fast[0]) == (2 * 4999 - 1 if chain else 4999)


def test_character_tables_follow_str_isalnum_and_lower_for_every_code_point():
    from integrity.analysis.dedup.text import _build_char_tables

    word, lower = _build_char_tables()
    for c in range(0x110000):  # the definition, one code point at a time
        w = (chr(c).isalnum() or c == ord("_")) and not 0xD800 <= c < 0xE000
        assert word[c] == w, hex(c)
        if w and len(chr(c).lower()) == 1:
            assert lower[c] == ord(chr(c).lower()), hex(c)
        else:
            assert lower[c] == c, hex(c)


@pytest.mark.parametrize("bands,rows", [(20, 5), (9, 3), (1, 1)])
def test_compiled_band_keys_equal_the_numpy_path(bands, rows):
    hasher = NearDedup({"bands": bands, "rows": rows}).hasher
    sig = np.random.default_rng(bands).integers(0, 2**32, (3_000, hasher.num_perm), dtype=np.uint32)
    sig[:10] = 0xFFFFFFFF  # the sentinel of an empty permutation
    got = kernel.band_keys(sig, bands, rows)
    assert got.dtype == np.uint64 and got.shape == (3_000, bands)
    np.testing.assert_array_equal(got, hasher.band_keys(sig))


@pytest.mark.parametrize("n", [0, 1, 2, 31, 32, 33, 70, 500, 4096])
def test_the_kernels_shingle_sort_equals_numpy(n):
    """The per-record sort of shingle values (insertion below 33 values, a byte-wise radix
    sort above, skipping bytes every value shares) against np.sort, on random values, many
    repeats, values that share their top bytes, and the sentinel's neighbour."""
    rng = np.random.default_rng(n)
    cases = [rng.integers(0, 2**32 - 1, n, dtype=np.uint32),
             rng.integers(0, 5, n, dtype=np.uint32) * np.uint32(0x01010101),
             rng.integers(0, 2**16, n, dtype=np.uint32),
             np.full(n, 0xFFFFFFFE, dtype=np.uint32)]
    counts = np.zeros((4, 256), dtype=np.int64)
    for x in cases:
        buf = np.concatenate([x, rng.integers(0, 9, 5, dtype=np.uint32)])  # values past n are not sorted
        spare = np.empty_like(buf)
        got = kernel._sort_u32(buf, spare, n, counts)
        np.testing.assert_array_equal(got[:n], np.sort(x))


@pytest.mark.parametrize("n", range(0, 10))
def test_min_hashes_four_shingles_a_pass_equal_the_plain_minimum(n):
    """The MinHash values computed four shingles a pass (and the 0-3 left over one at a time)
    are the plain minimum over every shingle of (a * x + b) >> 32, and 2**32 - 1 for none."""
    rng = np.random.default_rng(n)
    perms = 37  # not a multiple of the vector width
    a = rng.integers(1, 2**63, perms, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, perms, dtype=np.uint64)
    xs = rng.integers(0, 2**32, n + 3, dtype=np.uint64)  # longer than n: only xs[:n] counts
    row = np.empty(perms, dtype=np.uint64)
    kernel._min_hashes(xs, n, a, b, row)
    with np.errstate(over="ignore"):
        want = ((a[:, None] * xs[None, :n] + b[:, None]) >> np.uint64(32)).min(axis=1) if n else \
            np.full(perms, 2**32 - 1, dtype=np.uint64)
    np.testing.assert_array_equal(row, want)
