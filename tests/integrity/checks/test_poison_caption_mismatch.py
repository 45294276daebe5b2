"""poison.caption_mismatch: the corpus-relative judgement with a controllable scorer, and the real
open_clip path with random weights (no weights can be downloaded here)."""
from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from PIL import Image

from integrity.analysis import clip
from integrity.analysis.clip import CallableScorer, OpenClipScorer, ScorerConfigError, load_state_dict
from integrity.checks.base import CheckConfigError, CorpusContext, ShardInfo
from integrity.checks.poison_caption_mismatch import CaptionMismatch

COLORS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220), "yellow": (240, 220, 40)}


def solid(name: str, seed: int) -> bytes:
    r = np.random.default_rng(seed)
    arr = np.clip(np.array(COLORS[name]) + r.normal(0, 6, (48, 48, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def colour_agreement(images, captions):
    """A controllable scorer: high when the caption names the image's dominant colour."""
    out = []
    for img, cap in zip(images, captions):
        mean = np.asarray(img, dtype=float).reshape(-1, 3).mean(0)
        name = min(COLORS, key=lambda c: np.abs(np.array(COLORS[c]) - mean).sum())
        jitter = (sum(map(ord, cap)) % 17) / 1000.0  # a natural spread around the typical score
        out.append((0.30 if name in cap.split() else 0.12) + jitter)
    return out


def corpus(n=80, bad=(5, 23, 61)):
    names = list(COLORS)
    recs = []
    for i in range(n):
        c = names[i % 4]
        cap_c = names[(i + 2) % 4] if i in bad else c
        recs.append((f"r{i}", solid(c, i), f"a plain {cap_c} square number {i}"))
    return recs


def run(records, options, scorer, shards=2):
    frames = []
    per = len(records) // shards
    for k in range(shards):
        part = records[k * per:(k + 1) * per] if k < shards - 1 else records[k * per:]
        check = CaptionMismatch(options, ShardInfo(f"s{k}.tar", f"/nowhere/s{k}.tar"))
        check.scorer = scorer
        batch = pa.record_batch({"record_id": [r[0] for r in part], "row": list(range(len(part))),
                                 "image": pa.array([r[1] for r in part], pa.large_binary()),
                                 "caption": pa.array([r[2] for r in part], pa.large_string())})
        out = check.process_batch(batch)
        if out.features is not None:
            frames.append(out.features.with_columns(shard=pl.lit(f"s{k}.tar"), shard_index=pl.lit(k, pl.Int32)))
    ctx = CorpusContext(run_dir=Path("."), state_dir=Path("/nonexistent"), shards=[], shard_findings=pl.LazyFrame())
    return CaptionMismatch(options).corpus_pass(pl.concat(frames).lazy(), ctx)


def test_pairs_far_below_the_corpus_are_flagged():
    found = run(corpus(), {"thumbnails": 0}, CallableScorer(colour_agreement, "colours"))
    assert sorted(found["record_id"]) == ["r23", "r5", "r61"]
    d = json.loads(found["detail"][0])
    assert d["clip_score"] < d["corpus_median"] and d["z"] >= 3.5 and d["model"] == "colours"
    assert (found["score"] >= 3.5).all()


def test_undecodable_or_captionless_pairs_are_not_scored():
    recs = corpus()
    recs[1] = ("r1", b"not an image", "a plain green square")
    recs[2] = ("r2", recs[2][1], None)
    scores = CallableScorer(colour_agreement).score([r[1] for r in recs[:4]], [r[2] for r in recs[:4]])
    assert np.isfinite(scores[0]) and np.isnan(scores[1]) and np.isnan(scores[2])


def test_too_few_pairs_is_no_distribution():
    assert run(corpus(30, bad=(5,)), {"min_records": 50}, CallableScorer(colour_agreement)) is None


def test_absolute_floor():
    flat = lambda imgs, caps: [0.2] * len(imgs)  # noqa: E731  no spread at all: z cannot judge
    assert run(corpus(), {}, CallableScorer(flat)) is None
    found = run(corpus(), {"max_score": 0.25, "thumbnails": 0}, CallableScorer(flat))
    assert found.height == 80


def test_no_weights_is_a_clear_error():
    with pytest.raises(ScorerConfigError, match="pretrained"):
        OpenClipScorer("ViT-B-32", pretrained=None)
    check = CaptionMismatch({"pretrained": None})
    with pytest.raises(CheckConfigError, match="needs CLIP weights"):
        check.scorer


@pytest.fixture(scope="module")
def random_clip():
    """ViT-B-32 built from its config with random weights (forward passes are kept few: CPU only)."""
    return OpenClipScorer("ViT-B-32", pretrained=None, device="cpu", batch_size=2, allow_random_weights=True)


def test_open_clip_random_weights_mechanics(random_clip):
    recs = corpus(3)
    images = [r[1] for r in recs] + [b"broken"]
    caps = [r[2] for r in recs] + ["x"]
    s = random_clip.score(images, caps)  # batches of 2: the next batch is prepared while one runs
    assert s.dtype == np.float32 and np.isfinite(s[:3]).all() and np.isnan(s[3])
    assert (np.abs(s[:3]) <= 1.0001).all()
    random_clip.batch_size = 4
    try:  # batching does not change the scores
        np.testing.assert_allclose(random_clip.score(images, caps)[:3], s[:3], atol=1e-4)
    finally:
        random_clip.batch_size = 2
    assert random_clip.name == "ViT-B-32/random-weights"


def test_local_checkpoints_load_without_pickle(tmp_path: Path, random_clip):
    import torch
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in random_clip.model.state_dict().items()}
    save_file(sd, str(tmp_path / "clip.safetensors"))
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "clip.pt")
    loaded = load_state_dict(tmp_path / "clip.pt")  # torch.load(weights_only=True), prefix stripped
    assert set(loaded) == set(sd) and all(torch.equal(loaded[k], sd[k]) for k in list(sd)[:20])
    rec = corpus(1)
    other = OpenClipScorer("ViT-B-32", pretrained=str(tmp_path / "clip.safetensors"), device="cpu")
    assert other.name.endswith("clip.safetensors")
    np.testing.assert_allclose(other.score([rec[0][1]], [rec[0][2]]),
                               random_clip.score([rec[0][1]], [rec[0][2]]), atol=1e-4)

    class Evil:
        def __reduce__(self):
            return (print, ("pickle executed",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    with pytest.raises(ScorerConfigError, match="not a plain weights file"):
        load_state_dict(tmp_path / "evil.pt")
    (tmp_path / "weights.pkl").write_bytes(b"x")
    with pytest.raises(ScorerConfigError, match="safetensors"):
        load_state_dict(tmp_path / "weights.pkl")


def test_scorer_by_import_path(monkeypatch):
    import types
    import sys

    mod = types.ModuleType("fake_scorers")
    mod.make = lambda options: CallableScorer(colour_agreement, f"plug-in {options['model']}")
    monkeypatch.setitem(sys.modules, "fake_scorers", mod)
    clip.clear_cache()
    check = CaptionMismatch({"scorer": "fake_scorers:make"})
    assert check.scorer.name == "plug-in ViT-B-32"
    assert clip.scorer_from_options(check.options) is check.scorer  # built once, shared
    clip.clear_cache()


def test_open_clip_image_embeddings(random_clip):
    recs = corpus(3)
    images = [r[1] for r in recs] + [b"broken"]
    emb = random_clip.embed_images(images)  # what poison.caption_trigger clusters with embedding: clip
    assert emb.shape == (4, random_clip.model.visual.output_dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb[:3], axis=1), 1.0, atol=1e-4)
    assert np.isnan(emb[3]).all()
    np.testing.assert_allclose(random_clip.embed_images(images[1:2])[0], emb[1], atol=1e-4)  # batch-independent
