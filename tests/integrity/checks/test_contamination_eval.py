"""contamination.eval: n-gram overlap with registered evaluation sets."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from integrity.analysis import contamination
from integrity.checks.base import CheckConfigError
from integrity.checks.contamination_eval import ContaminationEval

QUESTIONS = {
    "q-17": "Which of the following planets has the longest day when it is measured in Earth hours and minutes?",
    "q-42": "A farmer plants three rows of corn and each row holds twelve plants so how many plants are there in total?",
    "q-99": "The mitochondria is the organelle that produces most of the chemical energy used by a eukaryotic cell.",
}


@pytest.fixture(autouse=True)
def _fresh_memo():
    contamination._index_memo.clear()
    yield
    contamination._index_memo.clear()


def write_benchmark(path: Path, questions=QUESTIONS) -> Path:
    pq.write_table(pa.table({"qid": list(questions), "question": list(questions.values())}), path)
    return path


def batch(records: dict[str, str], field: str = "text") -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(
        [{"record_id": k, "row": i, field: v} for i, (k, v) in enumerate(records.items())],
        schema=pa.schema([("record_id", pa.string()), ("row", pa.int64()), (field, pa.large_string())]))


def check(bench: Path, tmp_path: Path, **extra) -> ContaminationEval:
    return ContaminationEval({"benchmarks": [{"name": "mini-qa", "path": str(bench), "text_column": "question",
                                              "id_column": "qid"}],
                              "index_dir": str(tmp_path / "idx"), **extra})


def findings(c: ContaminationEval, records: dict[str, str], field: str = "text") -> dict[str, tuple[float, dict]]:
    out = c.process_batch(batch(records, field)).findings
    if out is None:
        return {}
    return {r: (s, json.loads(d)) for r, s, d in zip(out["record_id"], out["score"], out["detail"])}


def test_leaked_question_is_found_with_span_and_near_miss_is_not(tmp_path):
    bench = write_benchmark(tmp_path / "bench.parquet")
    q = QUESTIONS["q-42"].split(" ")
    twelve = " ".join(q[2:14])  # 12 consecutive tokens of q-42: one short of a 13-gram
    assert len(twelve.split()) == 12
    leaked_prefix = "Homework help, copied from a forum post: "
    records = {
        # case and punctuation differ: the normalization must not care
        "leak": leaked_prefix + QUESTIONS["q-17"].upper().replace(" when", ", when") + " The answer is Venus.",
        "near-miss": f"Yesterday {twelve} said nobody at all in this long unrelated sentence.",
        "partial": "Notes: " + " ".join(QUESTIONS["q-99"].split()[:14]) + " and then something else entirely.",
        "clean": "A completely unrelated paragraph about gardening, rivers and spring weather in the north.",
    }
    found = findings(check(bench, tmp_path), records)
    assert set(found) == {"leak", "partial"}

    score, d = found["leak"]
    assert score == pytest.approx(1.0)
    assert d["benchmark"] == "mini-qa" and d["benchmark_record"] == "q-17" and d["ngram"] == 13
    (m,) = d["matches"]
    assert m["field"] == "text" and m["benchmark"] == "mini-qa"
    span = records["leak"][m["start"]:m["end"]]
    assert m["start"] == len(leaked_prefix) and span.lower().startswith("which of the following")
    assert span.endswith("MINUTES")  # the whole question, trailing '?' not part of a token

    score, d = found["partial"]
    assert d["benchmark_record"] == "q-99"
    q99 = contamination.ngram_hashes([QUESTIONS["q-99"]], 13)[0]
    assert score == pytest.approx(2 / len(np.unique(q99)))  # 14 shared tokens = 2 of the question's 13-grams
    assert d["overlap_tokens"] == 14


def test_smaller_n_per_benchmark_and_other_fields(tmp_path):
    bench = write_benchmark(tmp_path / "bench.parquet")
    c = ContaminationEval({"benchmarks": [{"name": "b8", "path": str(bench), "text_column": "question",
                                           "ngram": 8}], "index_dir": str(tmp_path / "idx")})
    q = QUESTIONS["q-42"].split(" ")
    found = findings(c, {"r1": "so " + " ".join(q[3:11]) + " ok", "r2": "so " + " ".join(q[3:10]) + " ok"},
                     field="prompt")
    assert set(found) == {"r1"}  # 8 shared tokens match with n=8, 7 do not
    assert found["r1"][1]["matches"][0]["field"] == "prompt"
    assert found["r1"][1]["benchmark_record"] == "1"  # no id column: the row index


def test_index_is_cached_by_content_and_rebuilt_when_the_benchmark_changes(tmp_path, monkeypatch):
    bench = write_benchmark(tmp_path / "bench.parquet")
    c = check(bench, tmp_path)
    assert set(findings(c, {"x": QUESTIONS["q-99"]})) == {"x"}
    cached = list((tmp_path / "idx").glob("*.npz"))
    assert len(cached) == 1
    fp = c.fingerprint()

    # a new process (empty memory) loads the cached index without reading the benchmark
    contamination._index_memo.clear()
    monkeypatch.setattr(contamination, "read_benchmark", lambda *a, **k: pytest.fail("benchmark re-read"))
    assert set(findings(check(bench, tmp_path), {"x": QUESTIONS["q-99"]})) == {"x"}
    monkeypatch.undo()

    # the benchmark changes: new key, new index, new fingerprint (cached shard results are recomputed)
    write_benchmark(bench, {"q-1": "An entirely different question about the boiling point of water at sea level "
                                   "under standard atmospheric pressure conditions?"})
    c2 = check(bench, tmp_path)
    assert c2.fingerprint() != fp
    assert findings(c2, {"x": QUESTIONS["q-99"]}) == {}
    assert len(list((tmp_path / "idx").glob("*.npz"))) == 2


def test_datasets_directory_benchmark(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"id": list(QUESTIONS), "text": list(QUESTIONS.values())}).save_to_disk(
        str(tmp_path / "hfbench"))
    c = ContaminationEval({"benchmarks": [{"name": "hf", "path": str(tmp_path / "hfbench")}]})
    found = findings(c, {"r": "quiz: " + QUESTIONS["q-42"]})
    assert found["r"][1]["benchmark"] == "hf" and found["r"][1]["benchmark_record"].endswith("q-42")


def test_unreadable_benchmark_is_a_loud_shard_level_finding(tmp_path):
    c = ContaminationEval({"benchmarks": [{"name": "gone", "path": str(tmp_path / "missing.parquet")}]})
    assert c.process_batch(batch({"r": "some text here"})).findings is None
    f = c.finish_shard().findings
    assert f.height == 1 and f["record_id"][0] is None and f["score"][0] == 1.0
    d = json.loads(f["detail"][0])
    assert d["benchmark"] == "gone" and "missing.parquet" in d["error"]


def test_option_validation():
    with pytest.raises(CheckConfigError, match="ngram"):
        ContaminationEval({"ngram": 0})
    with pytest.raises(CheckConfigError, match="path"):
        ContaminationEval({"benchmarks": [{"name": "x"}]})
    with pytest.raises(CheckConfigError, match="unique"):
        ContaminationEval({"benchmarks": [{"name": "x", "path": "a"}, {"name": "x", "path": "b"}]})
    with pytest.raises(CheckConfigError, match="unknown key"):
        ContaminationEval({"benchmarks": [{"name": "x", "path": "a", "colum": "q"}]})
    assert not ContaminationEval({}).applies_to(["text"])  # nothing registered: nothing to do


def test_benchmark_index_lookup_is_vectorized_and_exact():
    idx = contamination.build_index("b", 3, ["a b c d", "c d e", "x y"], ["r0", "r1", "r2"])
    assert idx.grams.tolist() == [2, 1, 0]
    g, _ = contamination.ngram_hashes(["b c d e", "c d e f", "q r s"], 3)
    assert idx.lookup(g).tolist() == [True, True, True, False, False]
    which, rows = idx.holders(g[:3])
    assert sorted(zip(which.tolist(), rows.tolist())) == [(0, 0), (1, 1), (2, 1)]
