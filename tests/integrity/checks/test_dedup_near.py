"""dedup.near: MinHash + LSH near duplicates across shards and across nights."""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from integrity.checks.base import CheckConfigError, CorpusContext
from integrity.checks.dedup_near import NearDedup

ROOT = Path(__file__).resolve().parents[3]
DEBIAN = ROOT.parent / "shared" / "data" / "debian" / "descriptions.parquet"
WORDS = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ro", "su", "ti", "va", "ze") for b in range(300)]


def doc(rng: random.Random, n: int = 120) -> str:
    return " ".join(rng.choices(WORDS, k=n)) + "."


def edit(rng: random.Random, text: str, k: int = 2) -> str:
    """Light edits: replace ``k`` words (each changes at most 5 of ~116 shingles)."""
    w = text.split(" ")
    for _ in range(k):
        w[rng.randrange(len(w))] = rng.choice(WORDS)
    return " ".join(w)


def batch(texts, prefix):
    return pa.RecordBatch.from_pylist([{"record_id": f"{prefix}{i}", "row": i, "text": t} for i, t in enumerate(texts)],
                                      schema=pa.schema([("record_id", pa.string()), ("row", pa.int64()),
                                                        ("text", pa.large_string())]))


def corpus(shards: dict[str, list[str]], state_dir: Path = Path("/nonexistent-state"), mask=None,
           **options) -> pl.DataFrame:
    frames = []
    for i, (name, texts) in enumerate(shards.items()):
        out = NearDedup(options).process_batch(batch(texts, name))
        if out.features is not None:
            frames.append(out.features.lazy().with_columns(shard=pl.lit(name), shard_index=pl.lit(i, dtype=pl.Int32)))
    ctx = CorpusContext(run_dir=Path("."), state_dir=state_dir, shards=list(shards), shard_findings=pl.LazyFrame(),
                        mask_details=mask)
    return NearDedup(options).corpus_pass(pl.concat(frames), ctx)


def details(found: pl.DataFrame) -> dict[str, dict]:
    return {r: json.loads(d) for r, d in zip(found["record_id"], found["detail"])}


def test_light_edits_across_shards_are_clustered_with_the_first_record_kept():
    rng = random.Random(1)
    base = [doc(rng) for _ in range(40)]
    found = corpus({
        "s1": base[:20],
        "s2": [edit(rng, base[3]), doc(rng), edit(rng, base[15], 1)] + base[20:],
        "s3": [doc(rng), edit(rng, base[3])],
    })
    d = details(found)
    assert set(d) == {"s20", "s22", "s31"}
    assert d["s20"]["representative"] == "s13" and d["s20"]["representative_shard"] == "s1"
    assert d["s31"]["representative"] == "s13" and d["s31"]["cluster_size"] == 3
    assert d["s20"]["cluster"] == d["s31"]["cluster"] != d["s22"]["cluster"]
    assert d["s22"]["representative"] == "s115"
    assert all(0.8 <= s <= 1.0 for s in found["score"]) and all(v["history"] is False for v in d.values())
    assert 0.8 <= d["s20"]["similarity"] < 1.0


def test_partitioned_band_join_and_per_shard_reads_give_the_same_findings(tmp_path, monkeypatch):
    # the engine lists each shard's features file: the band join then reads one shard at a time and
    # spills into partitions (here about 60 band entries each, so dozens of partitions)
    rng = random.Random(7)
    base = [doc(rng) for _ in range(60)]
    shards = {"s1": base[:30], "s2": [edit(rng, t) for t in base[:12]] + base[30:],
              "s3": [edit(rng, t, 1) for t in base[5:20]] + [doc(rng) for _ in range(10)],
              "s4": [doc(rng) for _ in range(20)]}  # nothing in common with the others
    files, frames = [], []
    for i, (name, texts) in enumerate(shards.items()):
        feats = NearDedup().process_batch(batch(texts, name)).features
        path = tmp_path / f"{name}.parquet"
        feats.write_parquet(path)
        files.append((name, i, path))
        frames.append(pl.scan_parquet(path).with_columns(shard=pl.lit(name), shard_index=pl.lit(i, dtype=pl.Int32)))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ctx = CorpusContext(run_dir=run_dir, state_dir=tmp_path / "state", shards=list(shards),
                        shard_findings=pl.LazyFrame(), feature_files={"dedup.near": files})
    one = corpus(shards)  # one piece, one partition
    read = []
    sketches = NearDedup._sketches
    monkeypatch.setattr(NearDedup, "_sketches", staticmethod(lambda lf: read.append(1) or sketches(lf)))
    import integrity.checks.dedup_near as near
    monkeypatch.setattr(near, "VERIFY_PAIRS", 7)  # candidates verified 7 pairs at a time
    many = NearDedup({"partition_entries": 60}).corpus_pass(pl.concat(frames), ctx)
    assert len(read) == 3  # the sketches of s4, which has no candidate, are never read
    assert one.height >= 25
    assert one.sort("record_id").equals(many.sort("record_id"))
    assert list(run_dir.iterdir()) == []  # spill files removed


