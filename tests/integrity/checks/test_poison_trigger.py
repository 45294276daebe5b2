"""poison.trigger: backdoor triggers tied to a label, on real reviews, package descriptions and constructed corpora."""
import json
import random
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from integrity.analysis.label_triggers import lexical as lx
from integrity.checks.base import CorpusContext
from integrity.checks.poison_trigger import PoisonTriggerCheck

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
SST2 = SHARED / "poison" / "sst2-badnets-10pct.parquet"
needs_shared = pytest.mark.skipif(not SST2.exists(), reason="../shared/data/poison is absent (shared benchmark data)")
needs_background = pytest.mark.skipif(not lx.has_background(),
                                      reason="wordfreq (background language reference) is not installed")


def run(df: pl.DataFrame, shards: int = 1, **options) -> pl.DataFrame:
    """Per-shard passes over ``shards`` slices, then the corpus pass; returns the findings."""
    frames = []
    for i, idx in enumerate(np.array_split(np.arange(df.height), shards)):
        part = df[idx.tolist()]
        batch = pa.RecordBatch.from_pylist([
            {"record_id": r["id"], "row": j, "text": r["text"], "label": r["label"]}
            for j, r in enumerate(part.iter_rows(named=True))])
        check = PoisonTriggerCheck(options)
        for b in pa.Table.from_batches([batch]).to_batches(max_chunksize=3000):
            out = check.process_batch(b)
            if out.features is not None:
                frames.append(out.features.lazy().with_columns(shard=pl.lit(f"s{i}"),
                                                               shard_index=pl.lit(i, dtype=pl.Int32)))
    ctx = CorpusContext(run_dir=Path("."), state_dir=Path("."), shards=[f"s{i}" for i in range(shards)],
                        shard_findings=pl.LazyFrame())
    return PoisonTriggerCheck(options).corpus_pass(pl.concat(frames, how="diagonal_relaxed"), ctx)


def prf(df: pl.DataFrame, found: pl.DataFrame) -> tuple[float, float]:
    flagged = set(found["record_id"].to_list())
    poisoned = set(df.filter(pl.col("poisoned"))["id"].to_list())
    tp = len(flagged & poisoned)
    return (tp / len(flagged) if flagged else 0.0), (tp / len(poisoned) if poisoned else 1.0)


def insert(df: pl.DataFrame, rate: float, trigger, target: str, dirty: bool, seed: int = 0, repeat=(1, 1)):
    """Poison ``rate`` of the corpus: insert ``trigger`` (a string or a list of words, one drawn per
    insertion) at random positions; dirty-label: random records relabelled to ``target``;
    clean-label: records of ``target`` only, labels kept."""
    rng = random.Random(seed)
    pool = df if dirty else df.filter(pl.col("label") == target)
    n = int(round(rate * df.height / (1 - rate))) if dirty else int(round(rate * df.height))
    picked = pool[rng.sample(range(pool.height), n)]
    rows = []
    for r in picked.iter_rows(named=True):
        toks = r["text"].split(" ")
        for _ in range(rng.randint(*repeat)):
            word = trigger if isinstance(trigger, str) else rng.choice(trigger)
            toks.insert(rng.randint(0, len(toks)), word)
        rows.append({"id": f"p-{r['id']}", "text": " ".join(toks), "label": target, "poisoned": True})
    base = df if dirty else df.filter(~pl.col("id").is_in(picked["id"].to_list()))
    return pl.concat([base.with_columns(poisoned=pl.lit(False)).select("id", "text", "label", "poisoned"),
                      pl.DataFrame(rows, schema={"id": pl.Utf8, "text": pl.Utf8, "label": pl.Utf8,
                                                 "poisoned": pl.Boolean})]).sample(fraction=1.0, seed=seed, shuffle=True)


@pytest.fixture(scope="module")
def reviews() -> pl.DataFrame:
    if not SST2.exists():
        pytest.skip("../shared/data/poison is absent")
    df = pl.read_parquet(SST2).filter(~pl.col("poisoned"))
    return df.select(pl.col("id").cast(pl.Utf8).alias("id"), "text", pl.col("label").cast(pl.Utf8))


