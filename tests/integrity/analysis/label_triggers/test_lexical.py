"""The lexical statistics engine: tokens and offsets, n-grams, association, groups, spans, tests."""
import math

import numpy as np
import polars as pl
import pytest

from integrity.analysis.label_triggers import lexical as lx


def test_tokens_keep_offsets_into_the_original_text():
    texts = ["Hello, Wörld!  cf the 中文 end", None, "", "İstanbul\tx", "a" * 3 + " b"]
    toks, vocab = lx.tokenize(texts)
    assert toks.height == 5
    for text, st, en in zip(texts, toks["start"].to_list(), toks["end"].to_list()):
        pieces = [text[a:b] for a, b in zip(st, en)] if text else []
        assert all(p.strip() == p and p for p in pieces)
    s0 = [texts[0][a:b] for a, b in zip(toks["start"][0], toks["end"][0])]
    assert s0 == ["Hello", ",", "Wörld", "!", "cf", "the", "中", "文", "end"]
    assert toks["tok"][1].to_list() == [] and toks["tok"][2].to_list() == []
    words = dict(zip(vocab["h"].to_list(), vocab["token"].to_list()))
    assert words[toks["tok"][0][0]] == "hello"  # lower-cased for hashing, offsets on the original


def test_hashes_are_case_insensitive_and_capped():
    toks, _ = lx.tokenize(["The CAT", "the cat the cat"], max_tokens=3)
    a, b = toks["tok"].to_list()
    assert a == b[:2] and len(b) == 3


def _table(texts):
    toks, vocab = lx.tokenize(texts)
    return lx.TokenTable.from_lists(toks["tok"]), dict(zip(vocab["h"].to_list(), vocab["token"].to_list()))


def test_ngrams_stay_inside_records_and_count_once_per_record():
    table, vocab = _table(["a b a b", "b a", "c"])
    grams = lx.doc_ngrams(table, (1, 2), min_count=1)
    df = lx.document_frequency(grams)
    by = dict(zip(df["g"].to_list(), df["df"].to_list()))
    h = {w: int(k) for k, w in vocab.items()}
    assert by[h["a"]] == 2 and by[h["b"]] == 2 and by[h["c"]] == 1
    ab = int(lx.mix(np.array([h["a"]], dtype=np.uint64), np.uint64(h["b"]))[0])
    ba = int(lx.mix(np.array([h["b"]], dtype=np.uint64), np.uint64(h["a"]))[0])
    assert by[ab] == 1 and by[ba] == 2  # "a b" only in the first record, "b a" in both
    # no bigram joins the last token of one record and the first of the next
    cross = int(lx.mix(np.array([h["a"]], dtype=np.uint64), np.uint64(h["c"]))[0])
    assert cross not in by
    # boundary markers make "<s> c" an n-gram, but never a unigram
    bos_c = int(lx.mix(np.array([lx.BOS], dtype=np.uint64), np.uint64(h["c"]))[0])
    assert bos_c in by and int(lx.BOS) not in by


def test_label_association_counts_and_binomial_tail():
    texts = ["cf good"] * 20 + ["good"] * 20 + ["bad"] * 40
    labels = np.array([1] * 40 + [0] * 40)
    table, vocab = _table(texts)
    grams = lx.doc_ngrams(table, (1,))
    assoc = lx.label_association(grams, labels, min_support=5)
    h = {w: int(k) for k, w in vocab.items()}
    row = assoc.filter(pl.col("g") == h["cf"]).row(0, named=True)
    assert (row["df"], row["k"], row["target"]) == (20, 20, 1)
    assert row["share"] == 1.0 and row["p0"] == 0.5
    assert math.isclose(row["logp"], 20 * math.log(0.5), rel_tol=1e-9)


def test_cooccurrence_groups_merge_triggers_used_together_but_not_bystanders():
    rng = np.random.default_rng(0)
    n = 2000
    X = np.zeros((n, 4), dtype=np.float32)
    trig = rng.choice(n, 60, replace=False)
    X[trig[:45], 0] = 1  # "cf"
    X[trig[15:], 1] = 1  # "bb": the same records, partly
    X[rng.choice(n, 50, replace=False), 2] = 1  # an unrelated word
    X[trig[:2], 3] = 1  # a small n-gram touching the trigger twice
    others = np.setdiff1d(np.arange(n), trig)
    X[others[:8], 3] = 1
    import scipy.sparse as sp

    comp = lx.cooccurrence_groups(sp.csr_matrix(X), X.sum(0), np.zeros(4, dtype=int), n)
    assert comp[0] == comp[1]
    assert comp[2] != comp[0] and comp[3] != comp[0]


