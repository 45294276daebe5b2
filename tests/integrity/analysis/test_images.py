"""Safe decoding, pixel and perceptual hashes, window hashes, watermark decoding, image.decode."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

from connectors.images import (DecodeLimits, decode_image, has_c2pa, rejected_marker, thumbnail_data_uri)
from integrity.analysis import images as im
from integrity.analysis.images import analyze_batch, hamming, phash, pixel_hash, watermark_matches, window_hashes
from integrity.checks.image_decode import ImageDecodeCheck


def picture(seed: int = 0, size=(256, 256)) -> Image.Image:
    r = np.random.default_rng(seed)
    img = Image.new("RGB", size, tuple(int(v) for v in r.integers(0, 255, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = (int(v) for v in r.integers(0, max(1, min(size) - 60), 2))
        d.ellipse([x, y, x + int(r.integers(20, 90)), y + int(r.integers(20, 90))],
                  fill=tuple(int(v) for v in r.integers(0, 255, 3)))
    return img


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_declaring(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))


# --------------------------------------------------------------------------- decoding


def test_decode_ok_and_rgb():
    dec = decode_image(encode(picture().convert("RGBA")))
    assert dec.ok and dec.image.mode == "RGB" and dec.size == (256, 256) and dec.format == "PNG"


def test_decompression_bombs_are_reported_not_decoded():
    before = Image.MAX_IMAGE_PIXELS
    huge = decode_image(png_declaring(30000, 30000))  # over twice Pillow's own limit
    assert huge.status == "bomb" and "bomb" in huge.error
    mid = decode_image(png_declaring(8000, 8000), DecodeLimits(max_pixels=10_000_000))  # our per-call limit
    assert mid.status == "bomb" and "64,000,000" in mid.error and mid.image is None
    # the same bytes under a larger per-call limit are merely corrupt (the IDAT is short): the limit is per call
    assert decode_image(png_declaring(8000, 8000), DecodeLimits(max_pixels=100_000_000)).status == "corrupt"
    assert Image.MAX_IMAGE_PIXELS == before  # the process-wide setting is untouched


def test_png_text_chunk_bomb():
    info = PngInfo()
    info.add_text("Comment", "A" * (20 << 20), zip=True)  # 20 MB of text, a few KB compressed
    data = encode(picture(size=(64, 64)), pnginfo=info)
    assert len(data) < 200_000
    dec = decode_image(data)
    assert dec.status == "bomb"


def test_corrupt_truncated_unsupported_missing_rejected():
    jpeg = encode(picture(), "JPEG", quality=90)
    assert decode_image(jpeg[: len(jpeg) // 2]).status == "corrupt"
    assert decode_image(b"GIF89a" + b"\x00" * 5).status == "corrupt"
    assert decode_image(b"%PDF-1.7 not an image").status == "unsupported"
    ico = encode(picture(size=(64, 64)), "ICO")  # a real image, but not an allowed format
    assert decode_image(ico).status == "unsupported"
    assert decode_image(None).status == "missing"
    assert decode_image(b"x" * 100, DecodeLimits(max_bytes=10)).status == "too_large"
    dec = decode_image(rejected_marker("tar member '../x' rejected: path escapes"))
    assert dec.status == "rejected" and "escapes" in dec.error
    assert decode_image(rejected_marker("no extension", unsafe=False)).status == "unusable"


def test_thumbnail_is_small_jpeg_data_uri():
    uri = thumbnail_data_uri(picture(size=(640, 480)), 96, box=(10, 10, 50, 50))
    assert uri.startswith("data:image/jpeg;base64,") and len(uri) < 12_000
    import base64

    thumb = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert max(thumb.size) == 96


# --------------------------------------------------------------------------- hashes


def test_pixel_hash_sees_pixels_not_containers():
    img = picture(1)
    a = np.asarray(decode_image(encode(img)).image)
    info = PngInfo()
    info.add_text("Comment", "other metadata")
    b = np.asarray(decode_image(encode(img, pnginfo=info)).image)
    c = np.asarray(decode_image(encode(img, "WEBP", lossless=True)).image)
    assert pixel_hash(a) == pixel_hash(b) == pixel_hash(c)
    d = a.copy()
    d[5, 5, 0] ^= 1
    assert pixel_hash(d) != pixel_hash(a)


def test_phash_robust_and_discriminative():
    base = picture(2)
    reenc = decode_image(encode(base, "JPEG", quality=60)).image
    small = base.resize((180, 180), Image.Resampling.LANCZOS)
    h = phash(base)
    assert hamming(h, phash(reenc)) <= 6
    assert hamming(h, phash(small)) <= 6
    others = [phash(picture(s)) for s in range(10, 20)]
    assert min(hamming(h, o) for o in others) > 12
    greys = np.stack([im.phash_grey(p.convert("L")) for p in (base, small)])
    assert list(im.phash_many(greys)) == [phash(base), phash(small)]


def test_window_hashes_follow_a_patch_anywhere():
    r = np.random.default_rng(5)
    patch = Image.fromarray(np.kron(r.integers(0, 2, (8, 8, 1)) * 255, np.ones((4, 4, 3))).astype(np.uint8))
    sets = []
    for k, (x, y) in enumerate([(10, 20), (151, 77), (33, 190)]):
        img = picture(30 + k)
        img.paste(patch, (x, y))
        jpeg = decode_image(encode(img, "JPEG", quality=90)).image
        h, xs, ys = window_hashes(np.asarray(jpeg))
        inside = {int(a) for a, b, c in zip(h, xs, ys) if x <= b <= x + 32 - 13 and y <= c <= y + 32 - 13}
        sets.append(inside)
    assert len(sets[0] & sets[1] & sets[2]) >= 3  # the same windows of the patch, at three positions
    flat, _, _ = window_hashes(np.full((128, 128, 3), 90, np.uint8))  # noqa: F841
    assert len(flat) == 0  # flat areas are not hashed


def test_watermark_decoded_by_bit_accuracy():
    cv2 = pytest.importorskip("cv2")
    imwatermark = pytest.importorskip("imwatermark")
    r = np.random.default_rng(7)
    arr = np.clip(r.normal(128, 40, (256, 320, 3)), 0, 255).astype(np.uint8)
    enc = imwatermark.WatermarkEncoder()
    enc.set_watermark("bytes", b"StableDiffusionV1")
    bgr = enc.encode(cv2.cvtColor(arr, cv2.COLOR_RGB2BGR), "dwtDct")
    marked = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    ref = imwatermark.WatermarkDecoder("bytes", 136).decode(bgr, "dwtDct")
    got = watermark_matches(marked)
    assert got["payload"] == "StableDiffusionV1" and got["log10_p"] < -20
    assert got["bit_accuracy"] == pytest.approx(np.mean(np.unpackbits(np.frombuffer(ref, np.uint8))
                                                         == im.KNOWN_WATERMARKS["StableDiffusionV1"]), abs=0.05)
    # a few flipped bits still pass the binomial test; exact equality is not required
    noisy = np.clip(marked.astype(int) + r.integers(-2, 3, marked.shape), 0, 255).astype(np.uint8)
    assert watermark_matches(noisy)["log10_p"] < -6
    assert watermark_matches(arr)["log10_p"] > -6  # no mark: nothing significant
    assert watermark_matches(arr[:100, :100]) is None  # too small for the encoder


# --------------------------------------------------------------------------- batch analysis and image.decode


def test_analysis_is_memoized_per_batch(monkeypatch):
    calls = []
    real = im.analyze_images
    monkeypatch.setattr(im, "analyze_images", lambda *a, **k: calls.append(1) or real(*a, **k))
    batch = pa.record_batch({"record_id": ["a", "b"], "row": [0, 1],
                             "image": pa.array([encode(picture(1)), None], pa.large_binary())})
    first = analyze_batch(batch)
    assert analyze_batch(batch) is first and len(calls) == 1
    other = pa.record_batch({"record_id": ["c"], "row": [0], "image": pa.array([encode(picture(2))], pa.large_binary())})
    analyze_batch(other)
    assert len(calls) == 2
    assert first.status == ["ok", "missing"] and first.phash[1] == 0


def test_image_decode_check_reports_each_problem():
    jpeg = encode(picture(), "JPEG")
    images = [jpeg, jpeg[:300], png_declaring(30000, 30000), rejected_marker("tar member 'l' rejected: symbolic link"),
              b"plain text", None]
    batch = pa.record_batch({"record_id": [f"r{i}" for i in range(6)], "row": list(range(6)),
                             "image": pa.array(images, pa.large_binary())})
    out = ImageDecodeCheck({}).process_batch(batch).findings
    got = {r["record_id"]: (r["score"], __import__("json").loads(r["detail"])["problem"]) for r in out.iter_rows(named=True)}
    assert got == {"r1": (0.5, "corrupt"), "r2": (1.0, "bomb"), "r3": (1.0, "rejected"), "r4": (0.5, "unsupported")}
    with_missing = ImageDecodeCheck({"report_missing": True}).process_batch(batch).findings
    assert "r5" in with_missing["record_id"].to_list()
    assert has_c2pa(b"..jumb..c2pa..") and not has_c2pa(jpeg)


def test_border_hashes_match_one_small_patch_at_any_corner_after_jpeg():
    """The same 8 px mark at two different corners/midpoints, 1 and 3 px in, of two different JPEG
    pictures shares border hashes (and only there); a flat picture has none; a flat background does
    not stand out."""
    from integrity.analysis.images import border_hashes

    def picture(seed: int, side: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:side, 0:side] / side
        base = (rng.uniform(60, 180) + 60 * np.sin(6 * xx + rng.uniform(0, 6)) * np.cos(4 * yy))[..., None]
        return np.clip(base + rng.normal(0, 4, (side, side, 3)), 0, 255).astype(np.uint8)

    mark = np.zeros((8, 8, 3), np.uint8)
    mark[::2, ::2] = mark[1::2, 1::2] = (255, 240, 0)

    def jpeg(arr: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=80)
        return np.asarray(Image.open(buf).convert("RGB"))

    a, b = picture(1, 200), picture(2, 333)
    a[1:9, 1:9] = mark  # top-left corner, 1 px in
    b[333 - 11:333 - 3, (333 - 8) // 2:(333 - 8) // 2 + 8] = mark  # bottom border midpoint, 3 px in
    ha, xa, ya, sa = border_hashes(jpeg(a))
    hb, xb, yb, sb = border_hashes(jpeg(b))
    shared, ia, ib = np.intersect1d(ha, hb, return_indices=True)
    assert len(shared) >= 3
    # the shared windows are on the mark, in each picture (a coarse hash may also match one window beside it)
    assert ((xa[ia] <= 9) & (ya[ia] <= 9)).mean() >= 0.8
    assert ((yb[ib] >= 333 - 14) & (np.abs(xb[ib].astype(int) + sb[ib] / 2 - 333 / 2) <= 8)).mean() >= 0.8
    assert len(border_hashes(np.full((120, 90, 3), 77, np.uint8))[0]) == 0
    assert len(border_hashes(np.zeros((10, 10, 3), np.uint8))[0]) == 0  # smaller than a corner square
