import math

import polars as pl
import pyarrow as pa
import pytest

from integrity.analysis import fairness
from integrity.analysis.features import (NUMERIC_FEATURES, batch_features, cached_batch_features, record_text,
                                         text_features)


def one(text: str) -> dict:
    return text_features([text]).row(0, named=True)


def test_every_feature_is_computed_and_empty_text_has_none():
    f = text_features(["A plain sentence about rivers. Another one follows here!", "", None])
    assert f.columns == [*NUMERIC_FEATURES, "language"]
    first = f.row(0, named=True)
    assert all(first[c] is not None and math.isfinite(first[c]) for c in NUMERIC_FEATURES)
    assert all(f.row(i, named=True)[c] is None for i in (1, 2) for c in NUMERIC_FEATURES)


def test_feature_values_are_what_they_say():
    r = one("the cat the cat the cat the cat")
    assert r["distinct_1"] == pytest.approx(2 / 8)
    assert r["rep_3gram"] == pytest.approx(1 - 2 / 6)  # 6 trigrams, 2 distinct
    assert r["log_words"] == pytest.approx(math.log(9))
    assert one("ABCD efgh")["frac_upper"] == pytest.approx(0.5)
    assert one("12 34")["frac_digit"] == pytest.approx(4 / 5)
    # repetitive text compresses far better than varied text
    assert one("spam " * 200)["compression_ratio"] < 0.1 < one(
        "Quick zephyrs blow, vexing daft Jim; the five boxing wizards jump quickly.")["compression_ratio"]
    # uniform sentence lengths have low burstiness
    even = one("One two three four. Five six seven eight. Nine ten eleven twelve.")
    uneven = one("One. Two three four five six seven eight nine ten eleven twelve thirteen.")
    assert even["sent_len_cv"] < 0.01 < uneven["sent_len_cv"]


def test_language_guess_and_fluency_proxy():
    assert one("This is the text of a page that was written by a person for the reader.")["language"] == "en"
    assert one("Der Hund ist nicht in dem Haus und die Katze ist auch nicht da.")["language"] == "de"
    assert one("Le chat est dans la maison et il ne veut pas sortir de la cuisine.")["language"] == "fr"
    assert one("Привет, как дела? Это простой текст на русском языке.")["language"] == "cyrillic"
    prose = one("It was the best of times and it was the worst of times for all of them.")["stopword_frac"]
    spam = one("cheap pills buy viagra online casino bonus free money crypto deals")["stopword_frac"]
    assert prose > 0.3 > spam


def test_generator_boilerplate_is_counted():
    assert one("As an AI language model, I cannot browse. I hope this helps!")["boilerplate"] == 3  # 2 strong + 1 weak
    assert one("Certainly! Here's the summary you asked for.")["boilerplate"] == 2
    assert one("A human wrote this line about gardens.")["boilerplate"] == 0


def test_record_text_and_batch_features():
    b = pa.RecordBatch.from_pylist([{"record_id": "a", "row": 0, "prompt": "Q?", "response": "Answer."}])
    assert record_text(b).to_pylist() == ["Q?\nAnswer."]
    f = batch_features(b)
    assert f["record_id"].to_list() == ["a"] and f["row"].to_list() == [0]
    assert record_text(pa.RecordBatch.from_pylist([{"record_id": "a", "row": 0, "label": "x"}])) is None


def test_checks_of_one_shard_share_the_features_of_a_batch():
    b = pa.RecordBatch.from_pylist([{"record_id": str(i), "row": i, "text": f"text {i}"} for i in range(5)])
    assert cached_batch_features(b) is cached_batch_features(b)
    other = pa.RecordBatch.from_pylist([{"record_id": "x", "row": 0, "text": "other"}])
    assert cached_batch_features(other).height == 1


def test_fairness_lexicons():
    f = fairness.fairness_features(pl.Series(["She is a brilliant engineer.", "The men were violent criminals.",
                                              "A table of numbers."]))
    assert f["fair_female"].to_list() == [1, 0, 0] and f["fair_male"].to_list() == [0, 1, 0]
    assert f["fair_occupation"].to_list() == [1, 0, 0]
    s = fairness.summarize(f)
    assert s["groups"]["female"]["sentiment"] == 1.0 and s["groups"]["male"]["sentiment"] == -1.0
    rows = {r["group"]: r for r in fairness.compare(s, s)}
    assert rows["female"]["rate_ratio"] == pytest.approx(1.0)


def test_features_are_fast_enough():
    import time

    texts = [f"Record {i}: a package that provides the library for parsing files, version {i}." for i in range(5000)]
    t = time.perf_counter()
    text_features(texts)
    assert time.perf_counter() - t < 10  # ~1 s on one core; generous for a shared machine
