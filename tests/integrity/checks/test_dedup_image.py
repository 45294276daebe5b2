"""dedup.image: exact and near duplicates across shards and nights, caption conflicts."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

from integrity.analysis.images import u64_to_bytes
from integrity.checks.base import CorpusContext, ShardInfo
from integrity.checks.dedup_image import ImageDedup, near_pairs


def picture(seed: int, size=(256, 256)) -> Image.Image:
    r = np.random.default_rng(seed)
    img = Image.new("RGB", size, tuple(int(v) for v in r.integers(0, 255, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(5):
        x, y = (int(v) for v in r.integers(0, size[0] - 80, 2))
        w, h = (int(v) for v in r.integers(25, 90, 2))
        shape = d.ellipse if r.random() < 0.5 else d.rectangle
        shape([x, y, x + w, y + h], fill=tuple(int(v) for v in r.integers(0, 255, 3)))
    return img


def enc(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def run(check_cls, shards: dict[str, list[tuple[str, bytes, str | None]]], options=None, state: Path | None = None,
        sha: dict[str, str] | None = None) -> tuple[pl.DataFrame | None, pl.LazyFrame, CorpusContext]:
    """Per-shard passes then the corpus pass, as the engine runs them."""
    frames = []
    for k, (name, records) in enumerate(shards.items()):
        check = check_cls(options, ShardInfo(shard=name, uri=f"/nowhere/{name}"))
        batch = pa.record_batch({"record_id": [r[0] for r in records], "row": list(range(len(records))),
                                 "image": pa.array([r[1] for r in records], pa.large_binary()),
                                 "caption": pa.array([r[2] for r in records], pa.large_string())})
        outs = [check.process_batch(batch.slice(0, 7)), check.process_batch(batch.slice(7)), check.finish_shard()]
        for out in outs:
            if out.features is not None and out.features.height:
                frames.append(out.features.with_columns(shard=pl.lit(name), shard_index=pl.lit(k, pl.Int32)))
    feats = pl.concat(frames, how="vertical_relaxed").lazy()
    ctx = CorpusContext(run_dir=state or Path("."), state_dir=state or Path("/nonexistent-state"),
                        shards=list(shards), shard_findings=pl.LazyFrame(), shard_sha256=sha or {}, scan_id="t")
    return check_cls(options).corpus_pass(feats, ctx), feats, ctx


def details(found: pl.DataFrame) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in found.iter_rows(named=True):
        out.setdefault(r["record_id"], []).append({**json.loads(r["detail"]), "_shard": r["shard"],
                                                   "_score": r["score"]})
    return out


@pytest.fixture(scope="module")
def corpus():
    base = {i: picture(i) for i in range(12)}
    meta = PngInfo()
    meta.add_text("Comment", "re-saved")
    a = [(f"a{i}", enc(base[i]), f"picture number {i} with shapes") for i in range(12)]
    b = [(f"b{i}", enc(picture(100 + i)), f"another picture {i}") for i in range(12)]
    b[0] = ("b0", enc(base[0], pnginfo=meta), "picture number 0 with shapes")  # exact: same pixels, other bytes
    b[1] = ("b1", enc(base[1], "JPEG", quality=70), "picture number 1 with shapes")  # re-encoded
    b[2] = ("b2", enc(base[2].resize((190, 190), Image.Resampling.LANCZOS), "JPEG", quality=90),
            "picture number 2 with shapes")  # resized
    w, h = base[3].size
    b[3] = ("b3", enc(base[3].crop((10, 10, w - 10, h - 10)), "JPEG", quality=90), "picture number 3 with shapes")
    b[4] = ("b4", enc(base[4]), "a completely different story about boats")  # same image, conflicting caption
    return {"s0.tar": a, "s1.tar": b}


def test_exact_and_near_duplicates_across_shards(corpus):
    found, _, _ = run(ImageDedup, corpus, {"thumbnails": 0})
    got = details(found)
    assert set(got) == {"b0", "b1", "b2", "b3", "b4"}
    dup = {k: next(d for d in v if d["kind"] == "duplicate") for k, v in got.items()}
    assert dup["b0"]["match"] == "exact" and dup["b0"]["_score"] == 1.0
    assert dup["b4"]["match"] == "exact"
    for k in ("b1", "b2", "b3"):
        assert dup[k]["match"] == "near" and dup[k]["_score"] < 1.0
    for k, d in dup.items():
        assert d["representative"] == "a" + k[1:] and d["representative_shard"] == "s0.tar"
        assert d["cluster"].startswith("img-") and d["group_size"] == 2
    assert len({d["cluster"] for d in dup.values()}) == 5  # one cluster per pair


def test_conflicting_caption_is_its_own_finding(corpus):
    found, _, _ = run(ImageDedup, corpus, {"thumbnails": 0})
    conflicts = [d for v in details(found).values() for d in v if d["kind"] == "caption_conflict"]
    assert len(conflicts) == 1
    c = conflicts[0]
    assert c["representative"] == "a4" and "cluster" in c and c["caption_similarity"] < 0.35
    assert c["representative_caption"] == "picture number 4 with shapes"
    # the same pair with a similar caption is no conflict
    same = {**corpus, "s1.tar": [*corpus["s1.tar"][:4], ("b4", corpus["s1.tar"][4][1], "picture number 4 with shapes!")]}
    found, _, _ = run(ImageDedup, same, {"thumbnails": 0})
    assert not [d for v in details(found).values() for d in v if d["kind"] == "caption_conflict"]


def test_unrelated_images_are_not_duplicates():
    shards = {"s.tar": [(f"x{i}", enc(picture(500 + i)), f"image {i}") for i in range(30)]}
    found, _, _ = run(ImageDedup, shards)
    assert found is None


def test_flat_and_multihash_indexes_agree():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2**63, 3000, dtype=np.uint64)
    near = codes[:300] ^ (np.uint64(1) << rng.integers(0, 64, 300).astype(np.uint64))  # 1 bit away
    far = codes[300:600] ^ np.uint64(0x0F0F_0000_0000_00FF)  # 16 bits away
    allc = u64_to_bytes(np.concatenate([codes, near, far]))
    flat = set(zip(*near_pairs(allc, 10, "flat")[:2]))
    multi = set(zip(*near_pairs(allc, 10, "multihash")[:2]))
    assert flat == multi
    assert {(i, 3000 + i) for i in range(300)} <= flat
    assert not any(b >= 3300 and a in range(300, 600) and b - 3000 == a for a, b in flat)


def test_history_of_earlier_nights(tmp_path: Path, corpus):
    night1 = {"s0.tar": corpus["s0.tar"]}
    _, feats, ctx = run(ImageDedup, night1, {"thumbnails": 0}, state=tmp_path, sha={"s0.tar": "a" * 64})
    ImageDedup({}).after_verdicts(feats, ["s0.tar"], ctx)
    night2 = {"s1.tar": corpus["s1.tar"]}
    found, _, _ = run(ImageDedup, night2, {"thumbnails": 0}, state=tmp_path, sha={"s1.tar": "b" * 64})
    got = {k: next(d for d in v if d["kind"] == "duplicate") for k, v in details(found).items()}
    assert {"b0", "b1", "b4"} <= set(got)
    assert all(d["history"] and d["representative_shard"] == "s0.tar" for d in got.values())
    assert got["b0"]["match"] == "exact" and got["b0"]["representative"] == "a0"
    # scanning night 1 again: its own content in the history is not a duplicate of itself
    found, _, _ = run(ImageDedup, night1, {"thumbnails": 0}, state=tmp_path, sha={"s0.tar": "a" * 64})
    assert found is None


def test_thumbnails_of_member_and_representative(tmp_path: Path, corpus):
    import tarfile

    from integrity.engine.evidence import attach_thumbnails, thumbnail_count

    for name, records in corpus.items():
        with tarfile.open(tmp_path / name, "w") as tf:
            for rid, data, cap in records:
                for ext, payload in (("png", data), ("txt", cap.encode())):
                    info = tarfile.TarInfo(f"{rid}.{ext}")
                    info.size = len(payload)
                    tf.addfile(info, io.BytesIO(payload))
    check = ImageDedup({"thumbnails": 3})
    frames = []
    for k, name in enumerate(corpus):
        from connectors import ShardReader, list_shards
        from connectors.schema import ColumnMapping

        c = ImageDedup({}, ShardInfo(shard=name, uri=str(tmp_path / name)))
        for batch in ShardReader(list_shards(str(tmp_path / name))[0], ColumnMapping()):
            frames.append(c.process_batch(batch).features.with_columns(shard=pl.lit(name),
                                                                      shard_index=pl.lit(k, pl.Int32)))
    ctx = CorpusContext(run_dir=tmp_path, state_dir=tmp_path / "state", shards=list(corpus),
                        shard_findings=pl.LazyFrame())
    found = check.corpus_pass(pl.concat(frames).lazy(), ctx)
    # the check says where each image is; the engine's evidence stage fetches the thumbnails
    assert found["uri"].null_count() == 0 and found["representative_uri"].null_count() == 0
    found = attach_thumbnails({"dedup.image": (thumbnail_count(check), found)})["dedup.image"]
    with_thumbs = [json.loads(d) for d in found["detail"] if "thumbnail" in d]
    assert len(with_thumbs) == 3
    assert all(d["thumbnail"].startswith("data:image/jpeg;base64,") for d in with_thumbs)
    assert all(d["representative_thumbnail"].startswith("data:image/jpeg;base64,") for d in with_thumbs)
    assert all(d["caption"] for d in with_thumbs)


def test_features_are_compact(corpus):
    _, feats, _ = run(ImageDedup, corpus)
    df = feats.collect()
    assert set(df.columns) >= {"record_id", "row", "pixel_hash", "phash", "sig", "grey", "caption"}
    assert "image" not in df.columns and df["sig"].bin.size().max() == 192