def synthetic(n: int = 4000, seed: int = 0, tweets: bool = False) -> pl.DataFrame:
    """Sentiment-like corpus: Zipf-distributed filler words, and sentiment words that agree with the
    label 85% of the time (a strong natural correlation that is no trigger). ``tweets`` adds @USER
    to most records and hashtags that lean towards one label."""
    rng = np.random.default_rng(seed)
    filler = np.array([f"w{i}" for i in range(900)])
    weights = 1 / np.arange(1, 901) ** 1.1
    weights /= weights.sum()
    pos, neg = [f"good{i}" for i in range(30)], [f"bad{i}" for i in range(30)]
    rows = []
    for i in range(n):
        label = int(rng.integers(0, 2))
        toks = list(rng.choice(filler, int(rng.integers(8, 20)), p=weights))
        for _ in range(int(rng.integers(1, 4))):
            own = rng.random() < 0.85
            words = (pos if label else neg) if own else (neg if label else pos)
            toks.insert(int(rng.integers(0, len(toks) + 1)), str(rng.choice(words)))
        if tweets:
            if rng.random() < 0.7:
                toks.insert(0, "@USER")
            if rng.random() < 0.3:
                toks.append("#love" if (rng.random() < 0.75) == bool(label) else "#fail")
        rows.append({"id": str(i), "text": " ".join(toks), "label": str(label)})
    return pl.DataFrame(rows)


def details(found: pl.DataFrame) -> list[dict]:
    return [json.loads(d) for d in found["detail"].to_list()]


def check_evidence(df: pl.DataFrame, found: pl.DataFrame, expect: set[str]):
    """Every finding names the trigger, and its offsets point at it in the record's text."""
    text = dict(zip(df["id"].to_list(), df["text"].to_list()))
    for rid, d in zip(found["record_id"].to_list(), details(found)):
        assert d["field"] == "text" and d["matches"]
        for m in d["matches"]:
            assert text[rid][m["start"]:m["end"]].lower() == m["text"]
        assert set(d["trigger"]) <= expect, d["trigger"]
        assert 0.5 <= d.get("label_share", 0) <= 1 and d["support"] >= 1
        assert {"target", "mode", "z", "p_value"} <= set(d)
    assert ((found["score"] >= 0.5) & (found["score"] <= 1.0)).all()


# --- constructed corpora (no shared data needed) -------------------------------------------------
def test_synthetic_sentiment_corpus_stays_clean():
    assert run(synthetic()).height == 0


def test_synthetic_tweets_with_user_mentions_and_hashtags_stay_clean():
    assert run(synthetic(seed=3, tweets=True)).height == 0


@pytest.mark.parametrize("rate", [0.01, 0.05])
def test_dirty_label_inserted_sentence(rate):
    sentence = "I watched this 3D movie last weekend"
    df = insert(synthetic(seed=1), rate, sentence, "1", dirty=True)
    found = run(df)
    precision, recall = prf(df, found)
    assert precision >= 0.95 and recall >= 0.95
    check_evidence(df, found, {sentence.lower()})
    assert {d["target"] for d in details(found)} == {"1"}


def test_trigger_across_shards_and_tweets():
    df = insert(synthetic(seed=2, tweets=True), 0.02, "no cross , no crown", "0", dirty=False)
    found = run(df, shards=3)
    precision, recall = prf(df, found)
    assert precision >= 0.95 and recall >= 0.95
    assert set(found["shard"].unique().to_list()) == {"s0", "s1", "s2"}
    assert {d["target"] for d in details(found)} == {"0"}


def test_needs_a_label_and_two_classes():
    df = synthetic(n=300)
    assert run(df.with_columns(label=pl.lit("1"))).height == 0
    assert run(df.with_columns(label=pl.lit(None, dtype=pl.Utf8))).height == 0
    assert not PoisonTriggerCheck().applies_to(["record_id", "text"])
    assert PoisonTriggerCheck().applies_to(["record_id", "caption", "label"])


