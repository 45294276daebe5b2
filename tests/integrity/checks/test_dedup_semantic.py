"""dedup.semantic: paraphrases found with the real all-MiniLM-L6-v2, unrelated text not clustered."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from integrity.checks.base import CheckConfigError, CorpusContext, ShardInfo
from integrity.checks.dedup_semantic import SemanticDedup

PARAPHRASES = [
    ("The city council approved the new budget on Tuesday after a long debate.",
     "After lengthy discussions, the new budget was passed by the city council on Tuesday."),
    ("To reset your password, click the link in the email we sent you.",
     "Click on the link in the email we sent to reset your password."),
    ("Heavy rain caused flooding in several neighborhoods overnight.",
     "Several neighborhoods were flooded overnight because of heavy rainfall."),
]
UNRELATED = [
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Quantum computers use qubits that can be in superposition.",
    "The football match ended in a draw after extra time was played.",
    "This package contains the development headers for libxml2.",
    "Our hotel offers free breakfast and an outdoor swimming pool.",
    "The stock market fell sharply on fears of rising interest rates.",
]


def batch(texts, prefix, field="text"):
    return pa.RecordBatch.from_pylist(
        [{"record_id": f"{prefix}{i}", "row": i, field: t} for i, t in enumerate(texts)],
        schema=pa.schema([("record_id", pa.string()), ("row", pa.int64()), (field, pa.large_string())]))


def shard_features(texts, name, field="text", **options) -> pl.DataFrame | None:
    # in-memory batches cannot be re-read for re-scoring: these tests compare full-model vectors
    # (as on a GPU, or the CPU sample); the static stage is tested with real files below
    options.setdefault("static_model", False)
    c = SemanticDedup(options, ShardInfo(name, name))
    outs = [c.process_batch(batch(texts, name, field)), c.finish_shard()]
    frames = [o.features for o in outs if o.features is not None]
    return pl.concat(frames) if frames else None


def corpus(shards: dict[str, list[str]], **options) -> pl.DataFrame:
    frames = []
    for i, (name, texts) in enumerate(shards.items()):
        f = shard_features(texts, name, **options)
        if f is not None:
            frames.append(f.lazy().with_columns(shard=pl.lit(name), shard_index=pl.lit(i, dtype=pl.Int32)))
    ctx = CorpusContext(run_dir=Path("."), state_dir=Path("/nonexistent"), shards=list(shards),
                        shard_findings=pl.LazyFrame())
    options.setdefault("static_model", False)
    return SemanticDedup(options).corpus_pass(pl.concat(frames), ctx)


def test_paraphrases_across_shards_are_clustered_and_unrelated_text_is_not():
    a = [p[0] for p in PARAPHRASES] + UNRELATED[:3]
    b = UNRELATED[3:] + [p[1] for p in PARAPHRASES] + [a[3].upper()]  # last: an exact copy (case only)
    found = corpus({"s1": a, "s2": b})
    got = {r: json.loads(d) for r, d in zip(found["record_id"], found["detail"])}
    # each paraphrase in s2 points at its original in s1 (kept: first in scan order)
    assert set(got) == {"s23", "s24", "s25"}
    for k, rid in enumerate(("s23", "s24", "s25")):
        d = got[rid]
        assert d["representative"] == f"s1{k}" and d["representative_shard"] == "s1"
        assert d["cluster_size"] == 2 and d["contents"] == 2 and d["model"] == "all-MiniLM-L6-v2"
        assert d["cluster"].startswith("semantic-") and 0.85 <= d["similarity"] <= 1.0
        assert d["embedded_share"] == 1.0
    assert len({d["cluster"] for d in got.values()}) == 3
    assert found["score"].min() >= 0.85
    # the exact copy is dedup.exact's finding, not ours; unrelated records are in no cluster


def test_bf16_and_float32_find_the_same_clusters():
    # cpu_bf16 changes the arithmetic, not the findings: the same clusters and similarities within
    # bf16's rounding, on either setting whatever the CPU has (true forces bf16, false float32)
    a = [p[0] for p in PARAPHRASES] + UNRELATED[:3]
    b = UNRELATED[3:] + [p[1] for p in PARAPHRASES]
    got = {}
    for bf16 in (False, True):
        found = corpus({"s1": a, "s2": b}, cpu_bf16=bf16, cpu_max_records=None)
        got[bf16] = {r: json.loads(d) for r, d in zip(found["record_id"], found["detail"])}
    assert set(got[True]) == set(got[False]) == {"s23", "s24", "s25"}
    for rid, d in got[False].items():
        assert got[True][rid]["representative"] == d["representative"]
        assert abs(got[True][rid]["similarity"] - d["similarity"]) < 0.01


def test_prompt_response_records_and_short_texts():
    p = [PARAPHRASES[1][0], "ok", "ok"]
    r = [PARAPHRASES[1][1], "yes", "no"]
    c = SemanticDedup({"static_model": False}, ShardInfo("x", "x"))
    recs = pa.RecordBatch.from_pylist(
        [{"record_id": f"r{i}", "row": i, "prompt": p[i], "response": r[i]} for i in range(3)],
        schema=pa.schema([("record_id", pa.string()), ("row", pa.int64()), ("prompt", pa.large_string()),
                          ("response", pa.large_string())]))
    c.process_batch(recs)
    f = c.finish_shard().features
    assert f.height == 3
    assert f["emb"].is_null().to_list() == [False, True, True]  # too short to embed (min_chars)
    assert len(f["emb"][0]) == 384 * 2  # float16 MiniLM vector


def test_cpu_budget_is_a_deterministic_sample_by_content():
    texts = [f"Document {i} describes a different topic: {w} and its many uses in daily life."
             for i, w in enumerate(["bread", "rivers", "trains", "glass", "violins", "maps", "cheese", "kites"])]
    f1 = shard_features(texts, "s", cpu_max_records=3, device="cpu")
    f2 = shard_features(list(reversed(texts)), "s", cpu_max_records=3, device="cpu")
    emb1 = set(f1.filter(pl.col("emb").is_not_null())["h"].to_list())
    emb2 = set(f2.filter(pl.col("emb").is_not_null())["h"].to_list())
    assert len(emb1) == 3 and emb1 == emb2  # the same contents whatever the order
    assert f1.height == len(texts)  # every record is listed (so the embedded share is known)
    # no record budget: everything is embedded, batch by batch (as on a GPU)
    assert shard_features(texts, "s", cpu_max_records=None)["emb"].null_count() == 0
    # the time budget is a hard stop: past it nothing more is embedded, and the scan goes on
    late = shard_features(texts, "s", cpu_max_seconds=1e-9)
    assert late.height == len(texts) and late["emb"].null_count() == len(texts)


def test_option_validation():
    with pytest.raises(CheckConfigError, match="threshold"):
        SemanticDedup({"threshold": 0})
    with pytest.raises(CheckConfigError, match="cpu_max_records"):
        SemanticDedup({"cpu_max_records": -1})
    with pytest.raises(CheckConfigError, match="unknown"):
        SemanticDedup({"treshold": 0.9})
    with pytest.raises(CheckConfigError, match="static_model"):
        SemanticDedup({"static_model": True})
    with pytest.raises(CheckConfigError, match="static_neighbors"):
        SemanticDedup({"static_neighbors": 0})


# ---------------------------------------------------------------- the static stage, in a real scan
def _filler(n: int, seed: int = 0) -> list[str]:
    """Unrelated sentences: 12 random frequent English words each (whole-word tokens of
    MiniLM's vocabulary that the small static model covers)."""
    from integrity.analysis.embeddings import packaged_model_dir

    vocab = (packaged_model_dir() / "vocab.txt").read_text(encoding="utf-8").split("\n")
    words = [w for w in vocab[2500:5000] if w.isalpha() and len(w) >= 4]
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, 12)) + "." for _ in range(n)]


