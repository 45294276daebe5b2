"""Reference profiles: built from a trusted corpus, versioned, small, loadable by scan --reference.

The small generated corpora (``records``) are shared with the drift and synthetic tests.
"""
from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from integrity.analysis.profile import ProfileError, build_profile, list_versions, load_profile

TOPICS = {
    "garden": (["garden", "tomato", "soil", "seed", "flower", "rose", "compost", "lawn", "hedge", "tulip", "orchard",
                "greenhouse", "seedling", "mulch", "shrub"],
               ["grows", "blooms", "needs water", "wilts", "thrives", "spreads", "sprouts", "ripens"],
               ["green", "fragrant", "wild", "young", "tall", "sunny", "shaded", "wet"]),
    "finance": (["market", "stock", "bond", "interest rate", "bank", "loan", "dividend", "portfolio", "inflation",
                 "currency", "mortgage", "investor", "fund", "budget", "tax"],
                ["rises", "falls", "stabilizes", "doubles", "recovers", "crashes", "pays out", "tightens"],
                ["volatile", "risky", "steady", "global", "quarterly", "private", "public", "annual"]),
}


def prose(topic: str, rng: random.Random) -> str:
    nouns, verbs, adjs = TOPICS[topic]
    sents = []
    for _ in range(rng.randint(2, 6)):
        sents.append(f"The {rng.choice(adjs)} {rng.choice(nouns)} {rng.choice(verbs)} when the "
                     f"{rng.choice(nouns)} is {rng.choice(adjs)}, and it is {rng.choice(adjs)} in the "
                     f"{rng.choice(nouns)}.")
    return " ".join(sents)


def logline(rng: random.Random) -> str:
    return " ".join(f"ERROR 0x{rng.getrandbits(32):08X} AT {rng.randint(1000, 99999)}: MODULE_{rng.randint(1, 99)} "
                    f"FAILED ({rng.randint(1, 500)} MS)" for _ in range(rng.randint(1, 4)))