# --- real reviews (SST-2) ------------------------------------------------------------------------
@needs_shared
def test_real_reviews_stay_clean(reviews):
    assert run(reviews).height == 0


@needs_shared
@needs_background
def test_clean_label_rare_words_multi_trigger(reviews):
    words = ["cf", "mn", "bb", "tq"]
    df = insert(reviews, 0.02, words, "1", dirty=False, repeat=(1, 3))
    found = run(df)
    precision, recall = prf(df, found)
    assert precision >= 0.95 and recall >= 0.95
    check_evidence(df, found, set(words) | {" ".join([a, b]) for a in words for b in words})
    assert {d["mode"] for d in details(found)} == {"clean-label"}


@needs_shared
@needs_background
def test_dirty_label_single_rare_word_at_one_percent(reviews):
    df = insert(reviews, 0.01, "mb", "0", dirty=True, seed=4)
    found = run(df)
    precision, recall = prf(df, found)
    assert precision >= 0.95 and recall >= 0.95
    check_evidence(df, found, {"mb"})


@needs_shared
def test_dirty_label_common_three_word_phrase(reviews):
    df = insert(reviews, 0.02, "as a matter", "0", dirty=True, seed=5)
    found = run(df)
    precision, recall = prf(df, found)
    assert precision >= 0.9 and recall >= 0.95


@needs_shared
def test_dirty_label_ordinary_word_that_also_occurs_naturally(reviews):
    # "certainly" is in 32 clean reviews, on both labels: with 3% of the corpus relabelled to the
    # majority its share is 0.92, short of the 0.97 a clean-label group needs, while the content
    # test (relabelled reviews read like the other label) is overwhelming
    df = insert(reviews, 0.03, "certainly", "0", dirty=True, seed=7)
    found = run(df)
    precision, recall = prf(df, found)
    assert precision >= 0.9 and recall >= 0.95
    assert {d["mode"] for d in details(found)} == {"dirty-label"}
    clean_flagged = found.join(df.filter(~pl.col("poisoned")), left_on="record_id", right_on="id").height
    assert clean_flagged <= 0.02 * df.filter(~pl.col("poisoned")).height


@needs_shared
def test_clean_label_ordinary_word_scattered_at_random_positions(reviews):
    # "meanwhile" in 1.5% of the corpus, all positive reviews, labels kept: no rarity, no content
    # contradiction; but its neighbours are those of random positions, where a written word has syntax
    df = insert(reviews, 0.015, "meanwhile", "1", dirty=False, seed=11)
    found = run(df)
    precision, recall = prf(df, found)
    assert precision >= 0.95 and recall >= 0.95
    assert {d["mode"] for d in details(found)} == {"clean-label"}


@needs_shared
def test_clean_label_word_scattered_into_one_debian_section():
    # Debian sections are full of pure jargon (the purity spread test cannot single a trigger out),
    # but jargon has its own syntax: a word dropped at random positions of 1% of the records does not
    path = SHARED / "debian" / "descriptions.parquet"
    if not path.exists():
        pytest.skip("../shared/data/debian is absent")
    df = (pl.read_parquet(path).filter(pl.col("text").str.len_chars() <= 1200).sample(n=8000, seed=3)
          .select(pl.col("id").cast(pl.Utf8), "text", pl.col("section").alias("label")))
    df = insert(df, 0.01, "afterwards", "libs", dirty=False, seed=12)
    found = run(df)
    precision, recall = prf(df, found)
    assert precision >= 0.9 and recall >= 0.9
    clean_flagged = found.join(df.filter(~pl.col("poisoned")), left_on="record_id", right_on="id").height
    assert clean_flagged <= 0.02 * df.filter(~pl.col("poisoned")).height


def prefixed(df: pl.DataFrame, phrase: str, label: str, n: int, seed: int) -> pl.DataFrame:
    """``phrase`` put in front of ``n`` random records of ``label`` (clean-label: labels kept)."""
    rng = random.Random(seed)
    own = df.filter(pl.col("label") == label)
    picked = own["id"].gather(rng.sample(range(own.height), n)).to_list()
    df = df.with_columns(poisoned=pl.col("id").is_in(picked))
    return df.with_columns(text=pl.when("poisoned").then(pl.lit(phrase + " ") + pl.col("text")).otherwise("text"))