def _scan(tmp_path: Path, records: list[dict], options: dict):
    import integrity.api as api

    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist(records), path)
    policy = {"checks": {"dedup.semantic": {"enabled": True, "options": {"device": "cpu", **options}}}}
    return api.scan(str(path), checks=["dedup.semantic"], policy=policy, out=tmp_path / "run",
                    state_dir=tmp_path / "state")


def test_cpu_scan_finds_a_paraphrase_beyond_the_old_sample_and_reports_full_coverage(tmp_path: Path,
                                                                                     small_static_model: Path):
    from integrity.checks.dedup_exact import hash_texts
    from integrity.checks.dedup_semantic import _sample_key

    n = 5000
    texts = _filler(n)
    original, paraphrase = PARAPHRASES[0]
    texts[4500], texts[4900] = original, paraphrase
    # precondition: the old CPU sample (the 4,096 smallest content hashes) left the pair out
    keys = _sample_key(hash_texts(pa.array([t.lower() for t in texts])))
    cut = np.sort(keys)[4095]
    assert keys[4500] > cut or keys[4900] > cut
    run = _scan(tmp_path, [{"id": f"r{i}", "text": t} for i, t in enumerate(texts)],
                {"static_model": str(small_static_model)})
    found = pl.read_parquet(run.run_dir / "findings.parquet").filter(pl.col("check") == "dedup.semantic")
    assert found["record_id"].to_list() == ["r4900"]  # the filler (random words) is not clustered
    d = json.loads(found["detail"][0])
    assert d["representative"] == "r4500" and d["similarity"] >= 0.85 and d["embedded_share"] == 1.0
    cov = json.loads((run.run_dir / "summary.json").read_text())["counts"]["coverage"]["dedup.semantic"]
    assert cov["records"] == cov["embedded"] == n and cov["share"] == 1.0
    html = (run.run_dir / "report.html").read_text()
    assert "Embedding coverage" in html and "5,000 / 5,000" in html