def test_unrelated_documents_and_near_misses_are_not_clustered():
    rng = random.Random(2)
    base = [doc(rng) for _ in range(300)]  # same vocabulary, different documents
    shared = " ".join(rng.choices(WORDS, k=30))  # a shared passage is not a near duplicate
    mixed = [shared + " " + doc(rng, 90) for _ in range(5)]
    half = [" ".join(base[0].split(" ")[:60] + rng.choices(WORDS, k=60))]  # Jaccard ~ 0.3 with base[0]
    heavy = [edit(rng, base[1], 12)]  # 12 of 120 words replaced: Jaccard ~ 0.4
    assert corpus({"a": base[:150], "b": base[150:] + mixed + half + heavy}).height == 0


def test_threshold_and_band_options_are_honoured():
    rng = random.Random(3)
    a = doc(rng, 100)
    b = edit(rng, a, 4)  # roughly 0.65-0.75
    assert corpus({"s": [a, b]}).height == 0
    assert corpus({"s": [a, b]}, threshold=0.5).height == 1
    with pytest.raises(CheckConfigError, match="bands"):
        NearDedup({"bands": 30, "rows": 5, "threshold": 0.8, "seed": 1, "ngram": 5} | {"bands": 0})
    with pytest.raises(CheckConfigError, match="threshold"):
        NearDedup({"threshold": 1.5})
    with pytest.raises(CheckConfigError, match="unknown option"):
        NearDedup({"jaccard": 0.8})


def test_short_records_and_empty_text():
    found = corpus({"s": ["Hello world!", "hello, WORLD", "", None, "something else"]})
    assert found["record_id"].to_list() == ["s1"]


def test_prompt_response_pairs_are_compared_as_a_whole():
    rng = random.Random(4)
    p, r = doc(rng, 40), doc(rng, 80)
    b = pa.RecordBatch.from_pylist([
        {"record_id": "0", "row": 0, "prompt": p, "response": r},
        {"record_id": "1", "row": 1, "prompt": p, "response": edit(rng, r, 1)},
        {"record_id": "2", "row": 2, "prompt": p, "response": doc(rng, 80)},
    ])
    feats = NearDedup().process_batch(b).features.lazy().with_columns(shard=pl.lit("s"), shard_index=pl.lit(0))
    ctx = CorpusContext(run_dir=Path("."), state_dir=Path("/nonexistent"), shards=["s"], shard_findings=pl.LazyFrame())
    assert NearDedup().corpus_pass(feats, ctx)["record_id"].to_list() == ["1"]


@pytest.mark.skipif(not DEBIAN.exists(), reason="../shared/data/debian/descriptions.parquet is absent")
def test_real_debian_descriptions_against_exact_jaccard():
    """On 6,000 real records: every reported pair is checked with exact Jaccard on
    the reference shingles, and pairs that are true duplicates are found."""
    df = pl.read_parquet(DEBIAN).slice(0, 6000)
    texts = df["text"].to_list()
    found = corpus({"s": texts})
    d = details(found)
    norm = re.compile(r"[^\w\s]")

    def sh(t):
        w = norm.sub(" ", t.lower()).split()
        return {" ".join(w[i:i + 5]) for i in range(max(1, len(w) - 4))}

    by_id = {f"s{i}": t for i, t in enumerate(texts)}
    direct = [(r, v["representative"], v["similarity"]) for r, v in d.items() if v["similarity"] >= 0.8]
    assert len(direct) > 300
    for rec, rep, sim in direct:
        a, b = sh(by_id[rec]), sh(by_id[rep])
        assert len(a & b) / len(a | b) == pytest.approx(sim, abs=0.1)
    # recall: pairs of records with the same first line and exact Jaccard >= 0.85
    cluster = {r: v["cluster"] for r, v in d.items()} | {v["representative"]: v["cluster"] for v in d.values()}
    heads: dict[str, list[str]] = {}
    for i, t in enumerate(texts):
        heads.setdefault(t.split("\n")[0], []).append(f"s{i}")
    truth = hit = 0
    for members in heads.values():
        for x in members[1:]:
            a, b = sh(by_id[members[0]]), sh(by_id[x])
            if len(a & b) / len(a | b) >= 0.85:
                truth += 1
                hit += cluster.get(x) is not None and cluster.get(x) == cluster.get(members[0])
    assert truth > 50 and hit / truth > 0.97


# -- across nights, through the engine ------------------------------------------

TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
CHECKS = ["dedup.exact", "dedup.near", "dedup.span", "privacy.secret", "privacy.pii"]


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def scan(src: Path, tmp_path: Path, name: str, policy_extra: str = "") -> tuple[dict, pl.DataFrame]:
    from flows.build import build_spec
    from integrity.engine import pipeline

    policy = tmp_path / f"policy-{name}.yaml"
    policy.write_text(f"state_dir: {tmp_path / 'state'}\nquarantine:\n  mode: mark\n{policy_extra}")
    # each night's drop is its own folder: one corpus by name, so the nights share a history
    spec = build_spec(str(src), out=tmp_path / name, policy=policy, checks=CHECKS, corpus="nightly")
    summary = pipeline.run_scan(spec, workers=1)
    return summary, pl.read_parquet(tmp_path / name / "findings.parquet")


def dedup_findings(f: pl.DataFrame) -> dict[tuple[str, str], dict]:
    f = f.filter(pl.col("check").str.starts_with("dedup."))
    return {(c, r): json.loads(d) for c, r, d in zip(f["check"], f["record_id"], f["detail"])}


def test_later_nights_find_duplicates_of_approved_data_but_not_of_quarantined_data(tmp_path):
    rng = random.Random(7)
    a = [{"id": f"a{i}", "text": doc(rng)} for i in range(30)]
    a[0]["text"] = "Contact maria.lopez@example.org about " + a[0]["text"]
    q = [{"id": f"q{i}", "text": doc(rng)} for i in range(30)]
    q[0]["text"] = f"deploy key {TOKEN} " + q[0]["text"]  # a leaked secret: q.jsonl is quarantined
    write_jsonl(tmp_path / "night1" / "a.jsonl", a)
    write_jsonl(tmp_path / "night1" / "q.jsonl", q)
    s1, f1 = scan(tmp_path / "night1", tmp_path, "run1")
    assert s1["counts"]["verdicts"]["quarantine"] == 1
    assert not any(c.startswith("dedup.") for c in f1["check"])

    # night 2: new shards holding copies and light edits of both
    passage = " ".join(a[9]["text"].split(" ")[:70])
    new = [{"id": "n0", "text": edit(rng, a[2]["text"])}, {"id": "n1", "text": a[5]["text"]},
           {"id": "n2", "text": edit(rng, q[4]["text"])}, {"id": "n3", "text": q[6]["text"]},
           {"id": "n4", "text": doc(rng)}, {"id": "n5", "text": doc(rng, 40) + " " + passage + " " + doc(rng, 60)}]
    write_jsonl(tmp_path / "night2" / "new.jsonl", new)
    s2, f2 = scan(tmp_path / "night2", tmp_path, "run2")
    got = dedup_findings(f2)
    # (near duplicates share long spans too; nothing points at the quarantined q.jsonl)
    assert set(got) == {("dedup.near", "n0"), ("dedup.near", "n1"), ("dedup.exact", "n1"), ("dedup.span", "n5"),
                        ("dedup.span", "n0"), ("dedup.span", "n1")}
    for key, rep in ((("dedup.near", "n0"), "a2"), (("dedup.near", "n1"), "a5"), (("dedup.exact", "n1"), "a5"),
                     (("dedup.span", "n5"), "a9"), (("dedup.span", "n0"), "a2")):
        d = got[key]
        assert d["history"] is True and d["representative"] == rep and d["representative_shard"] == "a.jsonl", key
        assert d["representative_scan"] == s1["scan_id"] and d["cluster"]
    assert got[("dedup.near", "n0")]["cluster_size"] == 2 and 0.8 <= got[("dedup.near", "n0")]["similarity"] < 1

    # scanning night 1 again: its approved content is neither a duplicate of itself nor of
    # the later copies (those are the duplicates); quarantined q.jsonl never was approved,
    # so its records are duplicates of night 2's approved copies
    _, f3 = scan(tmp_path / "night1", tmp_path, "run3")
    got = dedup_findings(f3)
    assert {r for _, r in got} == {"q4", "q6"}
    assert got[("dedup.exact", "q6")]["representative"] == "n3" and got[("dedup.near", "q4")]["history"]

    # a stricter policy now quarantines a.jsonl (same content): it leaves the history ...
    s4, _ = scan(tmp_path / "night1", tmp_path, "run4",
                 "checks:\n  privacy.pii:\n    severity: warn\n"
                 "verdict:\n  quarantine:\n    any_finding_in: [privacy.pii]\n")
    assert s4["counts"]["verdicts"]["quarantine"] == 2
    from integrity.analysis.history import HistoryIndex

    live = HistoryIndex(tmp_path / "state" / "corpora" / "nightly").contents()
    assert set(live["shard"]) == {"new.jsonl"}
    # ... so its copies are no longer duplicates of history (night 2's shard still is approved)
    write_jsonl(tmp_path / "night5" / "later.jsonl", [{"id": "m0", "text": a[11]["text"]},
                                                       {"id": "m1", "text": new[4]["text"]}])
    _, f5 = scan(tmp_path / "night5", tmp_path, "run5")
    got = dedup_findings(f5)
    assert {r for _, r in got} == {"m1"} and ("dedup.near", "m1") in got
    assert got[("dedup.exact", "m1")]["representative"] == "n4"


