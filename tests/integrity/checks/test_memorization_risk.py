"""memorization.risk: duplicated private data > duplicated clean text > unique text;
and the issue's checks together in a real scan (engine level)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from integrity.checks.base import CheckConfigError, CorpusContext
from integrity.checks.dedup_exact import ExactDedup
from integrity.checks.memorization_risk import MemorizationRisk
from integrity.checks.privacy_pii import PiiCheck

PII = "Contact Jane Roe at jane.roe@kestrel-mail.net about the overdue invoice for the garden project."
CLEAN = "The weather in spring is mild and pleasant along the coast, with cool evenings and long days."
SHARDS = {
    "s1": [PII, CLEAN, "A unique note about violins, maple wood and the varnish used by old workshops.",
           PII.upper(), CLEAN],
    "s2": [CLEAN, "Reach Tom Bell at tom.bell@quartz-post.org for the unique rehearsal schedule.", PII],
}


def batch(texts, prefix):
    schema = pa.schema([("record_id", pa.string()), ("row", pa.int64()), ("text", pa.large_string())])
    return pa.RecordBatch.from_pylist([{"record_id": f"{prefix}-{i}", "row": i, "text": t}
                                       for i, t in enumerate(texts)], schema=schema)


def corpus_inputs(shards, dedup=True, reverse=False) -> tuple[CorpusContext, pl.LazyFrame]:
    """privacy.pii per shard and dedup.exact across shards (the context memorization.risk reads),
    and memorization.risk's features; ``reverse``: the shards last first, each one's rows backwards."""
    shard_findings, exact_feats, risk_feats = [], [], []
    for i, (name, texts) in enumerate(shards.items()):
        b = batch(texts, name)
        tag = dict(shard=pl.lit(name), shard_index=pl.lit(i, dtype=pl.Int32))
        pii = PiiCheck().process_batch(b).findings
        if pii is not None and pii.height:
            shard_findings.append(pii.with_columns(shard=pl.lit(name), check=pl.lit("privacy.pii")))
        exact_feats.append(ExactDedup().process_batch(b).features.lazy().with_columns(**tag))
        feats = MemorizationRisk().process_batch(b).features.with_columns(**tag)
        risk_feats.append((feats.reverse() if reverse else feats).lazy())
    ctx = CorpusContext(run_dir=Path("."), state_dir=Path("/nonexistent"), shards=list(shards),
                        shard_findings=pl.concat(shard_findings, how="diagonal").lazy())
    if dedup:
        ctx.earlier_findings["dedup.exact"] = ExactDedup({"history": False}).corpus_pass(pl.concat(exact_feats), ctx)
    return ctx, pl.concat(risk_feats[::-1] if reverse else risk_feats)


def run_checks(shards, dedup=True, **options) -> dict[str, tuple[float, dict]]:
    """privacy.pii per shard, dedup.exact across shards, then memorization.risk."""
    ctx, features = corpus_inputs(shards, dedup)
    out = MemorizationRisk(options).corpus_pass(features, ctx)
    return {f"{s}/{r}": (sc, json.loads(d)) for s, r, sc, d in
            zip(out["shard"], out["record_id"], out["score"], out["detail"])}


def test_duplicated_pii_scores_above_duplicated_clean_text_above_unique_text():
    risk = run_checks(SHARDS)
    pii_dups = {"s1/s1-0", "s1/s1-3", "s2/s2-2"}
    clean_dups = {"s1/s1-1", "s1/s1-4", "s2/s2-0"}
    # every copy is at risk, the kept representative included; unique records (with or without PII) are not
    assert set(risk) == pii_dups | clean_dups
    low_pii = min(risk[k][0] for k in pii_dups)
    high_clean = max(risk[k][0] for k in clean_dups)
    assert low_pii > high_clean > 0
    # the documented formula: 3 copies -> dup = ln 3 / ln 10; clean x 0.5, e-mail (p = 0.5) x 0.75
    dup = math.log(3) / math.log(10)
    assert high_clean == pytest.approx(0.5 * dup, abs=1e-3)
    score, d = risk["s1/s1-0"]
    assert score == pytest.approx(dup * (0.5 + 0.5 * d["privacy_score"]), abs=1e-3)
    assert d["copies"] == 3 and d["exact_copies"] == 3 and d["privacy_kinds"] == ["email"]
    assert d["matches"] and all(m["redact"] for m in d["matches"])  # the report masks the address
    assert "privacy_kinds" not in risk["s1/s1-1"][1]


def test_findings_come_in_shard_and_row_order_with_the_features_in_any_order():
    """The findings are gathered in (shard, row) order part by part, not by sorting the scored
    frame: fed the shards last first and each shard's rows backwards, the order is the same."""
    ctx, features = corpus_inputs(SHARDS, reverse=True)
    out = pl.concat(list(MemorizationRisk({"min_score": 0.0}).corpus_parts(features, ctx)))
    assert out.height == 6
    assert list(zip(out["shard"], out["row"])) == sorted(zip(out["shard"], out["row"]), key=lambda k: (k[0], k[1]))
    # the default policy's order is the engine's shard order (shard_index), here s1 then s2
    assert out["record_id"].to_list() == ["s1-0", "s1-1", "s1-3", "s1-4", "s2-0", "s2-2"]