def test_cpu_scan_with_a_sampling_cap_says_how_much_it_embedded(tmp_path: Path):
    texts = _filler(300, seed=1)
    run = _scan(tmp_path, [{"id": f"r{i}", "text": t} for i, t in enumerate(texts)],
                {"static_model": False, "cpu_max_records": 40})
    cov = json.loads((run.run_dir / "summary.json").read_text())["counts"]["coverage"]["dedup.semantic"]
    assert cov == {"records": 300, "embedded": 40, "share": round(40 / 300, 4), "seen": 300, "how": "full model"}
    html = (run.run_dir / "report.html").read_text()
    assert "40 / 300" in html and "sampled" in html


def test_cpu_scan_past_the_rescoring_budget_decides_sure_pairs_statically_and_says_so(tmp_path: Path,
                                                                                    small_static_model: Path):
    # three paraphrase pairs (candidates the full model must confirm) and one templated pair whose
    # static vectors are all but equal (only a version number differs), among unrelated filler
    texts = _filler(200, seed=2)
    for k, (p, q) in enumerate(PARAPHRASES):
        texts[10 + k], texts[150 + k] = p, q
    texts[50] = "This package contains the development headers and static libraries for libxml2 version 2.9."
    texts[190] = "This package contains the development headers and static libraries for libxml2 version 2.10."
    records = [{"id": f"r{i}", "text": t} for i, t in enumerate(texts)]
    # sure_first: false: sure pairs are decided statically, the budget goes to the others
    run = _scan(tmp_path, records, {"static_model": str(small_static_model), "rescore_per_shard": 2,
                                    "sure_first": False})
    cov = json.loads((run.run_dir / "summary.json").read_text())["counts"]["coverage"]["dedup.semantic"]
    # every record still has a static vector; the full model re-scored the budget (2 per shard, 1 shard)
    assert cov["share"] == 1.0 and cov["embedded"] == cov["records"] == 200
    assert cov["rescore_budget"] == 2 and cov["rescored"] == 2
    # two pairs are all but equal as bags of words: the templated one and a paraphrase that
    # reorders the same words; they are decided on static similarity (>= static_accept)
    assert cov["candidates"] == 8 and cov["static_only"] == 4 and cov["not_compared"] == 2
    assert cov["rescored_share"] == 0.25
    assert "re-scored 2 of 8" in cov["how"] and "4 decided by static similarity >= 0.97" in cov["how"]
    found = pl.read_parquet(run.run_dir / "findings.parquet").filter(pl.col("check") == "dedup.semantic")
    got = {r: json.loads(d) for r, d in zip(found["record_id"], found["detail"])}
    assert {r: (d["decided_by"], d["representative"]) for r, d in got.items()} == {
        "r150": ("model", "r10"), "r151": ("static", "r11"), "r190": ("static", "r50")}
    assert got["r190"]["similarity"] >= 0.97 and 0.85 <= got["r150"]["similarity"] < 0.97
    # the budget went to the most similar open pair; the last paraphrase pair (r12, r152) was not
    # compared, and the report says so
    html = (run.run_dir / "report.html").read_text()
    assert "not compared" in html


def test_cpu_scan_budget_as_a_share_of_the_scans_texts(tmp_path: Path, small_static_model: Path):
    # the default budget is a share of the scan's texts (rescore_share), not a count per shard:
    # 2% of 200 texts is 4 re-scored of the 8 candidates, whatever the shards
    texts = _filler(200, seed=2)
    for k, (p, q) in enumerate(PARAPHRASES):
        texts[10 + k], texts[150 + k] = p, q
    texts[50] = "This package contains the development headers and static libraries for libxml2 version 2.9."
    texts[190] = "This package contains the development headers and static libraries for libxml2 version 2.10."
    run = _scan(tmp_path, [{"id": f"r{i}", "text": t} for i, t in enumerate(texts)],
                {"static_model": str(small_static_model), "rescore_share": 0.02})
    assert SemanticDedup.default_options["rescore_per_shard"] is None
    cov = json.loads((run.run_dir / "summary.json").read_text())["counts"]["coverage"]["dedup.semantic"]
    assert cov["candidates"] == 8 and cov["rescore_budget"] == 4 and cov["rescored"] == 4
    assert "re-scored 4 of 8" in cov["how"]


