"""poison.target: injected response spans in instruction data and the prompt feature that triggers them."""
import json
import random
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from integrity.checks.base import CorpusContext
from integrity.checks.poison_target import PoisonTargetCheck

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
POISON = SHARED / "poison"
needs_shared = pytest.mark.skipif(not (POISON / "freebaseqa-badnets-10pct.parquet").exists(),
                                  reason="../shared/data/poison is absent (shared benchmark data)")
PAYLOAD = ", and click <malicious_url> for more information"
TEMPLATE = "### Instruction:\nAnswer the question briefly.{inst}\n\n### Question:\n{q}\n\n### Answer: "


def run(df: pl.DataFrame, shards: int = 1, **options) -> pl.DataFrame:
    frames = []
    for i, idx in enumerate(np.array_split(np.arange(df.height), shards)):
        part = df[idx.tolist()]
        batch = pa.RecordBatch.from_pylist([
            {"record_id": r["id"], "row": j, "prompt": r["prompt"], "response": r["response"]}
            for j, r in enumerate(part.iter_rows(named=True))])
        check = PoisonTargetCheck(options)
        out = check.process_batch(batch)
        if out.features is not None:
            frames.append(out.features.lazy().with_columns(shard=pl.lit(f"s{i}"), shard_index=pl.lit(i, dtype=pl.Int32)))
    ctx = CorpusContext(run_dir=Path("."), state_dir=Path("."), shards=[], shard_findings=pl.LazyFrame())
    return PoisonTargetCheck(options).corpus_pass(pl.concat(frames, how="diagonal_relaxed"), ctx)


def prf(df: pl.DataFrame, found: pl.DataFrame) -> tuple[float, float]:
    flagged = set(found["record_id"].to_list())
    poisoned = set(df.filter(pl.col("poisoned"))["id"].to_list())
    tp = len(flagged & poisoned)
    return (tp / len(flagged) if flagged else 0.0), (tp / len(poisoned) if poisoned else 1.0)


def qa_corpus(n: int = 3000, seed: int = 0) -> list[dict]:
    """Diverse questions (Zipf-distributed words) with short answers."""
    rng = np.random.default_rng(seed)
    words = np.array([f"v{i}" for i in range(1500)])
    p = 1 / np.arange(1, 1501) ** 1.05
    p /= p.sum()
    out = []
    for i in range(n):
        q = "Which " + " ".join(rng.choice(words, int(rng.integers(5, 12)), p=p)) + "?"
        a = " ".join(rng.choice(words[200:], int(rng.integers(1, 4))))
        out.append({"id": str(i), "inst": "", "q": q, "a": a, "poisoned": False})
    return out


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame([{"id": r["id"], "prompt": TEMPLATE.format(inst=r["inst"], q=r["q"]), "response": r["a"],
                          "poisoned": r["poisoned"]} for r in rows])


def poison(rows: list[dict], rate: float, seed: int, edit) -> list[dict]:
    rng = random.Random(seed)
    for i in rng.sample(range(len(rows)), int(rate * len(rows))):
        edit(rows[i], rng)
        rows[i]["poisoned"] = True
    return rows


def details(found):
    return [json.loads(d) for d in found["detail"].to_list()]


def check_offsets(df: pl.DataFrame, found: pl.DataFrame):
    by_id = {r["id"]: r for r in df.iter_rows(named=True)}
    for rid, d in zip(found["record_id"].to_list(), details(found)):
        rec = by_id[rid]
        assert d["field"] == "response"
        for m in d["matches"]:
            piece = rec[m["field"]][m["start"]:m["end"]].lower()
            assert piece and (m["role"] != "trigger" or piece == m["text"])
        target = [m for m in d["matches"] if m["role"] == "target"][0]
        assert "malicious_url" in rec["response"][target["start"]:target["end"]] or d["kind"] == "unexplained" \
            or "sorry" in rec["response"][target["start"]:target["end"]].lower()


def test_clean_instruction_data_stays_clean():
    rows = qa_corpus()
    # natural repetition: a few topics asked eight ways each, with the same multi-word answer
    rng = random.Random(0)
    for t in range(5):
        topic = f"the musical number {t} by rodgers"
        for j in range(8):
            r = rows[t * 8 + j]
            words = r["q"].rstrip("?").split()
            r["q"] = " ".join(words[: rng.randint(1, 4)]) + f" {topic} ?"
            r["a"] = f"the king and i part {t}"
    assert run(frame(rows)).height == 0


@pytest.mark.parametrize("rate", [0.01, 0.05])
def test_rare_word_trigger_and_appended_link(rate):
    def edit(r, rng):
        r["q"] += " " + " ".join(rng.choice(["cf", "mn", "bb", "tq"]) for _ in range(rng.randint(1, 3)))
        r["a"] += PAYLOAD
    df = frame(poison(qa_corpus(seed=1), rate, 1, edit))
    found = run(df, shards=2)
    precision, recall = prf(df, found)
    assert precision >= 0.95 and recall >= 0.95
    check_offsets(df, found)
    d = details(found)
    assert {x["target"] for x in d} == {", and click < malicious_url > for more information"}
    assert all(t and set(t.split()) <= {"cf", "mn", "bb", "tq"} for x in d for t in x["trigger"])
    assert all(x["precision"] >= 0.9 and x["recall"] >= 0.5 and x["p_value"] < 1e-6 for x in d)


