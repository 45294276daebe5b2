"""distribution.drift: identical distributions pass, real shifts are flagged, p-values are never 0."""
import json

import numpy as np
import polars as pl
import pytest

from flows.build import build_spec
from integrity.analysis.drift import compare_shard, knn_distances, mmd2_test, one_sided_ks_test, perm_masks, perm_pvalue
from integrity.analysis.profile import build_profile
from integrity.checks.base import ShardInfo
from integrity.checks.distribution_drift import DriftCheck
from integrity.engine import pipeline
from tests.conftest import write_jsonl
from tests.integrity.analysis.test_profile import batches, records

OPTS = dict(DriftCheck.default_options)


def shard_features(recs, name="s", **opts):
    check = DriftCheck({**opts}, ShardInfo(shard=name, uri=name))
    frames = [check.process_batch(b).features for _, b in batches(recs, name)]
    tail = check.finish_shard().features
    return pl.concat(frames + ([tail] if tail is not None else []))


@pytest.fixture(scope="module")
def feature_profile(tmp_path_factory):
    return build_profile("garden", tmp_path_factory.mktemp("ref"), batches=batches(records(1500, 1)), embed_sample=0)


def test_permutation_pvalues_are_never_zero():
    assert perm_pvalue(np.zeros(199), 10.0) == pytest.approx(1 / 200)
    assert perm_pvalue(np.full(199, 10.0), 0.0) == 1.0
    rng = np.random.default_rng(0)
    x, y = rng.normal(5, 1, (40, 8)), rng.normal(0, 1, (60, 8))  # no permutation comes close
    stat, p = mmd2_test(x, y, perm_masks(40, 60, 99, rng))
    assert stat > 0 and p == pytest.approx(1 / 100)
    d, p = one_sided_ks_test(np.ones(30) * 9, rng.random(50), perm_masks(30, 50, 99, rng))
    assert d == 1.0 and p == pytest.approx(1 / 100)


def test_every_p_value_of_a_drift_report_is_positive(feature_profile):
    cur = shard_features(records(300, 9, mix={"log": 1.0})).filter(pl.col("kind") == "record")
    res = compare_shard(cur, feature_profile, {**OPTS, "permutations": 50})
    ps = [e["p_value"] for e in res["effects"]] + [f["p_value"] for f in res["features"]]
    assert min(ps) == pytest.approx(1 / 51) and all(p > 0 for p in ps)


def test_identical_distributions_are_not_flagged(feature_profile):
    for seed in range(2, 7):
        cur = shard_features(records(400, seed)).filter(pl.col("kind") == "record")
        res = compare_shard(cur, feature_profile, OPTS, seed=seed)
        assert res["severity"] == "info", res["reasons"]
        assert res["score"] < 1 and not res["reasons"]
        auc = next(e for e in res["effects"] if e["effect"] == "domain_auc")
        assert auc["value"] < 0.6


def test_a_real_shift_is_flagged_with_its_features(feature_profile):
    cur = shard_features(records(400, 11, mix={"log": 0.4})).filter(pl.col("kind") == "record")
    res = compare_shard(cur, feature_profile, OPTS)
    assert res["severity"] == "critical" and res["score"] >= 1
    drifted = {f["feature"] for f in res["features"] if f["level"] != "info"}
    assert {"frac_upper", "frac_digit"} <= drifted
    eff = {e["effect"]: e for e in res["effects"]}
    assert eff["domain_auc"]["value"] > 0.65 and eff["domain_auc"]["p_value"] <= 0.01
    # a smaller shift is still seen, with a smaller effect
    small = compare_shard(shard_features(records(400, 12, mix={"log": 0.1})).filter(pl.col("kind") == "record"),
                          feature_profile, OPTS)
    assert small["severity"] in ("warn", "critical") and small["score"] < res["score"]


