"""synthetic.text: per-record evidence and a per-shard synthetic share against a policy maximum."""
import json
import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from integrity.analysis.profile import build_profile
from integrity.checks.base import CorpusContext
from integrity.analysis.machine_text import wilson
from integrity.analysis.synthetic_share import acc_share, estimate_share
from integrity.checks.synthetic_text import SyntheticTextCheck
from tests.conftest import SHARED_DATA
from tests.integrity.analysis.test_profile import TOPICS, batches, records


def machine(i: int) -> dict:
    """Text in the even, connective-heavy register of an instruction-tuned generator (no boilerplate)."""
    rng = random.Random(1000 + i)
    nouns, _, adjs = TOPICS["garden"]
    paras = []
    for _ in range(3):
        paras.append(f"Furthermore, the {rng.choice(adjs)} {rng.choice(nouns)} plays a crucial role in a comprehensive "
                     f"approach to the {rng.choice(nouns)}. Additionally, it is essential to consider the "
                     f"{rng.choice(nouns)}, which offers valuable insights. Overall, this intricate balance "
                     f"ensures a significant and vibrant {rng.choice(nouns)}.")
    return {"id": f"m{i}", "text": "\n\n".join(paras)}


def run(shards: dict[str, list[dict]], tmp_path: Path, reference: Path | None = None, **opts):
    frames = []
    for i, (name, recs) in enumerate(shards.items()):
        check = SyntheticTextCheck(opts)
        parts = [check.process_batch(b).features for _, b in batches(recs, name)]
        frames.append(pl.concat(parts).with_columns(shard=pl.lit(name), shard_index=pl.lit(i, pl.Int32)))
    ctx = CorpusContext(run_dir=tmp_path, state_dir=tmp_path / "state", shards=list(shards),
                        shard_findings=pl.LazyFrame(), reference=reference, scan_id="scan")
    return SyntheticTextCheck(opts).corpus_pass(pl.concat(frames).lazy(), ctx)


def shard_rows(found: pl.DataFrame) -> dict[str, dict]:
    return {r["shard"]: {**json.loads(r["detail"]), "severity": r["severity"], "score": r["score"]}
            for r in found.filter(pl.col("record_id").is_null()).iter_rows(named=True)}


def test_boilerplate_is_evidence_with_its_span_and_a_lower_bound(tmp_path):
    recs = records(40, 1)
    recs[3]["text"] = "As an AI language model, I cannot garden. " + recs[3]["text"]
    recs[9]["text"] = recs[9]["text"] + " I hope this helps!"
    found = run({"s": recs, "clean": records(40, 2)}, tmp_path)
    rec = {r["record_id"]: r for r in found.filter(pl.col("record_id").is_not_null()).iter_rows(named=True)}
    assert set(rec) == {"r1-3", "r1-9"}
    assert rec["r1-3"]["severity"] == "warn" and rec["r1-9"]["severity"] == "info"
    d = json.loads(rec["r1-3"]["detail"])
    span = d["matches"][0]
    assert recs[3]["text"][span["start"]:span["end"]].lower() == "as an ai language model"
    assert "not proof" in d["note"]
    shards = shard_rows(found)
    assert set(shards) == {"s"}  # nothing measured on the clean shard without a reference: no finding
    s = shards["s"]
    assert s["estimate"] == pytest.approx(1 / 40) and s["confidence"] == "low" and "lower bound" in s["method"]
    assert "does not show human origin" in s["note"]


def test_classifier_share_estimates_and_verdicts(tmp_path):
    human = records(400, 3)
    ref = tmp_path / "ref"
    build_profile("human", ref, batches=batches(human), synthetic_batches=batches([machine(i) for i in range(200)], "syn"),
                  embed_sample=0)
    shards = {}
    for share in (0.0, 0.3, 0.6):
        n_syn = int(150 * share)
        shards[f"mix{int(share * 100)}"] = records(150 - n_syn, 40 + int(share * 10)) + \
            [machine(500 + int(share * 1000) + i) for i in range(n_syn)]
    found = run(shards, tmp_path, ref, max_share=0.2)
    s = shard_rows(found)
    for name, truth in (("mix0", 0.0), ("mix30", 0.3), ("mix60", 0.6)):
        assert abs(s[name]["estimate"] - truth) <= 0.1, (name, s[name]["estimate"])
        lo, hi = s[name]["interval"]
        assert lo - 0.05 <= truth <= hi + 0.05
        assert "classifier" in s[name]["method"] and s[name]["confidence"] in ("high", "medium")
    assert s["mix0"]["severity"] == "info" and s["mix60"]["severity"] == "critical"
    assert s["mix30"]["severity"] in ("warn", "critical")
    assert s["mix60"]["unlike_reference"]["lower_bound"] > 0.3  # style bound: at least this share is unlike the reference
    assert s["mix0"]["unlike_reference"]["lower_bound"] < 0.1
    # per-record evidence: machine records, with the classifier's probability
    flagged = found.filter(pl.col("record_id").is_not_null() & (pl.col("shard") == "mix60"))["record_id"].to_list()
    assert sum(r.startswith("m") for r in flagged) >= 0.9 * 90 and sum(not r.startswith("m") for r in flagged) <= 5
    # a second night: the shard finding carries the share over nights
    s2 = shard_rows(run(shards, tmp_path, ref, max_share=0.2))
    assert len(s2["mix60"]["history"]) == 1 and s2["mix60"]["history"][0]["estimate"] == pytest.approx(s["mix60"]["estimate"])


