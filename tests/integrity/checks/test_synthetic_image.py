"""synthetic.image: every provenance mark is read, benign metadata is not a mark."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import make_images
from integrity.checks.base import ShardInfo
from integrity.checks.synthetic_image import SyntheticImage, c2pa_marks, png_text_marks, xmp_marks




def texture(seed=0) -> Image.Image:
    return make_images.render(np.random.default_rng(seed), "texture")[0]


def scan(records: dict[str, bytes], options=None) -> dict[str, tuple[float, dict]]:
    check = SyntheticImage(options, ShardInfo("s.tar", "/nowhere/s.tar"))
    batch = pa.record_batch({"record_id": list(records), "row": list(range(len(records))),
                             "image": pa.array(list(records.values()), pa.large_binary()),
                             "caption": pa.array(["a caption"] * len(records), pa.large_string())})
    out = check.process_batch(batch).findings
    if out is None:
        return {}
    return {r["record_id"]: (r["score"], json.loads(r["detail"])) for r in out.iter_rows(named=True)}


@pytest.fixture(scope="module")
def marked() -> dict[str, bytes]:
    mi = make_images
    img = texture(1)
    out = {}
    out["xmp"] = mi.encode(img, "jpg", 90, xmp=mi.xmp_packet(mi.TRAINED, "some app"))
    for sub in ("png_parameters", "png_comfy", "exif_software"):
        fmt, meta, im2 = mi._synthetic(np.random.default_rng(2), sub, img, "a prompt")
        out[sub] = mi.encode(im2, fmt, 90, **meta)
    pytest.importorskip("imwatermark")
    out["watermark_sd1"] = mi.encode(mi.watermark(img, "StableDiffusionV1"), "png")
    out["watermark_sdxl"] = mi.encode(mi.watermark(texture(5), "SDXL"), "png")
    return out


@pytest.fixture(scope="module")
def decoys() -> dict[str, bytes]:
    mi = make_images
    img = texture(3)
    out = {"plain": mi.encode(img, "jpg", 90), "plain_png": mi.encode(img, "png")}
    for sub in ("exif_editor", "png_comment", "xmp_camera"):
        fmt, meta = mi._decoy(np.random.default_rng(4), sub)
        out[sub] = mi.encode(img, fmt, 90, **meta)
    return out


def test_each_mark_is_read(marked):
    got = scan(marked)
    assert set(got) == set(marked)
    assert got["xmp"][1]["marks"][0]["digital_source_type"] == "trainedAlgorithmicMedia" and got["xmp"][0] == 0.95
    assert got["png_parameters"][1]["generator"] == "AUTOMATIC1111-compatible"
    assert got["png_comfy"][1]["generator"] == "ComfyUI"
    assert got["exif_software"][1]["marks"][0]["mark"] == "exif"
    wm = got["watermark_sd1"][1]["marks"][0]
    assert wm["payload"] == "StableDiffusionV1" and 0.7 < wm["bit_accuracy"] and wm["log10_p"] < -6  # not exact equality
    assert got["watermark_sdxl"][1]["marks"][0]["payload"] == "SDXL"


def test_benign_metadata_is_not_a_mark(decoys):
    assert scan(decoys) == {}


def test_c2pa_manifest_digital_source_type():
    pytest.importorskip("c2pa")
    mi = make_images
    signer = mi.C2paSigner()
    jpeg = mi.encode(texture(7), "jpg", 90)
    gen = signer.sign(jpeg, mi.TRAINED, "example-diffusion-model")
    cam = signer.sign(jpeg, mi.CAPTURE, "example-camera-app")
    got = scan({"gen": gen, "cam": cam})
    assert set(got) == {"gen"}
    mark = got["gen"][1]["marks"][0]
    assert mark["mark"] == "c2pa" and mark["digital_source_type"] == "trainedAlgorithmicMedia"
    assert mark["validation_state"] in ("Valid", "Trusted") and got["gen"][0] == 1.0
    assert "example-diffusion-model" in mark["claim_generator"]
    # a damaged manifest falls back to the bytes and says so
    broken = bytearray(gen)
    pos = gen.index(b"c2pa.signature")
    broken[pos + 40: pos + 400] = b"\x00" * 360
    marks = c2pa_marks(bytes(broken), "JPEG")
    assert marks and marks[0]["digital_source_type"] == "trainedAlgorithmicMedia"
    assert marks[0]["validation_state"] != "Valid"


def test_watermark_threshold_is_a_binomial_test(marked):
    strict = scan({"w": marked["watermark_sd1"]}, {"watermark_log10_p": -60.0})
    assert strict == {}  # 136 bits cannot reach p < 1e-60


def test_thumbnails_are_bounded_per_shard(marked):
    got = scan(marked, {"thumbnails_per_shard": 2})
    thumbs = [d for _, d in got.values() if "thumbnail" in d]
    assert len(thumbs) == 2 and all(t["thumbnail"].startswith("data:image/jpeg;base64,") for t in thumbs)


def test_mark_parsers_directly():
    assert png_text_marks({"parameters": "a cat"}) == []  # no generation settings, no mark
    assert png_text_marks({"Software": "NovelAI"})[0]["generator"] == "NovelAI"
    assert xmp_marks('Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/'
                     'compositeWithTrainedAlgorithmicMedia"')[0]["score"] == 0.8
    assert xmp_marks("DigitalSourceType=http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture") == []
