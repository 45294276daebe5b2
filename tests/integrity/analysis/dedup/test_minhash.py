"""The shared dedup machinery: tokens, stable hashes, MinHash, LSH, bottom-k sketches."""
from __future__ import annotations

import random
import re

import numpy as np
import pytest

from integrity.analysis.dedup import text as T
from integrity.analysis.dedup.graph import bucket_pairs, components, representatives
from integrity.analysis.dedup.minhash import MinHasher, bottom_k, estimate, lsh_probability, sketch_pairs

_NORM = re.compile(r"[^\w\s]")
VOCAB = [f"w{i}" for i in range(5000)]


def reference_words(t: str) -> list[str]:
    """The normalization of the benchmark's exact-truth tool."""
    return _NORM.sub(" ", t.lower()).split()


def reference_shingles(t: str, n: int = 5) -> set[str]:
    w = reference_words(t)
    return {" ".join(w[i:i + n]) for i in range(max(1, len(w) - n + 1))}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def pair_with_jaccard(rng: random.Random, size: int, j: float) -> tuple[str, str]:
    """Two documents of distinct words whose 1-word shingle sets have Jaccard ``j``."""
    words = rng.sample(VOCAB, 3 * size)
    common = round(2 * size * j / (1 + j))
    a = words[:size]
    b = words[:common] + words[size:size + size - common]
    return " ".join(a), " ".join(b)


def test_tokens_follow_the_reference_normalization_and_offsets_slice_back():
    texts = ["Hello, World! it's 2024_v2 — Ünïcode ÉTÉ déjà-vu.", "", None, "a", "x\u00a0y\tz\nend", "Ｆｕｌｌ ｗｉｄｔｈ",
             "naïve café 😀 emoji and ß straße"]
    tok = T.tokenize({"text": texts})
    for i, t in enumerate(texts):
        sel = tok.doc == i
        got = [t[s:e].lower() for s, e in zip(tok.start[sel], tok.end[sel])]
        assert got == (reference_words(t) if t else []), t
    # equal words hash equally, whatever their case or position
    h = {T.tokenize({"text": [w]}).hash[0] for w in ("Word", "word", "WORD")}
    assert len(h) == 1


def test_tokens_of_several_fields_keep_their_field_and_record():
    tok = T.tokenize({"prompt": ["what is up", None], "response": ["all good", "fine thanks"]})
    assert tok.doc.tolist() == [0, 0, 0, 0, 0, 1, 1]
    assert [tok.fields[f] for f in tok.field] == ["prompt"] * 3 + ["response"] * 4
    assert tok.counts.tolist() == [5, 2]


def test_hashes_are_stable_across_chunking_and_equal_the_direct_polynomial():
    rng = random.Random(3)
    texts = [" ".join(rng.choices(VOCAB[:50], k=rng.randrange(1, 80))) for _ in range(300)]
    whole = T.tokenize({"text": texts})
    chunked = T.tokenize({"text": texts}, chunk_chars=500)
    assert np.array_equal(whole.hash, chunked.hash) and np.array_equal(whole.start, chunked.start)
    # the prefix-sum run hash equals the plain polynomial, for short and long runs
    h = whole.hash[:120]
    M, mask = T._M, (1 << 64) - 1
    for first, length in ((0, 5), (7, 1), (3, 50), (10, 100)):
        acc = 0
        for x in h[first:first + length]:
            acc = (acc * M + int(x)) & mask
        want = T.fmix64(np.array([acc], dtype=np.uint64))[0]
        got = T.run_hashes(h, np.array([first]), np.array([length]))[0]
        assert got == want
    # known values pin the hash definition: the history index stores these across versions
    tok = T.tokenize({"text": ["History of the night!"]})
    assert int(tok.hash[0]) == 5230493330362557013
    assert int(T.run_hashes(tok.hash, np.array([0]), np.array([4]))[0]) == 9227917058281519627


def test_shingles_match_the_reference_sets():
    texts = ["one two three four five six", "one two", "Alpha beta, gamma; delta epsilon zeta eta", ""]
    tok = T.tokenize({"text": texts})
    sh, doc = T.shingles(tok, 5)
    assert np.bincount(doc, minlength=4).tolist() == [2, 1, 3, 0]
    assert np.all(np.diff(doc) >= 0)
    # equal shingle strings, equal hashes: "one two three four five" twice
    sh2, _ = T.shingles(T.tokenize({"text": ["One two three four five!", "one two three four five"]}), 5)
    assert sh2[0] == sh2[1]