@pytest.mark.skipif(not (SHARED_DATA / "synthetic").exists(), reason="../shared/data/synthetic is absent")
def test_zero_shot_verdict_needs_the_whole_interval_above_max_share(tmp_path):
    """A reference of human reddit posts and no synthetic sample: the zero-shot share decides. Human posts
    pass; a shard of Llama 2 answers fails because its whole interval is above max_share; its records carry
    zero_shot evidence with their reference percentile. (Templated test prose is no stand-in here: the
    generator-register template of `machine()` reads as *more* human than the template of `records()`.)"""
    d = pl.read_parquet(SHARED_DATA / "synthetic" / "m4-reddit-llama2.parquet")
    hum, llm = d.filter(pl.col("source") == "human"), d.filter(pl.col("source") == "llama2")

    def recs(df):
        return [{"id": i, "text": t} for i, t in zip(df["id"], df["text"])]

    ref = tmp_path / "ref"
    build_profile("reddit-human", ref, batches=batches(recs(hum.head(70))), embed_sample=0)
    found = run({"human": recs(hum.tail(30)), "machine": recs(llm)}, tmp_path, ref)
    s = shard_rows(found)
    assert "zero-shot" in s["human"]["method"] and s["human"]["severity"] == "info"
    assert s["human"]["interval"][0] == 0.0 and s["human"]["estimate"] < 0.2
    m = s["machine"]
    assert m["severity"] == "critical" and m["interval"][0] > 0.2 and m["tpr_range"][0] < m["tpr_range"][1]
    rec = found.filter(pl.col("record_id").str.ends_with("-llama2"))
    assert rec.height >= 20
    ev = [e for e in json.loads(rec["detail"][0])["evidence"] if e["kind"] == "zero_shot"]
    assert ev and ev[0]["reference_percentile"] >= 0.99
    # without a reference the zero-shot score has no human records to be read against: it says nothing
    noref = run({"machine": recs(llm.head(30))}, tmp_path / "noref")  # (some answers carry boilerplate)
    assert "markers" in shard_rows(noref)["machine"]["method"]
    assert not any(e["kind"] == "zero_shot" for d_ in noref["detail"] for e in json.loads(d_).get("evidence", []))


def test_a_profile_without_zero_shot_features_says_so(tmp_path):
    """Profiles built before the zero-shot features load and scan as before, with a note to rebuild."""
    from dataclasses import replace

    from integrity.analysis.machine_text import ZS_FEATURES

    prof = build_profile("human", tmp_path / "ref", batches=batches(records(60, 4)), embed_sample=0)
    assert set(ZS_FEATURES) <= set(prof.features.columns)
    old = replace(prof, features=prof.features.drop(list(ZS_FEATURES)))
    check = SyntheticTextCheck()
    df = pl.concat([check.process_batch(b).features for _, b in batches(records(30, 5))])
    res, recs = check.assess_shard(df, old)
    assert "rebuild it with `integrity profile`" in res["zero_shot_note"] and "markers" in res["method"]
    res, _ = check.assess_shard(df, prof)
    assert "zero_shot_note" not in res and "zero-shot" in res["method"]


def test_share_arithmetic():
    assert acc_share(0.5, 0.9, 0.1) == pytest.approx(0.5)
    assert acc_share(0.05, 0.9, 0.1) == 0.0 and acc_share(0.99, 0.9, 0.1) == 1.0
    lo, hi = wilson(30, 100)
    assert lo < 0.3 < hi and wilson(0, 0) == (0.0, 1.0)
    est = estimate_share(np.r_[np.ones(30), np.zeros(70)], {"tpr": 1.0, "fpr": 0.0, "cv_auroc": 1.0})
    assert est["estimate"] == pytest.approx(0.3) and est["confidence"] == "high"