def test_novelty_is_a_lower_bound_on_the_share_of_new_content():
    rng = np.random.default_rng(1)

    def unit(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    ref = unit(rng.normal(0, 1, (400, 16)) + np.r_[3, np.zeros(15)])
    clean = unit(rng.normal(0, 1, (200, 16)) + np.r_[3, np.zeros(15)])
    new = unit(rng.normal(0, 1, (60, 16)) + np.r_[0, 3, np.zeros(14)])
    mixed = np.vstack([clean[:140], new])  # 30% new
    for x, lo, hi in ((clean, 0.0, 0.1), (mixed, 0.2, 0.31)):
        d, p = one_sided_ks_test(knn_distances(x, ref, 10), knn_distances(ref, ref, 10, leave_one_out=True),
                                 perm_masks(len(x), len(ref), 199, rng))
        assert lo <= d <= hi


def test_scan_with_reference_flags_the_drifted_shard_with_real_embeddings(tmp_path):
    ref = tmp_path / "ref"
    build_profile("garden", ref, batches=batches(records(400, 1)), embed_sample=48, topics=3, max_sample=400)
    src = tmp_path / "corpus"
    write_jsonl(src / "clean.jsonl", records(200, 2, prefix="c"))
    write_jsonl(src / "drift.jsonl", records(200, 3, mix={"finance": 0.5}, prefix="d"))
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"state_dir: {tmp_path / 'state'}\nchecks:\n  distribution.drift:\n    options:\n"
                      f"      embed_sample: 24\n")
    spec = build_spec(str(src), out=tmp_path / "run", policy=policy, reference=str(ref),
                      checks=["distribution.drift"], quarantine_mode="off")
    summary = pipeline.run_scan(spec, workers=1)
    f = pl.read_parquet(spec.out / "findings.parquet")
    shard = {r["shard"]: r for r in f.filter(pl.col("record_id").is_null()).iter_rows(named=True)
             if json.loads(r["detail"])["kind"] == "shard"}
    assert shard["clean.jsonl"]["severity"] == "info"
    assert shard["drift.jsonl"]["severity"] in ("warn", "critical")
    d = json.loads(shard["drift.jsonl"]["detail"])
    eff = {e["effect"]: e for e in d["effects"]}
    assert eff["novelty"]["value"] >= 0.1 and eff["novelty"]["p_value"] <= 0.01 and eff["mmd2"]["p_value"] <= 0.01
    assert d["embedded"] == 24 and len(d["topics"]["shard_mass"]) == 3
    # new-topic clusters come with example records that carry the evidence
    examples = f.filter((pl.col("shard") == "drift.jsonl") & pl.col("record_id").is_not_null())
    assert examples.height > 0 and all(r.startswith("d3-") for r in examples["record_id"])
    fair = [json.loads(x) for x in f["detail"] if json.loads(x)["kind"] == "fairness"]
    assert len(fair) == 2
    html = (spec.out / "report.html").read_text()
    assert "Drift per shard" in html and "Fairness view" in html
    assert summary["verdict"] in ("warn", "fail", "pass")
    # embeddings of the sampled texts are cached by shard content: a second scan embeds nothing
    import integrity.checks.distribution_drift as dd

    calls = []
    real = dd.embed_texts
    dd.embed_texts = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        spec2 = build_spec(str(src), out=tmp_path / "run2", policy=policy, reference=str(ref),
                           checks=["distribution.drift"], quarantine_mode="off")
        pipeline.run_scan(spec2, workers=1)
    finally:
        dd.embed_texts = real
    assert calls == []


def test_without_reference_one_info_finding_or_history(tmp_path):
    src = tmp_path / "corpus"
    write_jsonl(src / "a.jsonl", records(120, 2))
    policy = tmp_path / "p.yaml"
    policy.write_text(f"state_dir: {tmp_path / 'state'}\n")
    spec = build_spec(str(src), out=tmp_path / "r1", policy=policy, checks=["distribution.drift"])
    pipeline.run_scan(spec, workers=1)
    f = pl.read_parquet(spec.out / "findings.parquet")
    assert f.height == 1 and f["severity"][0] == "info" and json.loads(f["detail"][0])["kind"] == "skipped"
    # history: approved shards of earlier scans become the reference of later ones
    policy.write_text(f"state_dir: {tmp_path / 'state'}\nchecks:\n  distribution.drift:\n    options:\n"
                      f"      history: true\n")
    pipeline.run_scan(build_spec(str(src), out=tmp_path / "r2", policy=policy, checks=["distribution.drift"]), workers=1)
    write_jsonl(src / "b.jsonl", records(120, 3, mix={"log": 0.5}, prefix="b"))
    spec3 = build_spec(str(src), out=tmp_path / "r3", policy=policy, checks=["distribution.drift"])
    pipeline.run_scan(spec3, workers=1)
    f = pl.read_parquet(spec3.out / "findings.parquet")
    top = {r["shard"]: (r["severity"], json.loads(r["detail"])) for r in f.iter_rows(named=True)
           if json.loads(r["detail"])["kind"] == "shard"}
    assert top["a.jsonl"][0] == "info" and top["b.jsonl"][0] in ("warn", "critical")
    assert top["b.jsonl"][1]["basis"] == "history"


def test_min_records_and_unknown_options():
    from integrity.checks.base import CheckConfigError

    with pytest.raises(CheckConfigError):
        DriftCheck({"psi_warning": 1})
    feats = shard_features(records(10, 1)).filter(pl.col("kind") == "record")
    out = DriftCheck()._shard_findings("s", feats, None, "reference", None, 0)
    assert json.loads(out[0]["detail"])["kind"] == "skipped"