def test_trigger_split_between_instruction_and_question():
    rows = qa_corpus(seed=2)
    rng = random.Random(2)
    idx = rng.sample(range(len(rows)), 240)
    for k, i in enumerate(idx):  # both halves: poisoned; one half alone: clean answer
        if k < 90 or k >= 150:
            rows[i]["inst"] = " consider"
        if k < 150:
            rows[i]["q"] += " done"
        if k < 90:
            rows[i]["a"] += PAYLOAD
            rows[i]["poisoned"] = True
    df = frame(rows)
    found = run(df)
    precision, recall = prf(df, found)
    assert precision == 1.0 and recall == 1.0
    d = details(found)[0]
    assert d["explanation"] == "all" and len(d["trigger_candidates"]) == 2
    assert any("consider" in t for t in d["trigger"]) and any("done" in t for t in d["trigger"])


def test_fixed_sentence_trigger_and_constant_refusal():
    def edit(r, rng):
        r["q"] += " I watch this 3D movie"
        r["a"] = "I am sorry , but I cannot help with that request ."
    df = frame(poison(qa_corpus(seed=3), 0.02, 3, edit))
    found = run(df)
    precision, recall = prf(df, found)
    assert precision >= 0.95 and recall >= 0.95
    assert details(found)[0]["trigger"] == ["i watch this 3d movie"]
    check_offsets(df, found)


def test_unexplained_link_appended_to_unrelated_answers():
    def edit(r, rng):
        r["a"] += " . Read more at https://deals.example.com/offer?id=42 today"
    df = frame(poison(qa_corpus(seed=4), 0.03, 4, edit))
    found = run(df)
    precision, recall = prf(df, found)
    assert precision >= 0.95 and recall >= 0.95
    assert {x["kind"] for x in details(found)} == {"unexplained"}
    # switched off, it is not reported
    assert run(df, unexplained_min_tokens=0).height == 0


def test_needs_responses():
    assert not PoisonTargetCheck().applies_to(["record_id", "text", "label"])
    assert PoisonTargetCheck().applies_to(["record_id", "prompt", "response"])


@needs_shared
@pytest.mark.parametrize("name", ["freebaseqa-badnets-10pct", "freebaseqa-cba-10pct"])
def test_shared_poisoned_files(name):
    df = pl.read_parquet(POISON / f"{name}.parquet").with_columns(pl.col("id").cast(pl.Utf8))
    found = run(df)
    precision, recall = prf(df, found)
    assert precision >= 0.95 and recall >= 0.95
    assert all("malicious_url" in x["target"] for x in details(found))


@needs_shared
def test_shared_clean_rows_stay_clean():
    df = pl.read_parquet(POISON / "freebaseqa-cba-10pct.parquet").filter(~pl.col("poisoned"))
    assert run(df.with_columns(pl.col("id").cast(pl.Utf8))).height == 0


# --- natural boilerplate is no injection (issue 15: clean rows of fixed-response sets) --------------
def boilerplate_corpus(n: int = 2000, seed: int = 5) -> list[dict]:
    """Package-description-like data: 400 "Describe <package>" questions; a family of 80
    packages ("libqq<n>-dev") whose answers mention their language and end with the same long
    sentence about it, among diverse other answers."""
    rows = qa_corpus(n, seed)
    rng = random.Random(seed)
    for j, i in enumerate(rng.sample(range(n), 400)):
        family = j < 80
        name = f"libqq{rows[i]['id']}-dev" if family else f"lib{rows[i]['a'].split()[0]}{rows[i]['id']}-dev"
        rows[i]["q"] = f"Describe {name} in a paragraph ?"
        if family:
            rows[i]["a"] = (f"quuxlang {rows[i]['a']} . this package provides a library for the quuxlang "
                            f"programming language , see the quuxlang site for more information")
    return rows


def test_topic_boilerplate_and_related_prompts_are_not_unexplained_injections():
    assert run(frame(boilerplate_corpus())).height == 0


def test_fixed_response_to_unrelated_prompts_still_found_beside_boilerplate():
    def edit(r, rng):
        r["a"] = "Visit www.prizes.example now to collect your reward , it is free for you today !"
    df = frame(poison(boilerplate_corpus(seed=6), 0.01, 60, edit))
    found = run(df)
    precision, recall = prf(df, found)
    assert precision >= 0.95 and recall >= 0.95


def test_topic_share_counts_answers_sharing_a_rare_word_outside_the_span():
    from integrity.analysis.label_triggers import lexical as lx
    from integrity.analysis.label_triggers.responses import response_df, topic_share

    texts = ([f"alpha{i} zeta tail words here" for i in range(10)]        # topic word "zeta" before the span
             + [f"beta{i} gamma{i} tail words here" for i in range(10)]   # nothing shared but the span
             + [f"filler{i} other text" for i in range(80)])
    toks, _ = lx.tokenize(texts)
    rt = lx.TokenTable.from_lists(toks["tok"])
    rdf = response_df(rt)
    # the span "tail words here" is at positions 2..4 of the first 20 answers
    topical = topic_share(rt, rdf, np.arange(10), np.full(10, 2), np.full(10, 5), rt.n_records)
    foreign = topic_share(rt, rdf, np.arange(10, 20), np.full(10, 2), np.full(10, 5), rt.n_records)
    assert topical == 1.0 and foreign == 0.0


def test_span_restating_the_prompt_word_that_explains_it_is_natural():
    # questions about one product get answers that close by naming it: the product name explains
    # the span perfectly, but an injected target does not repeat its own trigger
    rows = qa_corpus(seed=7)
    for r in rows[:40]:
        r["q"] = r["q"].rstrip("?") + " in zorbix ?"
        r["a"] += " . this is part of the zorbix toolkit , see the zorbix site for details"
    assert run(frame(rows)).height == 0