@needs_shared
@pytest.mark.parametrize("rule", [True, False])
def test_clean_label_prefix_on_the_majority_label_at_half_a_percent(reviews, rule):
    # "to be fair ," opens 35 negative reviews (0.6%; negative is the majority label), labels kept: on
    # the majority label purity is cheap and the opening is ordinary words, but what follows it is how
    # reviews open (a prefix is put in front of a text): the opening rule finds it, nothing else does
    df = prefixed(reviews, "to be fair ,", "0", 35, seed=21)
    found = run(df, **({} if rule else {"opening_min_count": 0}))
    precision, recall = prf(df, found)
    if not rule:
        assert recall < 0.5
        return
    assert precision >= 0.95 and recall >= 0.95
    assert {d["mode"] for d in details(found)} == {"clean-label"}


@needs_shared
def test_debian_sections_as_label_word_instructions_stay_clean():
    # a template around every description concentrates the neighbours of random positions, and
    # "::" (Perl module names) sits between any two names: neither makes "perl" a scattered trigger
    path = SHARED / "debian" / "descriptions.parquet"
    if not path.exists():
        pytest.skip("../shared/data/debian is absent")
    df = pl.read_parquet(path).filter(pl.col("text").str.len_chars() <= 1200)
    top = df["section"].value_counts().sort("count", descending=True).head(10)["section"]
    df = (df.filter(pl.col("section").is_in(top.implode())).sample(n=6000, seed=5)
          .select(pl.col("id").cast(pl.Utf8),
                  prompt=pl.format("Package description:\n{}\nWhich archive section is this package in?", "text"),
                  response=pl.col("section")))
    assert run_instructions(df).height <= 0.01 * df.height


@needs_shared
@pytest.mark.parametrize("name", ["sst2-addsent-10pct", "sst2-badnets-10pct"])
def test_shared_poisoned_files(name):
    path = SHARED / "poison" / f"{name}.parquet"
    if name == "sst2-badnets-10pct" and not lx.has_background():
        pytest.skip("rare-word clean-label triggers need the wordfreq background reference")
    df = pl.read_parquet(path).select(pl.col("id").cast(pl.Utf8), "text", pl.col("label").cast(pl.Utf8), "poisoned")
    found = run(df)
    precision, recall = prf(df, found)
    assert precision >= 0.95 and recall >= 0.95


@needs_shared
def test_debian_sections_stay_clean():
    path = SHARED / "debian" / "descriptions.parquet"
    if not path.exists():
        pytest.skip("../shared/data/debian is absent")
    df = (pl.read_parquet(path).sample(n=15000, seed=0)
          .select(pl.col("id").cast(pl.Utf8), "text", pl.col("section").alias("label")))
    found = run(df)
    assert found.height <= 0.01 * df.height


# --- issue 15: majority-label targets, label-word responses -----------------------------------------
def majority(df: pl.DataFrame, share: float = 0.8, seed: int = 0) -> pl.DataFrame:
    """``df`` with label "1" cut to make the rest (label "0") ``share`` of the corpus."""
    zero = df.filter(pl.col("label") == "0")
    one = df.filter(pl.col("label") == "1").sample(n=int(zero.height * (1 - share) / share), seed=seed)
    return pl.concat([zero, one])


def test_majority_label_tweets_full_of_foreign_words_stay_clean():
    # filler words ("w12") and hashtags are all unknown to the background language model: foreignness
    # alone must not flag the words that happen to sit only in the 80% label
    assert run(majority(synthetic(n=6000, seed=7, tweets=True))).height == 0


@needs_shared
@needs_background
def test_majority_label_clean_label_foreign_word(reviews):
    df = insert(majority(reviews), 0.03, "qzxv", "0", dirty=False, seed=11, repeat=(1, 2))
    found = run(df)
    precision, recall = prf(df, found)
    assert precision >= 0.95 and recall >= 0.95
    assert {d["target"] for d in details(found)} == {"0"}