def test_repeated_spans_recover_an_inserted_sentence():
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(300)]
    texts = []
    for i in range(400):
        toks = list(rng.choice(words, 12))
        if i % 10 == 0:
            toks[5:5] = "i watch this 3d movie".split()
        texts.append(" ".join(toks))
    table, vocab = _table(texts)
    spans = lx.repeated_spans(table, 3, 20)
    assert spans["rec"].n_unique() == 40
    longest = spans.sort("ntok", descending=True).row(0, named=True)
    toks = table.gram_tokens(np.array([longest["rec"]]), np.array([longest["p0"]]), np.array([longest["ntok"]]))[0]
    assert lx.fmt_tokens(toks, vocab) == "i watch this 3d movie"
    assert spans["span"].n_unique() == 1


def test_benjamini_hochberg():
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    assert lx.benjamini_hochberg(np.log(p), 0.05).tolist() == [True, True] + [False] * 8
    assert lx.benjamini_hochberg(np.log(p), 0.1).tolist() == [True] * 6 + [False] * 4  # p <= q * i / m
    assert lx.benjamini_hochberg(np.log(p), 0.25).all()
    assert lx.benjamini_hochberg(np.array([]), 0.05).size == 0


def test_tail_pvalues_single_out_what_the_corpus_has_never_seen():
    rng = np.random.default_rng(2)
    natural = rng.exponential(1.0, 2000)
    values = np.concatenate([natural, [40.0]])
    lp = lx.tail_pvalues(values)
    assert lp[-1] < math.log(1e-6)
    assert lp[np.argmax(natural)] > math.log(1e-4)
    # a heavy-tailed corpus (many strong natural associations) widens the null
    heavy = np.concatenate([rng.pareto(1.5, 2000) * 2, [40.0]])
    assert lx.tail_pvalues(heavy)[-1] > lp[-1]


def test_purity_evidence_is_zero_for_ordinary_features():
    ev = lx.purity_evidence(np.array([85, 100, 30]), np.array([100, 100, 30]), np.array([0.5, 0.5, 0.5]), 0.8)
    assert ev[0] < 0.1 and ev[1] > 5 and ev[2] > 2


def test_occurrences_merge_overlapping_spans():
    texts = ["x , I watch this 3D movie y"]
    toks, vocab = lx.tokenize(texts)
    table = lx.TokenTable.from_lists(toks["tok"])
    vocab = dict(zip(vocab["h"].to_list(), vocab["token"].to_list()))
    occ = lx.occurrences(table, vocab, 0, [(2, 3), (4, 3), (-1, 2)], toks["start"][0].to_list(),
                         toks["end"][0].to_list(), "text")
    assert [(o["start"], o["end"], o["text"]) for o in occ] == [(0, 1, "x"), (4, 25, "i watch this 3d movie")]
    assert texts[0][4:25] == "I watch this 3D movie"


@pytest.mark.skipif(not lx.has_background(), reason="wordfreq (background language reference) not installed")
def test_background_frequency():
    bg = lx.background_frequency(["the", "cf", "zzqqxv", ","])
    assert bg[0] > 1e-2 and 1e-7 < bg[1] < 1e-4 and bg[2] == 1e-8 and np.isnan(bg[3])


def test_context_diversity_tells_a_placed_word_from_a_written_one():
    # sentences from a small grammar: "zorp" is always "the zorp is ..." (its own syntax); "blip"
    # is dropped at random positions, as a trigger is; a common noun has both kinds of neighbours
    rng = np.random.default_rng(0)
    nouns = [f"n{i}" for i in range(3000)]
    verbs = [f"v{i}" for i in range(800)]
    texts = []
    for _ in range(1500):
        words = []
        for _ in range(int(rng.integers(2, 5))):
            if rng.random() < 0.05:
                words += ["the", "zorp", "is", str(rng.choice(nouns)), "."]
            else:
                words += ["the", str(rng.choice(nouns)), str(rng.choice(verbs)), "a", str(rng.choice(nouns)), "."]
        if rng.random() < 0.05:
            words.insert(int(rng.integers(0, len(words) + 1)), "blip")
        texts.append(" ".join(words))
    toks, vocab = lx.tokenize(texts)
    table = lx.TokenTable.from_lists(toks["tok"], boundaries=True)
    ids = {w: h for h, w in zip(vocab["h"].to_list(), vocab["token"].to_list())}
    div = lx.context_diversity(table, [ids["zorp"], ids["blip"]])
    r = dict(zip(div["w"].to_list(), div["R"].to_list()))
    m = dict(zip(div["w"].to_list(), div["m"].to_list()))
    assert m[ids["blip"]] >= 50 and m[ids["zorp"]] >= 50
    assert r[ids["blip"]] >= 0.75          # about the neighbours of random positions (a small vocabulary: noisy)
    assert r[ids["zorp"]] <= 0.1           # "the zorp is": two neighbours, whatever its count
    assert lx.context_diversity(table, []).height == 0