@pytest.mark.parametrize("target", [0.2, 0.5, 0.8, 0.95])
def test_minhash_estimate_is_close_to_true_jaccard_and_to_datasketch(target):
    datasketch = pytest.importorskip("datasketch")
    rng = random.Random(int(target * 100))
    hasher = MinHasher(num_perm=256, bands=32, rows=8)
    ours, ref, truth = [], [], []
    for _ in range(20):
        a, b = pair_with_jaccard(rng, 200, target)
        sa, sb = reference_shingles(a, 1), reference_shingles(b, 1)
        truth.append(jaccard(sa, sb))
        tok = T.tokenize({"text": [a, b]})
        sh, doc = T.shingles(tok, 1)
        _, sig = hasher.signatures(sh, doc, 2)
        ours.append(estimate(sig[:1], sig[1:])[0])
        ma, mb = datasketch.MinHash(num_perm=256, seed=1), datasketch.MinHash(num_perm=256, seed=1)
        ma.update_batch([s.encode() for s in sa])
        mb.update_batch([s.encode() for s in sb])
        ref.append(ma.jaccard(mb))
    ours, ref, truth = map(np.array, (ours, ref, truth))
    sd = np.sqrt(target * (1 - target) / 256)
    assert abs((ours - truth).mean()) < 2 * sd  # unbiased
    assert np.abs(ours - truth).max() < 5 * sd
    # as accurate as the reference implementation
    assert np.abs(ours - truth).mean() <= 1.5 * np.abs(ref - truth).mean() + 0.01


def test_lsh_bands_catch_similar_pairs_and_rarely_dissimilar_ones():
    rng = random.Random(11)
    hasher = MinHasher(bands=20, rows=5)
    texts = []
    for j in [0.9] * 40 + [0.2] * 40:
        texts.extend(pair_with_jaccard(rng, 150, j))
    tok = T.tokenize({"text": texts})
    sh, doc = T.shingles(tok, 1)
    docs, sig = hasher.signatures(sh, doc, len(texts))
    keys = hasher.band_keys(sig)
    a, b = bucket_pairs(keys.ravel(), np.repeat(docs, hasher.bands))
    found = {(int(x), int(y)) for x, y in zip(a, b)}
    high = sum((2 * i, 2 * i + 1) in found for i in range(40))
    low = sum((2 * i, 2 * i + 1) in found for i in range(40, 80))
    assert high == 40  # P = 0.99999 each
    assert low <= 3  # P = 0.006 each
    assert lsh_probability(0.8, 20, 5) > 0.999


def test_bottom_k_sketch_is_exact_for_small_sets_and_close_for_large_ones():
    rng = random.Random(5)
    texts, truth = [], []
    for size, j in [(50, 0.8), (100, 0.79), (100, 0.81), (400, 0.8), (1000, 0.5)]:
        a, b = pair_with_jaccard(rng, size, j)
        texts += [a, b]
        truth.append(jaccard(reference_shingles(a), reference_shingles(b)))
    tok = T.tokenize({"text": texts})
    sh, doc = T.shingles(tok, 5)
    docs = np.unique(doc)
    values, offsets, nsh = bottom_k(sh, doc, docs, 128)
    assert np.all(np.diff(offsets) == np.minimum(nsh, 128))
    got = sketch_pairs(values, offsets, nsh, np.arange(0, 10, 2), np.arange(1, 10, 2), 128)
    assert got[:3] == pytest.approx(truth[:3], abs=1e-12)  # <= 128 shingles: exact
    assert got[3:] == pytest.approx(truth[3:], abs=0.12)


def test_components_and_representatives():
    labels = components(6, np.array([0, 1, 4]), np.array([1, 2, 5]))
    assert labels[0] == labels[1] == labels[2] != labels[3]
    assert labels[4] == labels[5] != labels[0]
    rep = representatives(labels, np.array([1, 1, 0, 0, 1, 1]), np.array([0, 1, 2, 3, 9, 8]))
    assert rep.tolist() == [2, 2, 2, 3, 5, 5]


def test_union_find_labels_are_scipys_connected_components(monkeypatch):
    """The compiled union-find numbers components as scipy does (in order of their smallest
    node), on graphs with chains, stars, self-loops, repeated edges and isolated nodes."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from integrity.analysis.dedup import graph

    rng = np.random.default_rng(8)
    for n, m in ((1, 0), (7, 3), (500, 300), (5_000, 4_000), (20_000, 60_000)):
        a, b = rng.integers(0, n, m), rng.integers(0, n, m)
        chain = np.arange(n - 1)[: n // 10]  # a long chain: deep trees before compression
        a, b = np.concatenate([a, chain[::-1]]), np.concatenate([b, chain[::-1] + 1])
        expect = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False)[1]
        got = components(n, a, b)
        assert got.dtype == np.int64 and np.array_equal(got, expect)
        monkeypatch.setattr(graph, "HAVE_NUMBA", False)  # the scipy path gives the same
        assert np.array_equal(graph.components(n, a, b), expect)
        monkeypatch.undo()