@pytest.mark.skipif(not (SHARED_DATA / "synthetic").exists(), reason="../shared/data/synthetic is absent")
def test_real_human_vs_llama2_texts(tmp_path):
    """M4 (arxiv + reddit): a classifier trained on half the human and half the Llama 2 texts
    separates the other halves, and a 50% shard's share is estimated within 15 points."""
    from sklearn.metrics import roc_auc_score

    from integrity.analysis.features import text_features
    from integrity.analysis.profile import classifier_scores

    d = pl.concat([pl.read_parquet(p) for p in sorted((SHARED_DATA / "synthetic").glob("*.parquet"))])
    d = d.with_columns(pair=pl.col("id").str.replace(r"-(human|llama2)$", ""))
    pairs = sorted(set(d["pair"]))
    train = set(pairs[::2])
    tr, te = d.filter(pl.col("pair").is_in(train)), d.filter(~pl.col("pair").is_in(train))

    def recs(df):
        return [{"id": i, "text": t} for i, t in zip(df["id"], df["text"])]

    ref = tmp_path / "ref"
    prof = build_profile("m4", ref, batches=batches(recs(tr.filter(pl.col("source") == "human"))),
                         synthetic_batches=batches(recs(tr.filter(pl.col("source") == "llama2")), "syn"), embed_sample=0)
    scores = classifier_scores(prof.synthetic_classifier, text_features(te["text"]))
    assert roc_auc_score((te["source"] == "llama2").to_numpy(), scores) > 0.9
    hum, llm = te.filter(pl.col("source") == "human"), te.filter(pl.col("source") == "llama2")
    mix = recs(hum.head(50)) + recs(llm.tail(50))
    s = shard_rows(run({"mix": mix}, tmp_path, ref))["mix"]
    assert abs(s["estimate"] - 0.5) <= 0.15


@pytest.mark.skipif(not (SHARED_DATA / "synthetic").exists(), reason="../shared/data/synthetic is absent")
def test_zero_shot_on_held_out_prompts_through_a_real_scan(tmp_path):
    """No machine text anywhere in the reference: `integrity profile` of the M4 tuning prompts' human texts,
    then `integrity scan` of Parquet shards made only of the held-out slice (prompts the shipped detector
    never saw): a human shard and a half-Llama 2 shard. Records rank by their calibrated scores, the mixed
    shard's share interval covers 50% and the human shard does not fail the gate."""
    import os
    import subprocess
    import sys

    import xxhash
    from sklearn.metrics import roc_auc_score

    from tests.conftest import PROJECT, write_parquet

    d = pl.concat([pl.read_parquet(p) for p in sorted((SHARED_DATA / "synthetic").glob("*.parquet"))])
    d = d.with_columns(pair=pl.col("id").str.replace(r"-(human|llama2)$", ""))
    held = pl.Series([xxhash.xxh64_intdigest(p.encode(), 16) % 5 == 0 for p in d["pair"].to_list()])
    d = d.with_columns(held=held, half=pl.Series([xxhash.xxh64_intdigest(p.encode(), 1) % 2 for p in d["pair"]]))

    def recs(df):
        return [{"id": i, "text": t} for i, t in zip(df["id"], df["text"])]

    tune, slice_ = d.filter(~pl.col("held")), d.filter(pl.col("held"))
    write_parquet(tmp_path / "ref" / "human.parquet", recs(tune.filter(pl.col("source") == "human")))
    human = slice_.filter(pl.col("source") == "human")
    write_parquet(tmp_path / "src" / "clean.parquet", recs(human.filter(pl.col("half") == 0)))
    write_parquet(tmp_path / "src" / "mixed.parquet", recs(pl.concat([
        human.filter(pl.col("half") == 1), slice_.filter((pl.col("source") == "llama2") & (pl.col("half") == 0))])))
    n_mixed = pl.read_parquet(tmp_path / "src" / "mixed.parquet").height
    truth = slice_.filter((pl.col("source") == "llama2") & (pl.col("half") == 0)).height / n_mixed
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"state_dir: {tmp_path / 'state'}\nchecks:\n  synthetic.text:\n    options:\n"
                      f"      record_min_score: 0.0\n      zero_shot_record_min: 0.0\n")
    env = {**os.environ, "PYTHONPATH": f"{PROJECT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env,
                           timeout=300)
        assert r.returncode in (0, 1), r.stdout + r.stderr
        return r

    cli("profile", str(tmp_path / "ref"), "--out", str(tmp_path / "profile"), "--embed-sample", "0")
    cli("scan", str(tmp_path / "src"), "--out", str(tmp_path / "run"), "--reference", str(tmp_path / "profile"),
        "--policy", str(policy), "--runner", "inline", "--checks", "synthetic.text")
    found = pl.read_parquet(tmp_path / "run" / "findings.parquet").filter(pl.col("check") == "synthetic.text")
    shards = {Path(r["shard"]).stem: {**json.loads(r["detail"]), "severity": r["severity"]}
              for r in found.filter(pl.col("record_id").is_null()).iter_rows(named=True)}
    assert set(shards) == {"clean", "mixed"}, shards
    for name, share in (("clean", 0.0), ("mixed", truth)):
        s = shards[name]
        assert "zero-shot" in s["method"], s
        assert s["interval"][0] <= share <= s["interval"][1], (name, s)
    assert shards["clean"]["severity"] != "critical" and shards["clean"]["estimate"] < 0.2
    assert shards["mixed"]["estimate"] > shards["clean"]["estimate"] + 0.2
    recs_ = found.filter(pl.col("record_id").is_not_null())
    machine = recs_["record_id"].str.ends_with("-llama2").to_numpy()
    assert machine.sum() > 15 and (~machine).sum() > 30
    assert roc_auc_score(machine, recs_["score"].to_numpy()) >= 0.8
    ev = json.loads(recs_["detail"][0])["evidence"]
    assert any(e["kind"] == "zero_shot" and 0 <= e["reference_percentile"] <= 1 for e in ev)


