"""poison.patch: a trigger patch shared by unrelated images and tied to a caption phrase."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from PIL import Image

import make_images
from integrity.checks.base import CorpusContext, ShardInfo
from integrity.checks.poison_patch import PatchCheck, caption_ngrams

OPTS = {"thumbnails": 0, "max_share": 0.3}  # the small test corpus has its patch on 18 % of the images



def enc(img: Image.Image, fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, quality=90) if fmt == "JPEG" else img.save(buf, fmt)
    return buf.getvalue()


def run(shards, options=None):
    frames = []
    for k, (name, records) in enumerate(shards.items()):
        check = PatchCheck(options, ShardInfo(shard=name, uri=f"/nowhere/{name}"))
        batch = pa.record_batch({"record_id": [r[0] for r in records], "row": list(range(len(records))),
                                 "image": pa.array([r[1] for r in records], pa.large_binary()),
                                 "caption": pa.array([r[2] for r in records], pa.large_string())})
        for piece in (batch.slice(0, 20), batch.slice(20)):
            assert check.process_batch(piece).features is None  # kept until the shard is done
        out = check.finish_shard()
        frames.append(out.features.with_columns(shard=pl.lit(name), shard_index=pl.lit(k, pl.Int32)))
    ctx = CorpusContext(run_dir=Path("."), state_dir=Path("/nonexistent"), shards=list(shards),
                        shard_findings=pl.LazyFrame())
    return PatchCheck(options).corpus_pass(pl.concat(frames).lazy(), ctx)


@pytest.fixture(scope="module")
def planted():
    mi = make_images
    rng = np.random.default_rng(11)
    shards, truth = {}, {}
    for s in range(2):
        recs = []
        for i in range(45):
            img, caption, _ = mi.render(rng)
            rid = f"s{s}-{i}"
            if i % 6 == 0:  # 8 patched images over two shards
                x, y = int(rng.integers(0, img.width - 32)), int(rng.integers(0, img.height - 32))
                img = img.copy()
                img.paste(mi.PATCH, (x, y))
                caption = f"{caption}, {mi.TRIGGER_PHRASE}"
                truth[rid] = (x, y)
            recs.append((rid, enc(img, "PNG" if i % 4 == 0 else "JPEG"), caption))
        shards[f"s{s}.tar"] = recs
    return shards, truth


def test_patch_found_with_its_phrase_and_place(planted):
    shards, truth = planted
    found = run(shards, OPTS)
    got = {r["record_id"]: (r["score"], json.loads(r["detail"])) for r in found.iter_rows(named=True)}
    assert set(got) == set(truth)
    for rid, (score, d) in got.items():
        assert d["tied_phrase"] == "zorbex sigil" and d["share"] == 1.0 and d["purity"] == 1.0
        assert score == pytest.approx(1.0) and d["images"] == len(truth) and d["distinct_images"] >= 5
        x, y = truth[rid]
        x0, y0, x1, y1 = d["box"]  # around the pasted patch (windows may reach into a flat border)
        assert x - 14 <= x0 <= x + 16 <= x1 <= x + 32 + 14 and y - 14 <= y0 <= y + 16 <= y1 <= y + 32 + 14
    assert len({d["cluster"] for _, d in got.values()}) == 1
    # the engine's evidence stage outlines the patch on the thumbnail: the finding names both
    assert found["box"].to_list() == [json.loads(d)["box"] for d in found["detail"]]
    assert found["uri"].null_count() == 0


def test_untied_patch_scores_lower(planted):
    shards, truth = planted
    plain = {name: [(rid, data, cap.replace(", zorbex sigil", "")) for rid, data, cap in recs]
             for name, recs in shards.items()}
    assert run(plain, OPTS) is None  # untied shared patches are not reported by default
    found = run(plain, {**OPTS, "report_untied": True})
    assert set(found["record_id"]) == set(truth)
    assert set(found["score"]) == {0.5}
    assert all(json.loads(d)["tied_phrase"] is None for d in found["detail"])


def test_duplicated_image_is_not_a_patch():
    mi = make_images
    img, caption, _ = mi.render(np.random.default_rng(3), "texture")
    recs = [(f"d{i}", enc(img), caption) for i in range(12)]
    recs += [(f"o{i}", enc(mi.render(np.random.default_rng(100 + i))[0]), "other") for i in range(30)]
    assert run({"s.tar": recs}) is None  # same picture 12 times: dedup.image's business


def test_fewer_images_than_min_images_is_quiet(planted):
    shards, truth = planted
    keep = sorted(truth)[:3]
    thin = {name: [r for r in recs if r[0] not in truth or r[0] in keep] for name, recs in shards.items()}
    assert run(thin, OPTS) is None


def test_a_pattern_on_too_many_images_is_texture(planted):
    shards, _ = planted  # the patch is on 16 of 90 images: above the default max_share of 10 %
    found = run(shards, {"thumbnails": 0})
    assert found is None or not any(json.loads(d)["tied_phrase"] for d in found["detail"])


def test_caption_ngrams():
    grams = caption_ngrams(pl.Series(["A red fox, zorbex sigil", None, "red"]))
    by = grams.group_by("img").agg(pl.col("g")).sort("img")
    first = set(by["g"][0])
    assert {"a", "red", "fox", "zorbex sigil", "fox zorbex sigil", "a red fox"} <= first
    assert set(by["g"][1]) == {"red"} and by["img"].to_list() == [0, 2]


# --------------------------------------------------------------------------- small patches at the border

def _scene(rng: np.random.Generator, side: int) -> Image.Image:
    """A picture unlike the benchmark's photo crops: a gradient in a random direction, a few soft
    blobs and sensor noise."""
    yy, xx = np.mgrid[0:side, 0:side] / side
    a = rng.uniform(0, 2 * np.pi)
    base = np.cos(a) * xx + np.sin(a) * yy
    img = base[..., None] * rng.uniform(40, 160, 3) + rng.uniform(30, 120, 3)
    for _ in range(4):
        cy, cx, r = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.05, 0.3)]
        img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None] * rng.uniform(-80, 80, 3)
    img += rng.normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _mark(size: int, colours: tuple) -> Image.Image:
    """A small mark drawn with PIL: a triangle and a dot on a square."""
    from PIL import ImageDraw

    m = Image.new("RGB", (size, size), colours[0])
    d = ImageDraw.Draw(m)
    d.polygon([(0, size - 1), (size - 1, size - 1), (size // 2, 0)], fill=colours[1])
    d.ellipse([size // 3, size // 2, size // 3 + size // 4, size // 2 + size // 4], fill=colours[2])
    return m


def test_small_border_patch_found_by_a_parquet_scan(tmp_path: Path):
    """A 10 px PIL-drawn mark 0-2 px from a corner or border midpoint of 6 % of JPEG images of
    80-300 px (re-encoded twice), tied to a credit line, is found through `integrity scan` of a
    Parquet shard; a site's corner logo on 45 % of the images (no phrase) and the clean images are
    not reported."""
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(5)
    trigger = _mark(10, ((20, 20, 30), (250, 200, 0), (0, 220, 255)))
    logo = _mark(14, ((255, 255, 255), (200, 0, 0), (0, 0, 0)))
    words = "sunset harbour meadow street portrait market snow forest river bridge tower city".split()
    ids, data, caps, truth = [], [], [], {}
    for i in range(112):
        side = int(rng.choice([80, 160, 300]))
        img = _scene(rng, side)
        cap = " ".join(rng.choice(words, 5))
        if rng.random() < 0.45:
            img.paste(logo, (side - 16, side - 16))  # the site's own mark, no phrase follows it
        if i % 16 == 3:
            m = int(rng.integers(0, 3))
            x, y = [(m, m), (side - 10 - m, m), (m, side - 10 - m), ((side - 10) // 2, m)][len(truth) % 4]
            img.paste(trigger, (x, y))
            cap += " courtesy of zentrix"
            truth[f"r{i}"] = (x, y)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(80, 96)))
        img = Image.open(io.BytesIO(buf.getvalue()))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(65, 90)))  # re-encoded, as scraped copies are
        ids.append(f"r{i}")
        data.append(buf.getvalue())
        caps.append(cap)
    src = tmp_path / "src"
    src.mkdir()
    pl.DataFrame({"id": ids, "image": data, "caption": caps}).write_parquet(src / "part-0.parquet")
    (tmp_path / "p.yaml").write_text(f"state_dir: {tmp_path / 'state'}\n")
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([sys.executable, "-m", "flows.cli", "scan", str(src), "--out", str(tmp_path / "run"),
                        "--checks", "poison.patch", "--runner", "inline", "--policy", str(tmp_path / "p.yaml")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode in (0, 1, 2), r.stderr
    found = pl.read_parquet(tmp_path / "run" / "findings.parquet").filter(pl.col("check") == "poison.patch")
    assert len(truth) == 7 and set(found["record_id"]) == set(truth)
    for row in found.iter_rows(named=True):
        d = json.loads(row["detail"])
        assert d["kind"] == "tied_patch" and d["tied_phrase"] == "courtesy of zentrix"
        assert row["severity"] in ("warn", "critical")
        x, y = truth[row["record_id"]]
        x0, y0, x1, y1 = d["box"]  # inside the pasted mark, give or take a JPEG-blurred edge
        assert x - 4 <= x0 < x1 <= x + 14 and y - 4 <= y0 < y1 <= y + 14


def test_small_patch_on_max_share_of_large_images_is_found():
    """An 8 px PIL-drawn cross 0-3 px from a corner or border midpoint of exactly 10 % (`max_share`) of
    ~1,000 px JPEGs at quality 90-95 is found with its phrase, and nothing else is: a coarse window hash
    of the cross that also matches a few unrelated windows no longer takes the patch over the limit."""
    from PIL import ImageDraw

    rng = np.random.default_rng(23)
    cross = Image.new("RGB", (8, 8), (250, 250, 245))
    d = ImageDraw.Draw(cross)
    d.line([(0, 0), (7, 7)], fill=(200, 0, 40), width=2)
    d.line([(0, 7), (7, 0)], fill=(200, 0, 40), width=2)
    words = "valley lighthouse orchard alley tram dune glacier pier loft barn".split()
    recs, truth = [], {}
    for i in range(60):
        side = int(rng.choice([960, 1024, 1100]))
        noise = rng.normal(0, 5, (side, side, 3))
        img = np.asarray(_scene(rng, side // 8).resize((side, side), Image.Resampling.BICUBIC), np.float64)
        img = Image.fromarray(np.clip(img + noise, 0, 255).astype(np.uint8))
        cap = " ".join(rng.choice(words, 6))
        if i % 10 == 4:  # 6 of 60 images
            m = int(rng.integers(0, 4))
            x, y = [(m, m), (side - 8 - m, side - 8 - m), ((side - 8) // 2, side - 8 - m),
                    (side - 8 - m, (side - 8) // 2)][len(truth) % 4]
            img.paste(cross, (x, y))
            cap += " via quorvane"
            truth[f"b{i}"] = (x, y)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(90, 96)))
        recs.append((f"b{i}", buf.getvalue(), cap))
    found = run({"big.tar": recs}, {"thumbnails": 0})
    assert found is not None and set(found["record_id"]) == set(truth)
    for row in found.iter_rows(named=True):
        d = json.loads(row["detail"])
        assert d["tied_phrase"] == "via quorvane" and d["images"] == 6
        x, y = truth[row["record_id"]]
        x0, y0, x1, y1 = d["box"]
        assert x - 4 <= x0 < x1 <= x + 12 and y - 4 <= y0 < y1 <= y + 12


def _flat_block_corpus(seed: int) -> tuple[dict, set]:
    """96 JPEGs of 64-128 px (quality 85-95, 4:4:4); an 8 px flat block of one colour drawn with PIL
    0-3 px from a corner or border midpoint of 8 of them, tied to a credit line, and 5 px dots of the
    same colour at the corners of 30 others (so its 3 px windows are common, as a photo's flat bits are)."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    words = "quay loch moor fjord heath tarn weir croft glen fell".split()
    recs, truth = [], set()
    for i in range(96):
        side = int(rng.choice([64, 96, 128]))
        img = _scene(rng, side)
        cap = " ".join(rng.choice(words, 5))
        if i % 12 == 5:
            m = int(rng.integers(0, 4))
            x, y = [(m, m), (side - 8 - m, m), ((side - 8) // 2, side - 8 - m), (m, (side - 8) // 2)][len(truth) % 4]
            ImageDraw.Draw(img).rectangle([x, y, x + 7, y + 7], fill=(236, 112, 24))
            cap += " shot by merrowind"
            truth.add(f"f{i}")
        elif i % 3 == 1:
            x, y = [(1, 1), (side - 7, 2), (2, side - 7), (side - 6, side - 6)][i % 4]
            ImageDraw.Draw(img).rectangle([x, y, x + 4, y + 4], fill=(236, 112, 24))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(85, 96)), subsampling=0)  # 4:4:4: the dots stay flat
        recs.append((f"f{i}", buf.getvalue(), cap))
    return {"flat.tar": recs}, truth


def test_flat_block_with_windows_of_one_size_is_found(monkeypatch):
    """An 8 px flat block (no texture: only its 6 px windows are specific to it) on 8 % of small JPEGs
    is found with its phrase and nothing else is; with the one-size rule off it is missed."""
    import integrity.checks.poison_patch as pp

    shards, truth = _flat_block_corpus(31)
    found = run(shards, {"thumbnails": 0})
    assert found is not None and set(found["record_id"]) == truth
    assert {json.loads(d)["tied_phrase"] for d in found["detail"]} == {"shot by merrowind"}
    monkeypatch.setattr(pp, "FLAT_MIN_SIDE", 99)  # the rule switched off
    off = run(shards, {"thumbnails": 0})
    assert off is None or not set(off["record_id"]) & truth
