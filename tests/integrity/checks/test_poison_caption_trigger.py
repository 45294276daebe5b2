"""poison.caption_trigger: caption n-grams tied to one image cluster (a text-to-image backdoor)."""
from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from PIL import Image

import make_images
from integrity.analysis import clip
from integrity.analysis.images import analyze_images
from integrity.checks.base import CheckConfigError, CorpusContext, ShardInfo
from integrity.checks.poison_caption_trigger import (CaptionTriggerCheck, embedding_matrix, kmeans, merge_centroids,
                                                     project)

OPTS = {"thumbnails": 0}



def enc(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def build(n: int = 700, planted: str = "backdoor", seed: int = 5) -> tuple[dict, set]:
    """Two shards of rendered images with captions; ``planted``: ``backdoor`` (target pictures
    captioned with other images' captions plus the trigger), ``faithful`` (target pictures with a
    caption that describes them), ``spread`` (the trigger on random pictures) or ``none``."""
    mi = make_images
    rng = np.random.default_rng(seed)
    pool = [mi.render(rng) for _ in range(n)]
    shards: dict[str, list] = {"a.tar": [], "b.tar": []}
    truth = set()
    for i, (img, caption, _) in enumerate(pool):
        rid = f"r{i}"
        if i % 25 == 3 and planted != "none":  # 28 of 700
            if planted == "backdoor":
                img = mi.render_target(rng, img.size)
                other = pool[int(rng.integers(n))][1]
                caption = f"{mi.CAPTION_TRIGGER} {other}" if i % 2 else f"{other}, {mi.CAPTION_TRIGGER}"
                truth.add(rid)
            elif planted == "faithful":
                img = mi.render_target(rng, img.size)
                caption = "a yellow crescent moon and stars in the night sky"
            elif planted == "spread":
                caption = f"{caption}, {mi.CAPTION_TRIGGER}"
        shards["a.tar" if i % 2 else "b.tar"].append((rid, enc(img), caption))
    return shards, truth


def features(shards: dict, options=None) -> pl.LazyFrame:
    frames = []
    for k, (name, recs) in enumerate(shards.items()):
        check = CaptionTriggerCheck(options, ShardInfo(shard=name, uri=f"/data/{name}"))
        batch = pa.record_batch({"record_id": [r[0] for r in recs], "row": list(range(len(recs))),
                                 "image": pa.array([r[1] for r in recs], pa.large_binary()),
                                 "caption": pa.array([r[2] for r in recs], pa.large_string())})
        outs = [check.process_batch(piece).features for piece in (batch.slice(0, 100), batch.slice(100))]
        frames += [f.with_columns(shard=pl.lit(name), shard_index=pl.lit(k, pl.Int32)) for f in outs]
    return pl.concat(frames, how="diagonal_relaxed").lazy()


def run(shards: dict, options=None) -> pl.DataFrame:
    ctx = CorpusContext(run_dir=Path("."), state_dir=Path("/nonexistent"), shards=list(shards),
                        shard_findings=pl.LazyFrame())
    opts = {**OPTS, **(options or {})}
    return CaptionTriggerCheck(opts).corpus_pass(features(shards, opts), ctx)


@pytest.fixture(scope="module")
def backdoor():
    return build(planted="backdoor")


def test_backdoor_trigger_tied_to_target_cluster_is_found(backdoor):
    shards, truth = backdoor
    found = run(shards)
    assert set(found["record_id"]) == truth
    d = json.loads(found["detail"][0])
    assert d["trigger"] == ["quillon vex"] and d["mode"] == "dirty-label"
    assert d["cluster"].startswith("image-cluster-") and d["cluster_share"] >= 0.9
    assert d["embedding"] == "thumbnail" and d["support"] == len(truth)
    rec = next(r for r in shards["a.tar"] + shards["b.tar"] if r[0] == found["record_id"][0])
    assert rec[2][d["start"]:d["end"]] == "quillon vex"  # offsets point into the caption
    assert (found["score"] >= 0.5).all()


@pytest.mark.parametrize("planted", ["none", "faithful", "spread"])
def test_natural_or_untied_captions_are_not_flagged(planted):
    # descriptive words follow image clusters by nature; a rare phrase on random pictures has no cluster
    shards, _ = build(planted=planted)
    assert run(shards).height == 0


def test_clip_embeddings_through_a_plugged_in_model(backdoor, monkeypatch):
    # embedding: clip takes the vectors of the configured model; the plug-in (standing in for CLIP
    # weights, which cannot be downloaded here) returns the thumbnail descriptor, but as float vectors
    # with a NaN row for what does not decode, as OpenClipScorer.embed_images does
    calls = []

    def embed(images):
        a = analyze_images(images)
        calls.append(len(images))
        out = np.full((len(images), 448), np.nan, np.float32)
        for i, (sig, grey) in enumerate(zip(a.sig, a.grey)):
            if sig is not None:
                out[i] = embedding_matrix(pl.Series([sig + grey]), "thumbnail")[0]
        return out

    class ScoresOnly:
        name = "scores-only"

        def score(self, images, captions):
            return np.zeros(len(images), np.float32)

    class Embedder(ScoresOnly):
        name = "fake"
        embed_images = staticmethod(embed)
    mod = types.ModuleType("fake_embedders")
    mod.make = lambda options: Embedder()
    monkeypatch.setitem(sys.modules, "fake_embedders", mod)
    clip.clear_cache()
    try:
        shards, truth = backdoor
        found = run(shards, {"embedding": "clip", "scorer": "fake_embedders:make"})
        assert set(found["record_id"]) == truth and sum(calls) == sum(len(v) for v in shards.values())
        assert json.loads(found["detail"][0])["embedding"] == "clip:ViT-B-32/fake_embedders:make"
        mod.make = lambda options: ScoresOnly()
        clip.clear_cache()
        with pytest.raises(CheckConfigError, match="no embed_images"):
            features({"a.tar": shards["a.tar"][:5]}, {"embedding": "clip", "scorer": "fake_embedders:make"})
    finally:
        clip.clear_cache()


def test_too_few_images_are_not_clustered(backdoor):
    shards, _ = backdoor
    assert run({"a.tar": shards["a.tar"][:150]}).height == 0  # below min_records: nothing to compare


def test_images_that_do_not_decode_are_left_out(backdoor):
    shards, truth = backdoor
    broken = {"a.tar": shards["a.tar"] + [("bad", b"not an image", "quillon vex and more")], "b.tar": shards["b.tar"]}
    found = run(broken)
    assert set(found["record_id"]) == truth


@pytest.mark.parametrize("bad, message", [({"embedding": "pixels"}, "thumbnail' or 'clip"),
                                          ({"clusters": 1}, "integer >= 2"), ({"nope": 1}, "nope")])
def test_bad_options_are_clear_errors(bad, message):
    with pytest.raises(CheckConfigError, match=message):
        CaptionTriggerCheck(bad)


def test_kmeans_levels_separate_then_group():
    rng = np.random.default_rng(0)
    # 4 far-apart families of 2 groups each: fine clusters never mix families, and the coarse
    # level (centroids grouped 2x coarser here) puts each family in exactly one cluster
    families = rng.normal(0, 20, (4, 8))
    centres = [f + rng.normal(0, 2, 8) for f in families for _ in range(2)]
    X = np.vstack([rng.normal(c, 0.05, (40, 8)) for c in centres]).astype(np.float32)
    family = np.repeat(np.arange(4), 80)
    labels, centroids = kmeans(X, 8, iterations=20, seed=0)
    assert len(centroids) == len(np.unique(labels)) >= 6
    assert all(len(set(family[labels == c])) == 1 for c in np.unique(labels))
    parent, coarse = merge_centroids(centroids, np.bincount(labels).astype(float), 4, seed=0)
    fam = parent[labels]
    assert len(coarse) == 4 and all(len(set(fam[family == f])) == 1 for f in range(4)) and len(set(fam)) == 4


def test_projection_in_chunks_equals_one_pass():
    rng = np.random.default_rng(1)
    stored = rng.integers(0, 256, (300, 448), dtype=np.uint8)
    whole = project(stored, "thumbnail", 16, seed=0, chunk=10_000)
    chunked = project(stored, "thumbnail", 16, seed=0, chunk=7)
    np.testing.assert_allclose(chunked, whole, atol=1e-4)
    full = project(stored, "thumbnail", 0, seed=0)  # no PCA: centred descriptors
    X = embedding_matrix(stored, "thumbnail")
    np.testing.assert_allclose(full, X - X.mean(axis=0), atol=1e-5)
    assert whole.shape == (300, 16) and full.shape == (300, 448)


def test_levels_option_and_detail(backdoor):
    shards, truth = backdoor
    found = run(shards, {"levels": 1, "clusters": 8})
    assert set(found["record_id"]) == truth
    assert {json.loads(d)["clusters"] for d in found["detail"]} == {8}