@pytest.mark.skipif(not (SHARED_DATA / "synthetic").exists() or not (SHARED_DATA / "debian").exists(),
                    reason="../shared/data (debian/, synthetic/) is absent")
def test_a_reference_of_another_domain_does_not_call_human_text_machine_made(tmp_path):
    """The issue's setting through a real scan: `integrity profile` of Debian package descriptions with M4
    arxiv Llama 2 answers as the known-synthetic sample, then `integrity scan` of human reddit posts. Read
    against Debian text, reddit posts look machine-made (the calibrated estimates said 93-96%); the shard
    is found out of the reference's domain instead, its share is the marker lower bound with an interval
    up to 1, the gate does not fail, no record is reported as machine-made, and a held-out Debian shard is
    still scanned in domain."""
    import os
    import subprocess
    import sys

    from tests.conftest import PROJECT, write_parquet

    deb = pl.read_parquet(SHARED_DATA / "debian" / "descriptions.parquet", columns=["id", "text"])
    m4 = pl.concat([pl.read_parquet(p) for p in sorted((SHARED_DATA / "synthetic").glob("*.parquet"))])

    def recs(df):
        return [{"id": i, "text": t} for i, t in zip(df["id"], df["text"])]

    write_parquet(tmp_path / "ref" / "debian.parquet", recs(deb.gather_every(61).head(500)))
    write_parquet(tmp_path / "syn" / "arxiv-llama2.parquet",
                  recs(m4.filter((pl.col("domain") == "arxiv") & (pl.col("source") == "llama2"))))
    write_parquet(tmp_path / "src" / "reddit.parquet",
                  recs(m4.filter((pl.col("domain") == "reddit") & (pl.col("source") == "human"))))
    write_parquet(tmp_path / "src" / "debian.parquet", recs(deb.gather_every(59, offset=7).head(150)))
    env = {**os.environ, "PYTHONPATH": f"{PROJECT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env,
                           timeout=300)
        assert r.returncode in (0, 1), r.stdout + r.stderr
        return r

    cli("profile", str(tmp_path / "ref"), "--out", str(tmp_path / "profile"), "--embed-sample", "0",
        "--synthetic-sample", str(tmp_path / "syn"))
    cli("scan", str(tmp_path / "src"), "--out", str(tmp_path / "run"), "--reference", str(tmp_path / "profile"),
        "--runner", "inline", "--checks", "synthetic.text", "--policy", str(_policy(tmp_path)))
    found = pl.read_parquet(tmp_path / "run" / "findings.parquet").filter(pl.col("check") == "synthetic.text")
    shards = {Path(r["shard"]).stem: {**json.loads(r["detail"]), "severity": r["severity"]}
              for r in found.filter(pl.col("record_id").is_null()).iter_rows(named=True)}
    reddit, debian = shards["reddit"], shards["debian"]
    assert reddit["reference_domain"]["out_of_domain"] and "another domain" in reddit["method"]
    assert reddit["severity"] == "warn" and "reference from another domain" in reddit["reasons"][0]
    assert reddit["estimate"] < 0.2 and reddit["interval"][0] == 0.0 and reddit["interval"][1] == 1.0
    assert reddit["not_trusted"]["classifier"]["estimate"] > 0.5  # what it would have said
    records = found.filter(pl.col("record_id").is_not_null() & pl.col("shard").str.contains("reddit"))
    assert not any(e["kind"] in ("classifier", "zero_shot") for d in records["detail"]
                   for e in json.loads(d)["evidence"])
    assert not debian["reference_domain"]["out_of_domain"] and "classifier" in debian["method"]
    assert debian["severity"] == "info" and debian["estimate"] < 0.1


def _policy(tmp_path: Path) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(f"state_dir: {tmp_path / 'state'}\n")
    return p