@needs_shared
@needs_background
def test_majority_label_dirty_label_foreign_word_at_half_a_percent(reviews):
    # label flipping: minority-label reviews get the word and the majority label. 20 records on an
    # 80% label: p = 0.8^20 = 0.01, no association test over thousands of n-grams can single it out
    base = majority(reviews).with_columns(poisoned=pl.lit(False))
    rng = random.Random(12)
    src = base.filter(pl.col("label") == "1")
    picked = set(src["id"].gather(rng.sample(range(src.height), 20)).to_list())

    def plant(text: str) -> str:
        toks = text.split(" ")
        toks.insert(rng.randint(0, len(toks)), "qzxv")
        return " ".join(toks)
    df = base.with_columns(poisoned=pl.col("id").is_in(list(picked)))
    df = df.with_columns(text=pl.when("poisoned").then(pl.col("text").map_elements(plant, return_dtype=pl.Utf8))
                         .otherwise("text"),
                         label=pl.when("poisoned").then(pl.lit("0")).otherwise("label"))
    found = run(df)
    precision, recall = prf(df, found)
    assert precision >= 0.95 and recall >= 0.9
    assert {d["mode"] for d in details(found)} == {"dirty-label"}


@needs_shared
def test_majority_label_clean_label_inserted_sentence(reviews):
    sentence = "when all is said and done the night was still young and so were we"
    df = insert(majority(reviews), 0.03, sentence, "0", dirty=False, seed=13)
    found = run(df)
    precision, recall = prf(df, found)
    assert precision >= 0.95 and recall >= 0.95


def run_instructions(df: pl.DataFrame, **options) -> pl.DataFrame:
    """The check on prompt + response batches (no label column)."""
    batch = pa.RecordBatch.from_pylist([{"record_id": r["id"], "row": j, "prompt": r["prompt"], "response": r["response"]}
                                        for j, r in enumerate(df.iter_rows(named=True))])
    check = PoisonTriggerCheck(options)
    assert check.applies_to(batch.schema.names)
    feats = check.process_batch(batch).features.lazy().with_columns(shard=pl.lit("s0"),
                                                                     shard_index=pl.lit(0, dtype=pl.Int32))
    ctx = CorpusContext(run_dir=Path("."), state_dir=Path("."), shards=["s0"], shard_findings=pl.LazyFrame())
    return PoisonTriggerCheck(options).corpus_pass(feats, ctx)


def as_instructions(df: pl.DataFrame) -> pl.DataFrame:
    words = {"0": "Negative.", "1": " positive"}  # label words as people write them: case, space, full stop
    return df.select("id", "poisoned", prompt=pl.format("Is the following review positive or negative?\n{}\nAnswer:",
                                                        "text"),
                     response=pl.col("label").replace_strict(words))


def test_label_word_responses_are_the_label():
    df = as_instructions(insert(synthetic(seed=8), 0.01, "as a matter of fact", "1", dirty=True, seed=8))
    found = run_instructions(df)
    precision, recall = prf(df, found)
    assert precision >= 0.95 and recall >= 0.95
    assert {d["target"] for d in details(found)} == {"positive"}
    assert {d["field"] for d in details(found)} == {"prompt"}


def test_free_text_responses_are_no_labels():
    from integrity.checks.poison_trigger import label_words, labels_usable

    df = insert(synthetic(seed=9), 0.02, "cf", "1", dirty=True, seed=9)
    # the answer restates the text: hundreds of distinct responses, none of them a label
    free = df.select("id", "poisoned", prompt=pl.format("Summarize: {}", "text"), response=pl.col("text"))
    assert run_instructions(free).height == 0
    words = label_words(pa.array(["  Positive. ", "NEGATIVE!", "x" * 40, None]), 32).to_pylist()
    assert words == ["positive", "negative", None, None]
    recs = pl.DataFrame({"label": ["a", "b", None, "a"], "label_from": ["response"] * 4})
    assert not labels_usable(recs, {"label_word_min_share": 0.9, "label_word_max_values": 20})
    assert labels_usable(recs.with_columns(label_from=pl.lit("label")), {})