def test_a_shard_appended_to_is_not_a_duplicate_of_its_earlier_version(tmp_path):
    rng = random.Random(8)
    recs = [{"id": f"r{i}", "text": doc(rng)} for i in range(20)]
    write_jsonl(tmp_path / "src" / "grow.jsonl", recs)
    scan(tmp_path / "src", tmp_path, "run1")
    write_jsonl(tmp_path / "src" / "grow.jsonl", recs + [{"id": "r20", "text": doc(rng)},
                                                         {"id": "r21", "text": recs[3]["text"]}])
    _, f = scan(tmp_path / "src", tmp_path, "run2")
    got = dedup_findings(f)
    assert {r for _, r in got} == {"r21"}  # the true duplicate, not the 20 records seen before
    assert got[("dedup.exact", "r21")]["representative"] == "r3"


def test_findings_in_parts_equal_the_whole_pass(monkeypatch):
    """corpus_parts hands the findings to the engine PART_ROWS at a time: their concatenation is
    the one frame built at once (a cluster's id and representative are the same in every part)."""
    from integrity.checks import dedup_near

    rng = random.Random(5)
    base = [doc(rng) for _ in range(6)]
    shards = {"s1": base, "s2": [edit(rng, t) for t in base] + [base[0]], "s3": [edit(rng, base[0]) for _ in range(4)]}
    whole = corpus(shards)
    monkeypatch.setattr(dedup_near, "PART_ROWS", 2)
    parts = corpus(shards)
    assert whole.height >= 8
    assert parts.equals(whole)
    assert len({d["cluster"] for d in details(whole).values()}) < whole.height  # clusters span parts


def test_secrets_in_a_representatives_id_are_masked_as_the_engine_masks_details():
    """dedup.near masks its details itself, once per representative (``masks_own_details``):
    a secret in a record id or shard name is masked in every finding of its cluster, with the
    result the engine's own masking of the whole detail gives."""
    from integrity.engine.redact import mask_frame

    token = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
    rng = random.Random(7)
    base = [doc(rng) for _ in range(3)]
    found = corpus({token: base, "s2": [edit(rng, t) for t in base]}, mask=mask_frame)
    assert NearDedup.masks_own_details
    d = details(found)
    assert set(d) == {"s20", "s21", "s22"}
    for rid, got in d.items():
        assert token not in found.filter(pl.col("record_id") == rid)["detail"].item()
        assert got["representative"].startswith("ghp_") and "\u2022" in got["representative"]
        assert got["representative_shard"].startswith("ghp_") and "\u2022" in got["representative_shard"]
        unmasked = {**got, "representative": f"{token}{got['representative_row']}", "representative_shard": token}
        engine = mask_frame(pl.DataFrame({"detail": [json.dumps(unmasked, separators=(",", ":"))]}))["detail"].item()
        assert json.loads(engine) == got


def test_the_engine_hands_dedup_near_the_raw_text_and_its_features_keep_only_hashes(tmp_path):
    """dedup.near keeps nothing of the text but hashes (``reads_raw_secrets``), so the engine does
    not mask secrets for it: the features it caches are those of the raw record (masking keeps a
    secret's first characters and a fingerprint, which would make more shingles of it), and no
    file of the scan holds the secret."""
    from integrity.analysis.dedup.kernel import near_features
    from integrity.engine.redact import mask_batch

    token = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
    text = f"the build step reads its deploy credential {token} from the environment"
    write_jsonl(tmp_path / "src" / "a.jsonl", [{"id": "r0", "text": text}])
    scan(tmp_path / "src", tmp_path, "night1")
    (path,) = (tmp_path / "state").rglob("features/dedup.near.parquet")
    nsh = pl.read_parquet(path)["nsh"].to_list()

    params = NearDedup().hasher.params

    def shingles(b: pa.RecordBatch) -> list[int]:
        return near_features(b, ("text",), 5, 1, params, 128)[4].tolist()

    raw = pa.record_batch({"text": pa.array([text], pa.large_string())})
    assert shingles(mask_batch(raw)) != shingles(raw)  # masking would change its shingles
    assert nsh == shingles(raw)
    for f in [*tmp_path.rglob("*")]:
        if f.is_file():
            assert token.encode() not in f.read_bytes() or f.name == "a.jsonl", f