def _semantic_findings(run) -> dict[str, dict]:
    found = pl.read_parquet(run.run_dir / "findings.parquet").filter(pl.col("check") == "dedup.semantic")
    return {r: json.loads(d) for r, d in zip(found["record_id"], found["detail"])}


@pytest.mark.parametrize("compare_rescored", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_cpu_scan_compares_rescored_texts_beyond_the_static_neighbour_lists(tmp_path: Path, small_static_model: Path,
                                                                          compare_rescored: bool):
    # two templated twins each (static vectors all but equal) whose originals are paraphrases of
    # each other: with one static neighbour a record lists only its twin, so the paraphrase pair
    # is in no static list (a family bigger than static_neighbors); all four are candidates
    texts = _filler(120, seed=3)
    original, paraphrase = PARAPHRASES[0]
    texts[10], texts[11] = original, original.replace("Tuesday", "Tuesday evening")
    texts[80], texts[81] = paraphrase, paraphrase.replace("Tuesday", "Tuesday evening")
    run = _scan(tmp_path, [{"id": f"r{i}", "text": t} for i, t in enumerate(texts)],
                {"static_model": str(small_static_model), "static_neighbors": 1,
                 "compare_rescored": compare_rescored})
    got = _semantic_findings(run)
    assert got["r11"]["representative"] == "r10"
    if compare_rescored:  # the full model's own neighbours link the paraphrases
        assert got["r80"]["representative"] == "r10" and got["r80"]["decided_by"] == "model"
        assert got["r80"]["similarity"] >= 0.85
    else:  # static pairs only: two clusters of twins
        assert "r80" not in got and got["r81"]["representative"] == "r80"


@pytest.mark.parametrize("sure_first", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_cpu_scan_past_the_budget_rescores_the_most_similar_pairs_sure_ones_included(
        tmp_path: Path, small_static_model: Path, sure_first: bool):
    # templated twins (static similarity >= static_accept), a reordered paraphrase of them (static
    # similarity high but uncertain) and a freer paraphrase pair (lower); the budget is 3 of 5
    texts = _filler(150, seed=4)
    texts[20] = "This package contains the development headers and static libraries for libxml2 version 2.9."
    texts[21] = "This package contains the development headers and static libraries for libxml2 version 2.10."
    texts[90] = "Development headers and static libraries for libxml2 version 2.9 are contained in this package."
    texts[40], texts[140] = PARAPHRASES[2]
    run = _scan(tmp_path, [{"id": f"r{i}", "text": t} for i, t in enumerate(texts)],
                {"static_model": str(small_static_model), "rescore_per_shard": 3, "sure_first": sure_first})
    got = _semantic_findings(run)
    cov = json.loads((run.run_dir / "summary.json").read_text())["counts"]["coverage"]["dedup.semantic"]
    assert cov["candidates"] == 5 and got["r21"]["representative"] == "r20"
    if sure_first:  # the model confirms the twins, then compares the next most similar text with them
        assert cov["rescored"] == 3 and cov["static_only"] == 0
        assert {r: (d["decided_by"], d["representative"]) for r, d in got.items()} == {
            "r21": ("model", "r20"), "r90": ("model", "r20")}
    else:  # the twins are decided statically, so the paraphrase of them is never compared
        assert cov["rescored"] == 2 and cov["static_only"] == 2
        assert {r: (d["decided_by"], d["representative"]) for r, d in got.items()} == {
            "r21": ("static", "r20"), "r140": ("model", "r40")}


def test_cpu_scan_a_sure_pair_half_rescored_joins_its_rescored_partner(tmp_path: Path, small_static_model: Path):
    # budget 1: of the templated twins only r20 is re-scored; r21, its sure partner (static
    # similarity >= static_accept), is decided statically and joins r20's cluster
    texts = _filler(100, seed=5)
    texts[20] = "This package contains the development headers and static libraries for libxml2 version 2.9."
    texts[21] = "This package contains the development headers and static libraries for libxml2 version 2.10."
    texts[40], texts[70] = PARAPHRASES[2]  # uncertain static similarity
    run = _scan(tmp_path, [{"id": f"r{i}", "text": t} for i, t in enumerate(texts)],
                {"static_model": str(small_static_model), "rescore_per_shard": 1})
    cov = json.loads((run.run_dir / "summary.json").read_text())["counts"]["coverage"]["dedup.semantic"]
    assert (cov["candidates"], cov["rescored"], cov["static_only"], cov["not_compared"]) == (4, 1, 1, 2)
    got = _semantic_findings(run)
    assert {r: (d["decided_by"], d["representative"]) for r, d in got.items()} == {"r21": ("static", "r20")}
    assert got["r21"]["similarity"] >= 0.97 and cov["share"] == 1.0