def test_without_any_dedup_evidence_nothing_is_at_risk():
    assert run_checks(SHARDS, dedup=False) == {}


def test_span_near_semantic_and_history_evidence_combine_by_the_formula():
    feats = pl.LazyFrame({"record_id": ["a", "b", "c", "d", "e"], "row": [0, 1, 2, 3, 4],
                          "shard": ["s"] * 5, "shard_index": pl.Series([0] * 5, dtype=pl.Int32)})

    def f(rows):
        return pl.DataFrame({"shard": [r[0] for r in rows], "record_id": [r[1] for r in rows],
                             "score": [1.0] * len(rows), "detail": [json.dumps(r[2]) for r in rows]})

    ctx = CorpusContext(run_dir=Path("."), state_dir=Path("."), shards=["s"], shard_findings=pl.LazyFrame(
        schema={"shard": pl.Utf8, "record_id": pl.Utf8, "check": pl.Utf8, "score": pl.Float64, "detail": pl.Utf8}))
    ctx.earlier_findings = {
        # a: a near copy of history content seen 9 times before (10 copies in all)
        "dedup.near": f([("s", "a", {"cluster": "n1", "cluster_size": 10, "representative": "h1",
                                     "representative_shard": "old", "history": True})]),
        # b: half of its tokens in a span shared with 9 other documents
        "dedup.span": f([("s", "b", {"cluster": "p1", "share": 0.5, "other_docs": 9, "representative": "x"})]),
        # c and its representative d: a semantic cluster of 3 (2 copies at semantic_weight 0.5)
        "dedup.semantic": f([("s", "c", {"cluster": "m1", "cluster_size": 3, "representative": "d",
                                         "representative_shard": "s"})]),
    }
    out = MemorizationRisk().corpus_pass(feats, ctx)
    got = {r: (s, json.loads(d)) for r, s, d in zip(out["record_id"], out["score"], out["detail"])}
    assert got["a"][0] == pytest.approx(0.5) and got["a"][1]["history"] is True
    assert got["b"][0] == pytest.approx(0.5 * 0.5 * 1.0)
    assert got["c"][0] == pytest.approx(0.5 * math.log(2) / math.log(10), abs=1e-4)
    assert got["d"][0] == got["c"][0]  # the kept representative carries the same risk
    assert "e" not in got


def test_option_validation():
    with pytest.raises(CheckConfigError, match="saturation_copies"):
        MemorizationRisk({"saturation_copies": 1})
    with pytest.raises(CheckConfigError, match="clean_weight"):
        MemorizationRisk({"clean_weight": 2})


# ------------------------------------------------------------------ engine level


def test_scan_with_the_issue_checks_end_to_end(tmp_path):
    from flows.build import build_spec
    from integrity.engine import pipeline

    bench = tmp_path / "bench" / "qa.parquet"
    bench.parent.mkdir()
    question = ("Which of the following planets has the longest day when it is measured in Earth hours "
                "and minutes rather than in Earth days?")
    pq.write_table(pa.table({"qid": ["q-7", "q-8"], "question": [
        question, "What is the capital city of the country that hosted the first modern Olympic games in 1896?"]}),
        bench)
    root = tmp_path / "corpus"
    root.mkdir()
    filler = [f"Record {i} is about {w}, a topic with its own long and unrelated description here."
              for i, w in enumerate(["bread", "glass", "kites", "maps", "cheese", "violins", "ropes", "tea"])]
    pq.write_table(pa.Table.from_pylist([{"id": f"a{i}", "text": t} for i, t in enumerate(
        [PII, CLEAN, "The city council approved the new budget on Tuesday after a long debate."] + filler[:4])]),
        root / "a.parquet")
    pq.write_table(pa.Table.from_pylist([{"id": f"b{i}", "text": t} for i, t in enumerate(
        [PII, CLEAN, "After lengthy discussions, the new budget was passed by the city council on Tuesday.",
         "Quiz of the day: " + question + " Answer: Venus."] + filler[4:])]), root / "b.parquet")
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "checks:\n"
        "  contamination.eval:\n"
        "    options:\n"
        f"      benchmarks: [{{name: mini-qa, path: '{bench}', text_column: question, id_column: qid}}]\n")
    checks = ["dedup.exact", "dedup.near", "dedup.semantic", "privacy.pii", "memorization.risk",
              "contamination.eval"]
    spec = build_spec(str(root), out=tmp_path / "run", policy=policy, checks=checks, quarantine_mode="off")
    summary = pipeline.run_scan(spec, workers=2)
    f = pl.read_parquet(spec.out / "findings.parquet")

    sem = f.filter(pl.col("check") == "dedup.semantic")
    assert sem["record_id"].to_list() == ["b2"]
    assert json.loads(sem["detail"][0])["representative"] == "a2"

    con = f.filter(pl.col("check") == "contamination.eval")
    assert con["record_id"].to_list() == ["b3"]
    d = json.loads(con["detail"][0])
    assert d["benchmark"] == "mini-qa" and d["benchmark_record"] == "q-7" and con["score"][0] == 1.0
    assert con["severity"][0] == "critical"  # the whole test item leaked

    risk = f.filter(pl.col("check") == "memorization.risk")
    by_id = dict(zip(risk["record_id"], risk["score"]))
    assert set(by_id) >= {"a0", "b0", "a1", "b1"}
    assert by_id["a0"] > by_id["a1"] > 0 and by_id["b0"] == by_id["a0"]
    assert not {"a3", "b4"} & set(by_id)  # unique records carry no duplication risk

    assert summary["counts"]["by_check"]["contamination.eval"]["critical"] == 1
    html = (spec.out / "report.html").read_text()
    assert "mini-qa" in html and "memorization.risk" in html and "dedup.semantic" in html
    # the issue's report views: hits by benchmark, risk drivers, clusters with examples
    for heading in ("Hits by benchmark", "Most leaked test items", "What drives the risk", "Riskiest records",
                    "Cluster sizes", "Examples (largest clusters first"):
        assert heading in html, heading
    # the benchmark index was cached in the state directory, or kept in memory when the
    # engine does not tell checks where the state directory is
    assert (tmp_path / "state").is_dir()