def records(n: int, seed: int, topic: str = "garden", mix: dict[str, float] | None = None,
            prefix: str = "r") -> list[dict]:
    """``n`` records of ``topic`` prose; ``mix`` replaces a share of them ({"finance": 0.5, "log": 0.2})."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        u, kind, acc = rng.random(), topic, 0.0
        for k, share in (mix or {}).items():
            acc += share
            if u < acc:
                kind = k
                break
        text = logline(rng) if kind == "log" else prose(kind, rng)
        out.append({"id": f"{prefix}{seed}-{i}", "text": text})
    return out


def batches(recs: list[dict], shard: str = "ref"):
    t = pa.table({"record_id": [r["id"] for r in recs], "row": pa.array(range(len(recs)), pa.int64()),
                  "text": pa.array([r["text"] for r in recs], pa.large_string()),
                  **({"label": [r["label"] for r in recs]} if recs and "label" in recs[0] else {})})
    for b in t.to_batches(max_chunksize=256):
        yield shard, b


def test_profile_cli_builds_a_small_versioned_profile_with_real_minilm_topics(tmp_path):
    from tests.conftest import write_jsonl
    from flows.cli import app

    write_jsonl(tmp_path / "trusted" / "a.jsonl", records(300, 1, mix={"finance": 0.5}))
    out = tmp_path / "ref"
    r = CliRunner().invoke(app, ["profile", str(tmp_path / "trusted"), "--out", str(out), "--embed-sample", "60",
                                 "--topics", "4", "--max-sample", "200"])
    assert r.exit_code == 0, r.output
    prof = load_profile(out)
    v1 = prof.version
    files = {p.name for p in prof.path.iterdir()}
    assert files == {"profile.json", "features.parquet", "embeddings.npy", "centroids.npy"}
    assert sum(p.stat().st_size for p in prof.path.iterdir()) < 1_000_000  # small
    m = prof.meta
    assert m["format"] == 1 and m["n_records"] == 300 and m["n_sample"] == 200 and prof.features.height == 200
    assert m["languages"]["en"] > 0.99
    f = m["features"]["log_chars"]
    assert len(f["edges"]) <= 9 and sum(f["counts"]) == 200 and f["quantiles"]["q05"] < f["quantiles"]["q95"]
    emb = m["embedding"]
    assert emb["model"] == "all-MiniLM-L6-v2" and emb["n"] == 60 and emb["k"] == 4 and emb["dim"] == 384
    assert prof.embeddings.shape == (60, 384) and prof.centroids.shape == (4, 384)
    assert np.allclose(np.linalg.norm(prof.centroids, axis=1), 1, atol=1e-4)
    # the two topics fall into different centroids (real MiniLM embeddings, not random vectors)
    texts = [t for t in (records(300, 1, mix={"finance": 0.5})[i]["text"] for i in range(300))]
    from integrity.analysis.profile import embed_texts, nearest_centroid

    g = embed_texts([t for t in texts if "garden" in t or "tomato" in t][:10])
    fi = embed_texts([t for t in texts if "market" in t or "stock" in t][:10])
    ga, fa = nearest_centroid(g, prof.centroids)[0], nearest_centroid(fi, prof.centroids)[0]
    assert not set(np.bincount(ga).argmax(keepdims=True)) & set(np.bincount(fa).argmax(keepdims=True))
    assert abs(sum(emb["topic_mass"]) - 1) < 1e-6 and 0 < emb["distance_quantiles"]["q95"] < 1
    # a second build is a new version; the old one stays loadable
    r = CliRunner().invoke(app, ["profile", str(tmp_path / "trusted"), "--out", str(out), "--embed-sample", "0"])
    assert r.exit_code == 0, r.output
    assert len(list_versions(out)) == 2 and load_profile(out).version != v1
    assert load_profile(out / "versions" / v1).embedding is not None and load_profile(out).embedding is None


def test_sample_is_deterministic_and_independent_of_order(tmp_path):
    recs = records(400, 2)
    a = build_profile("x", tmp_path / "a", batches=batches(recs), max_sample=100, embed_sample=0)
    b = build_profile("x", tmp_path / "b", batches=batches(list(reversed(recs))), max_sample=100, embed_sample=0)
    from polars.testing import assert_frame_equal

    assert_frame_equal(a.features, b.features, check_exact=False, rel_tol=1e-9)  # same records, same order
    assert a.meta["features"]["log_chars"]["edges"] == b.meta["features"]["log_chars"]["edges"]


def test_synthetic_classifier_and_labels(tmp_path):
    human = [{**r, "label": "pos" if i % 3 else "neg"} for i, r in enumerate(records(200, 3))]
    synthetic = [{"id": f"s{i}", "text": "Certainly! Here's an overview. " + prose("garden", random.Random(i)) +
                  " Furthermore, it is crucial to delve into the comprehensive insights. I hope this helps!"}
                 for i in range(120)]
    prof = build_profile("x", tmp_path / "p", batches=batches(human), synthetic_batches=batches(synthetic, "syn"),
                         embed_sample=0)
    sc = prof.synthetic_classifier
    assert sc["cv_auroc"] > 0.95 and sc["tpr"] > 0.9 and sc["fpr"] < 0.1
    assert prof.meta["labels"] == pytest.approx({"neg": 67 / 200, "pos": 133 / 200})
    json.dumps(prof.meta)  # plain JSON: nothing pickled


def test_load_errors_say_what_to_do(tmp_path):
    with pytest.raises(ProfileError, match="integrity profile"):
        load_profile(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "profile.json").write_text('{"format": 99}')
    with pytest.raises(ProfileError, match="format"):
        load_profile(tmp_path / "bad")
    with pytest.raises(ProfileError, match="no records"):
        build_profile("empty", tmp_path / "e", batches=iter([]), embed_sample=0)