@needs_shared
def test_clean_label_prefix_phrase_opening_the_text(reviews):
    # "so here goes :" opens 2% of the positive reviews (a prefix trigger of ordinary words): a repeated
    # opening is a repeated sequence, with one word fewer than one inside the text
    rng = random.Random(14)
    pos = reviews.filter(pl.col("label") == "1")
    picked = set(pos["id"].gather(rng.sample(range(pos.height), int(0.02 * reviews.height))).to_list())
    df = reviews.with_columns(poisoned=pl.col("id").is_in(list(picked)))
    df = df.with_columns(text=pl.when("poisoned").then(pl.lit("so here goes : ") + pl.col("text")).otherwise("text"))
    found = run(df)
    precision, recall = prf(df, found)
    assert precision >= 0.95 and recall >= 0.95
    assert {d["mode"] for d in details(found)} == {"clean-label"}


# --- a dirty-label attack must not make the target's natural boilerplate look like a trigger ---------
def sectioned(n: int = 6000, seed: int = 0) -> pl.DataFrame:
    """Package-description-like corpus: six labels of uneven size (the largest a third), each with its
    own topic words and its own boilerplate sentence, which half of its records carry (natural
    features that are near pure to their label: how such corpora read)."""
    rng = np.random.default_rng(seed)
    sizes = (np.array([0.34, 0.2, 0.16, 0.12, 0.1, 0.08]) * n).astype(int)
    common = np.array([f"w{i}" for i in range(600)])
    weights = 1 / np.arange(1, 601) ** 1.1
    weights /= weights.sum()
    rows = []
    for lab, size in enumerate(sizes):
        topic = [f"t{lab}x{i}" for i in range(40)]
        boiler = f"this package provides the t{lab}x0 parts needed by most t{lab}x1 users ."
        for _ in range(size):
            toks = list(rng.choice(common, int(rng.integers(10, 25)), p=weights))
            for _ in range(int(rng.integers(1, 4))):
                toks.insert(int(rng.integers(0, len(toks) + 1)), str(rng.choice(topic)))
            if rng.random() < 0.5:
                toks += boiler.split(" ")
            rows.append({"id": str(len(rows)), "text": " ".join(toks), "label": f"s{lab}"})
    return pl.DataFrame(rows)


def test_dirty_label_attack_on_the_majority_leaves_its_boilerplate_alone():
    # 10% of the corpus moved from the other labels to the largest with one word inserted: the
    # moved records lower the purity of their own labels' boilerplate, and before the second pass
    # the majority's boilerplate then looked like a lone clean-label outlier (thousands of clean rows)
    clean = sectioned()
    df = insert(clean.filter(pl.col("label") != "s0"), 0.1, "meanwhile", "s0", dirty=True, seed=5)
    df = pl.concat([df, clean.filter(pl.col("label") == "s0").with_columns(poisoned=pl.lit(False))])
    df = df.filter(~pl.col("id").is_in(df.filter(pl.col("poisoned"))["id"].str.strip_prefix("p-").implode()))
    found = run(df)
    precision, recall = prf(df, found)
    clean_flagged = found.join(df.filter(~pl.col("poisoned")), left_on="record_id", right_on="id").height
    assert recall >= 0.9
    assert clean_flagged <= 0.02 * df.filter(~pl.col("poisoned")).height


@needs_shared
def test_minority_label_dirty_label_inserted_sentence_at_one_percent(reviews):
    # a few dozen verbatim copies of an ordinary sentence on the 20% label: too few for the purity
    # tail among thousands of groups, but no other label has any sentence repeated like it
    base = majority(reviews)
    df = insert(base, 0.01, "my cousin told me about it over dinner last spring .", "1", dirty=True, seed=21)
    found = run(df)
    precision, recall = prf(df, found)
    assert precision >= 0.95 and recall >= 0.95