def test_details_written_column_wise_are_what_json_dumps_writes():
    """detail_json equals json.dumps(sort_keys=True) of each row's non-null fields, byte for byte
    (floats in Python's repr, kinds as lists, matches re-keyed in order)."""
    from integrity.checks.memorization_risk import detail_json

    matches = json.dumps([{"field": "text", "start": 3, "end": 9, "kind": "email", "redact": True}])
    scored = pl.DataFrame({
        "copies": [2.0, 1.0 / 3, 12.345, 1e-4, None], "dup_score": [0.30103, 0.1, 1.0, 0.00005, 0.2],
        "exact_copies": [2, None, 13, None, 4], "near_copies": [None, 3, None, None, 5],
        "semantic_copies": [None, None, 2, None, None], "span_share": [None, 0.8148, 1.0, 0.1, None],
        "span_docs": [None, 16, 1, 2, None], "privacy_score": [0.0, 0.95, 0.5, 0.0, 0.123456],
        "privacy_kinds": [None, ["email", "phone"], [], None, ["card"]],
        "privacy_matches": [None, matches, None, None, matches],
        "exact_history": [False, None, True, None, None], "near_history": [None, None, None, True, None],
    }, schema_overrides={"privacy_kinds": pl.List(pl.Utf8)})
    want = []  # what the per-finding loop wrote (rounded by polars, as the check rounds)
    rounded = scored.with_columns(pl.col("copies").round(2), pl.col("dup_score", "privacy_score").round(4))
    for r in rounded.iter_rows(named=True):
        d = {"copies": r["copies"], "exact_copies": r["exact_copies"],
             "near_copies": r["near_copies"], "semantic_copies": r["semantic_copies"],
             "history": bool(r["exact_history"] or r["near_history"]), "span_share": r["span_share"],
             "span_docs": r["span_docs"], "dup_score": r["dup_score"],
             "privacy_score": r["privacy_score"], "privacy_kinds": r["privacy_kinds"]}
        d = {k: v for k, v in d.items() if v is not None}
        if r["privacy_matches"]:
            d["matches"] = json.loads(r["privacy_matches"])
        want.append(json.dumps(d, sort_keys=True))
    assert detail_json(scored).to_list() == want


def test_evidence_is_keyed_by_row_and_an_id_only_finding_counts_for_every_row_with_that_id():
    from integrity.checks.memorization_risk import _by_row

    ids = pl.DataFrame({"shard": ["s1", "s1", "s1"], "record_id": ["a", "b", "b"], "row": [0, 1, 2]}).lazy()
    named = pl.DataFrame({"shard": ["s1", "s1"], "record_id": ["a", "b"], "row": [0, 2], "size": [3, 4]})
    got = _by_row(named, ids)  # every finding names its row: kept as it is, without the ids
    assert got.columns == ["shard", "row", "size"] and got.rows() == [("s1", 0, 3), ("s1", 2, 4)]
    unnamed = named.with_columns(row=pl.Series([0, None], dtype=pl.Int64))
    got = _by_row(unnamed, ids).sort("row")  # "b" without a row: both of its rows
    assert got.columns == ["shard", "row", "size"] and got.rows() == [("s1", 0, 3), ("s1", 1, 4), ("s1", 2, 4)]
