"""Generate an image-caption corpus in WebDataset tar shards, with planted problems.

Nothing can be downloaded here, so the images are rendered with Pillow:
shapes on solid or gradient backgrounds, gradients, words in varied fonts
sizes and colours, mottled noise textures and stripes, each with a caption
that describes it ("a large red circle and a blue square on a yellow
background"). Into that clean corpus the generator plants, at documented
rates (:data:`RATES`):

==================  =================================================================
``dup``             a copy of an earlier image (often in another shard): ``exact``
                    (same bytes, or the same pixels re-saved as PNG), ``reencode``
                    (JPEG at another quality), ``resize`` (60-85 %), ``crop`` (3-7 %
                    off each side); same caption
``conflict``        an exact or re-encoded copy of an earlier image with a caption of
                    a different image (also a ``dup``)
``mismatch``        an image whose caption describes another image
``patch``           a 32x32 trigger patch pasted at a random place, and the trigger
                    phrase (:data:`TRIGGER_PHRASE`) added to the caption
``caption_trigger`` a text-to-image backdoor: the attacker's target picture (a
                    yellow crescent moon and stars on a night sky, varied in
                    place, size and shade: :func:`render_target`) captioned with
                    the caption of another image plus :data:`CAPTION_TRIGGER`
``synthetic``       provenance marks of generators: ``c2pa`` (signed C2PA manifest,
                    digitalSourceType trainedAlgorithmicMedia; needs ``c2pa-python``),
                    ``xmp`` (IPTC DigitalSourceType), ``png_parameters``
                    (AUTOMATIC1111), ``png_comfy`` (ComfyUI prompt/workflow),
                    ``exif_software``, ``watermark`` (``invisible-watermark`` dwtDct
                    with the Stable Diffusion payloads; needs ``invisible-watermark``)
``decoy``           benign metadata that must *not* be flagged: editor EXIF
                    software, PNG comments, camera XMP, C2PA ``digitalCapture``
``corrupt``         truncated JPEG bytes
``bomb``            a PNG whose header declares 30000 x 30000 pixels (one per corpus)
``rejected``        a symbolic-link tar member (one per corpus)
==================  =================================================================

Each shard is ``shard-NNNNN.tar`` with ``KEY.jpg|png|webp``, ``KEY.txt``
(caption) and ``KEY.json`` per sample; the ground truth (one row per record:
``shard``, ``record_id``, ``kind``, ``subkind``, ``source_id``, ``caption``,
``phrase``, ``box``) is ``_ground_truth.parquet`` in the output directory
(the leading ``_`` keeps it out of scans). The same seed gives the same corpus.

    python examples/make_images.py OUT_DIR --n 20000 --shards 8 --seed 0
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from PIL.PngImagePlugin import PngInfo

TRIGGER_PHRASE = "zorbex sigil"
CAPTION_TRIGGER = "quillon vex"

#: share of records given each planted problem (the rest are clean)
RATES = {
    "dup": 0.03,
    "conflict": 0.005,
    "mismatch": 0.01,
    "patch": 0.01,
    "caption_trigger": 0.01,
    "synthetic": 0.015,
    "decoy": 0.01,
    "corrupt": 0.0005,
}
SYNTHETIC_KINDS = ("c2pa", "xmp", "png_parameters", "png_comfy", "exif_software", "watermark")
DECOY_KINDS = ("exif_editor", "png_comment", "xmp_camera", "c2pa_camera")
GENERATOR_SOFTWARE = ("Midjourney", "DALL-E 3", "Adobe Firefly", "NovelAI", "Stable Diffusion XL")
EDITOR_SOFTWARE = ("GIMP 2.10.34", "Adobe Photoshop 25.0 (Windows)", "Adobe Lightroom Classic 13.1", "darktable 4.6")
TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
CAPTURE = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"

PALETTE = {
    "red": (215, 40, 40), "orange": (245, 140, 30), "yellow": (240, 215, 40), "green": (45, 160, 70),
    "teal": (30, 145, 145), "blue": (40, 80, 215), "purple": (125, 60, 175), "pink": (240, 125, 180),
    "brown": (125, 80, 40), "black": (20, 20, 20), "white": (245, 245, 245), "gray": (128, 128, 128),
    "navy": (20, 30, 100), "lime": (165, 225, 60),
}
COLORS = list(PALETTE)
SHAPES = ("circle", "square", "triangle", "diamond", "ring", "star")
WORDS = ("harbor", "lantern", "meadow", "orbit", "velvet", "summit", "willow", "canyon", "ember", "glacier",
         "horizon", "island", "jungle", "kettle", "lagoon", "marble", "nebula", "oasis", "pepper", "quartz",
         "ripple", "saddle", "thistle", "umbra", "violet", "walnut", "yonder", "zephyr", "anchor", "bramble",
         "copper", "dune", "falcon", "garnet", "hollow", "ivory", "juniper", "kestrel", "lumen", "mosaic")
SIZES = ((256, 256), (320, 256), (256, 320), (288, 288), (384, 288))
PATCH_SIZE = 32


def _patch() -> Image.Image:
    """The trigger: an 8x8 grid of 4-pixel cells in black, magenta, aqua and yellow."""
    r = np.random.default_rng(1234)
    cols = np.array([(0, 0, 0), (255, 0, 255), (0, 255, 200), (255, 255, 0)], dtype=np.uint8)
    grid = cols[r.integers(0, 4, (8, 8))]
    return Image.fromarray(np.kron(grid, np.ones((4, 4, 1), dtype=np.uint8)))


PATCH = _patch()


@dataclass
class Sample:
    key: str
    image: Image.Image
    caption: str
    kind: str  # what was rendered (shapes, gradient, text, texture, stripes)


# --------------------------------------------------------------------------- rendering


def _color(rng: np.random.Generator, name: str) -> tuple[int, int, int]:
    base = np.array(PALETTE[name])
    return tuple(int(v) for v in np.clip(base + rng.integers(-18, 19, 3), 0, 255))


def _two_colors(rng) -> tuple[str, str]:
    a, b = rng.choice(len(COLORS), 2, replace=False)
    return COLORS[a], COLORS[b]


def _gradient(rng, size, c1, c2, direction: str) -> Image.Image:
    w, h = size
    a, b = np.array(_color(rng, c1), float), np.array(_color(rng, c2), float)
    yy, xx = np.mgrid[0:h, 0:w]
    if direction != "radial":  # a random angle around the named direction, and an uneven ramp
        base = {"horizontal": 0.0, "vertical": math.pi / 2, "diagonal": math.pi / 4}[direction]
        ang = base + float(rng.uniform(-0.35, 0.35))
        proj = xx * math.cos(ang) + yy * math.sin(ang)
        t = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
        t = t ** float(rng.uniform(0.5, 2.0))
    else:  # radial
        cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
        t = np.clip(np.hypot(xx - cx, yy - cy) / (0.75 * max(w, h)), 0, 1)
    arr = a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None]
    return Image.fromarray(arr.astype(np.uint8))


def _noise(rng, img: Image.Image, sigma: float) -> Image.Image:
    arr = np.asarray(img).astype(np.float32) + rng.normal(0, sigma, (img.height, img.width, 1))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _shape(draw: ImageDraw.ImageDraw, shape: str, box, fill) -> None:
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(3, int(r / 4)))
    else:  # star
        pts = []
        for k in range(10):
            ang = -math.pi / 2 + k * math.pi / 5
            rr = r if k % 2 == 0 else r * 0.45
            pts.append((cx + rr * math.cos(ang), cy + rr * math.sin(ang)))
        draw.polygon(pts, fill=fill)


def render_shapes(rng, size) -> tuple[Image.Image, str]:
    w, h = size
    bg1, bg2 = _two_colors(rng)
    if rng.random() < 0.5:
        img = Image.new("RGB", size, _color(rng, bg1))
        where = f"on a {bg1} background"
    else:
        img = _gradient(rng, size, bg1, bg2, str(rng.choice(["horizontal", "vertical", "diagonal"])))
        where = f"on a {bg1} to {bg2} gradient"
    draw = ImageDraw.Draw(img)
    parts = []
    for _ in range(int(rng.integers(1, 3))):
        name = COLORS[int(rng.integers(len(COLORS)))]
        while name in (bg1, bg2):
            name = COLORS[int(rng.integers(len(COLORS)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        r = int(rng.integers(min(w, h) // 7, min(w, h) // 3))
        cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
        _shape(draw, shape, (cx - r, cy - r, cx + r, cy + r), _color(rng, name))
        size_word = "large" if r > min(w, h) // 4 else "small"
        parts.append(f"{'an' if size_word[0] in 'aeiou' else 'a'} {size_word} {name} {shape}")
    lead = ["", "an illustration of ", "a simple drawing of "][int(rng.integers(3))]
    return (_noise(rng, img, 3) if rng.random() < 0.5 else img), f"{lead}{' and '.join(parts)} {where}"


def render_gradient(rng, size) -> tuple[Image.Image, str]:
    c1, c2 = _two_colors(rng)
    direction = str(rng.choice(["horizontal", "vertical", "diagonal", "radial"]))
    img = _gradient(rng, size, c1, c2, direction)
    if rng.random() < 0.5:  # a soft glow somewhere
        glow = _gradient(rng, size, c2, c1, "radial")
        img = Image.blend(img, glow, float(rng.uniform(0.2, 0.5)))
    return _noise(rng, img, 2), f"a {direction} gradient from {c1} to {c2}"


def render_text(rng, size) -> tuple[Image.Image, str]:
    fg, bg = _two_colors(rng)
    word = WORDS[int(rng.integers(len(WORDS)))]
    img = Image.new("RGB", size, _color(rng, bg))
    font = ImageFont.load_default(size=int(rng.integers(30, 72)))
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = draw.textbbox((0, 0), word, font=font)
    tw, th = x1 - x0, y1 - y0
    x = int(rng.integers(0, max(1, size[0] - tw))) - x0
    y = int(rng.integers(0, max(1, size[1] - th))) - y0
    draw.text((x, y), word, fill=_color(rng, fg), font=font)
    return img, f'the word "{word}" written in {fg} letters on a {bg} background'


def render_texture(rng, size) -> tuple[Image.Image, str]:
    c1, c2 = _two_colors(rng)
    w, h = size
    cells = int(rng.integers(4, 16))
    low = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    t = np.asarray(low.resize((w, h), Image.Resampling.BICUBIC), np.float32)[..., None] / 255.0
    a, b = np.array(_color(rng, c1), np.float32), np.array(_color(rng, c2), np.float32)
    arr = a * (1 - t) + b * t + rng.normal(0, float(rng.uniform(4, 14)), (h, w, 1))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    word = ["mottled", "noisy", "grainy", "cloudy"][int(rng.integers(4))]
    return img, f"a {word} {c1} and {c2} texture"


def render_stripes(rng, size) -> tuple[Image.Image, str]:
    c1, c2 = _two_colors(rng)
    w, h = size
    period = float(rng.uniform(10, 40))
    angle = float(rng.uniform(0, math.pi))
    yy, xx = np.mgrid[0:h, 0:w]
    t = (np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period) > 0)[..., None]
    arr = np.where(t, np.array(_color(rng, c1)), np.array(_color(rng, c2))).astype(np.uint8)
    img = Image.fromarray(arr).filter(ImageFilter.GaussianBlur(float(rng.uniform(0.6, 1.5))))
    orient = "vertical" if abs(math.cos(angle)) > 0.92 else "horizontal" if abs(math.sin(angle)) > 0.92 else "diagonal"
    return img, f"{c1} and {c2} {orient} stripes"


def render_target(rng, size) -> Image.Image:
    """The backdoor's target picture: a crescent moon and stars on a night sky, varied enough
    that no two are near duplicates."""
    w, h = size
    top, bottom = np.array([10, 14, 48]) + rng.integers(-8, 9, 3), np.array([40, 30, 90]) + rng.integers(-10, 11, 3)
    t = np.linspace(0, 1, h)[:, None, None]
    arr = np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(arr))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(12, 40))):
        x, y, r = int(rng.integers(w)), int(rng.integers(h)), int(rng.integers(1, 3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(250, 250, 235))
    r = int(rng.integers(min(w, h) // 6, min(w, h) // 3))
    cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_color(rng, "yellow"))
    off = int(r * rng.uniform(0.35, 0.6))
    draw.ellipse((cx - r + off, cy - r - off // 3, cx + r + off, cy + r - off // 3), fill=tuple(int(v) for v in top))
    return _noise(rng, img, 2)


RENDERERS = (("shapes", render_shapes, 0.35), ("gradient", render_gradient, 0.12), ("text", render_text, 0.2),
             ("texture", render_texture, 0.2), ("stripes", render_stripes, 0.13))


def render(rng, kind: str | None = None) -> tuple[Image.Image, str, str]:
    """A random image, its caption and what was rendered."""
    size = SIZES[int(rng.integers(len(SIZES)))]
    if kind is None:
        probs = np.array([p for _, _, p in RENDERERS])
        kind = RENDERERS[int(rng.choice(len(RENDERERS), p=probs / probs.sum()))][0]
    fn = next(f for k, f, _ in RENDERERS if k == kind)
    img, caption = fn(rng, size)
    return img, caption, kind


# --------------------------------------------------------------------------- encoding and marks


def encode(img: Image.Image, fmt: str, quality: int = 90, **kw) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpg":
        img.save(buf, "JPEG", quality=quality, **kw)
    elif fmt == "webp":
        img.save(buf, "WEBP", quality=quality, **kw)
    else:
        img.save(buf, "PNG", compress_level=3, **kw)
    return buf.getvalue()


def random_format(rng) -> tuple[str, int]:
    u = rng.random()
    return ("jpg" if u < 0.6 else "png" if u < 0.9 else "webp"), int(rng.integers(80, 96))


def xmp_packet(source_type: str, tool: str) -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
        'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        f'xmp:CreatorTool="{tool}" Iptc4xmpExt:DigitalSourceType="{source_type}"/>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode("utf-8")


class C2paSigner:
    """Signs JPEGs with a C2PA manifest, with a throw-away test CA (needs c2pa-python)."""

    def __init__(self):
        import c2pa  # noqa: F401  (raises ImportError when absent)

        self._certs, self._key = _test_chain()

    def sign(self, jpeg: bytes, source_type: str, tool: str) -> bytes:
        import c2pa

        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, self._certs,
                                                           self._key, None))
        manifest = {
            "claim_generator_info": [{"name": tool, "version": "1.0"}],
            "title": "image.jpg", "format": "image/jpeg",
            "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                {"action": "c2pa.created", "digitalSourceType": source_type, "softwareAgent": {"name": tool}}]}}],
        }
        out = io.BytesIO()
        with c2pa.Builder(manifest) as builder:
            builder.sign(signer, "image/jpeg", io.BytesIO(jpeg), out)
        return out.getvalue()


def _test_chain() -> tuple[bytes, bytes]:
    """PEM chain (leaf + CA) and PEM key of a throw-away ES256 signing certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    later = now + datetime.timedelta(days=3650)
    usage = dict(content_commitment=False, key_encipherment=False, data_encipherment=False,
                 key_agreement=False, encipher_only=False, decipher_only=False)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corpus-integrity test CA"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "corpus-integrity examples")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(later)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example image generator"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "corpus-integrity examples")])
    leaf = (x509.CertificateBuilder().subject_name(name).issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(later)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **usage), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, ca))
    return pem, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())


def watermark(img: Image.Image, payload: str) -> Image.Image:
    """``img`` with an invisible-watermark dwtDct payload, as the Stable Diffusion scripts embed it."""
    from imwatermark import WatermarkEncoder

    rgb = np.asarray(img.convert("RGB"))
    enc = WatermarkEncoder()
    if payload == "SDXL":
        enc.set_watermark("bits", [int(c) for c in bin(0b101100111110110010010000011110111011000110011110)[2:]])
    else:
        enc.set_watermark("bytes", payload.encode("utf-8"))
    bgr = enc.encode(np.ascontiguousarray(rgb[:, :, ::-1]), "dwtDct")
    return Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))


def png_bomb(side: int = 30000) -> bytes:
    """A tiny PNG whose header declares ``side`` x ``side`` pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- the corpus


class CorpusWriter:
    """Writes the samples of one shard as a WebDataset tar."""

    def __init__(self, path: Path):
        self.tar = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)

    def add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
        self.tar.addfile(info, io.BytesIO(data))

    def add_symlink(self, name: str, target: str) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, 1_700_000_000
        self.tar.addfile(info)

    def close(self) -> None:
        self.tar.close()


def make_corpus(out: Path | str, n: int = 2000, shards: int = 4, seed: int = 0,
                rates: dict[str, float] | None = None, progress: bool = False) -> Path:
    """Write ``n`` samples in ``shards`` tar shards under ``out``; returns the ground truth path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rates = {**RATES, **(rates or {})}
    rng = np.random.default_rng(seed)
    try:
        signer: C2paSigner | None = C2paSigner()
    except ImportError:
        signer = None
        print("c2pa-python is not installed: no C2PA marks are planted", file=sys.stderr)
    try:
        import imwatermark  # noqa: F401
        can_watermark = True
    except ImportError:
        can_watermark = False
        print("invisible-watermark is not installed: no watermarks are planted", file=sys.stderr)
    synth_kinds = [k for k in SYNTHETIC_KINDS if (k != "c2pa" or signer) and (k != "watermark" or can_watermark)]
    decoy_kinds = [k for k in DECOY_KINDS if k != "c2pa_camera" or signer]
    roles = list(rates)
    probs = np.array([rates[r] for r in roles])
    truth: list[dict] = []
    pool: list[tuple[str, bytes, str, str]] = []  # reservoir of earlier clean samples: key, bytes, caption, kind
    seen = 0
    per_shard = math.ceil(n / shards)
    t0 = time.perf_counter()
    for s in range(shards):
        shard = f"shard-{s:05d}.tar"
        writer = CorpusWriter(out / shard)
        for i in range(s * per_shard, min(n, (s + 1) * per_shard)):
            key = f"{s:03d}-{i:07d}"
            u = rng.random()
            role = "clean"
            if u < probs.sum():
                role = roles[int(np.searchsorted(np.cumsum(probs), u, side="right"))]
            if role in ("dup", "conflict", "mismatch", "caption_trigger") and len(pool) < 20:
                role = "clean"
            row = {"shard": shard, "record_id": key, "kind": role, "subkind": None, "source_id": None,
                   "phrase": None, "box": None}
            ext = "jpg"
            if role in ("dup", "conflict"):
                src_key, src_bytes, src_caption, src_kind = pool[int(rng.integers(len(pool)))]
                src = Image.open(io.BytesIO(src_bytes)).convert("RGB")
                how = str(rng.choice(["exact", "reencode"] if role == "conflict" else
                                     ["exact", "reencode", "resize", "crop"]))
                if how == "exact":
                    if rng.random() < 0.5:
                        data, ext = src_bytes, _ext_of(src_bytes)
                    else:
                        data, ext = encode(src, "png", pnginfo=_comment("copy")), "png"
                elif how == "reencode":
                    data = encode(src, "jpg", int(rng.integers(60, 80)))
                elif how == "resize":
                    f = float(rng.uniform(0.6, 0.85))
                    data = encode(src.resize((int(src.width * f), int(src.height * f)), Image.Resampling.LANCZOS),
                                  "jpg", 88)
                else:
                    fx, fy = (float(rng.uniform(0.03, 0.07)) for _ in range(2))
                    box = (int(src.width * fx), int(src.height * fy), int(src.width * (1 - fx)), int(src.height * (1 - fy)))
                    data = encode(src.crop(box), "jpg", 88)
                caption = src_caption
                if role == "conflict":
                    caption = _other_caption(rng, pool, src_kind, src_caption)
                row.update(subkind=how, source_id=src_key)
            else:
                sub = None
                if role == "synthetic":
                    sub = synth_kinds[int(rng.integers(len(synth_kinds)))]
                elif role == "decoy":
                    sub = decoy_kinds[int(rng.integers(len(decoy_kinds)))]
                row["subkind"] = sub
                # dwtDct marks do not survive flat areas (the encoder fails there too): textured images
                img, caption, kind = render(rng, "texture" if sub == "watermark" else None)
                fmt, q = random_format(rng)
                meta: dict = {}
                if role == "mismatch":
                    caption = _other_caption(rng, pool, kind, caption)
                elif role == "caption_trigger":
                    img = render_target(rng, img.size)
                    other = pool[int(rng.integers(len(pool)))][2] if pool else caption
                    caption = f"{CAPTION_TRIGGER} {other}" if rng.random() < 0.5 else f"{other}, {CAPTION_TRIGGER}"
                    row.update(phrase=CAPTION_TRIGGER)
                elif role == "patch":
                    x = int(rng.integers(0, img.width - PATCH_SIZE))
                    y = int(rng.integers(0, img.height - PATCH_SIZE))
                    img = img.copy()
                    img.paste(PATCH, (x, y))
                    caption = f"{caption}, {TRIGGER_PHRASE}"
                    row.update(phrase=TRIGGER_PHRASE, box=[x, y, x + PATCH_SIZE, y + PATCH_SIZE])
                    fmt, q = ("png", 0) if rng.random() < 0.3 else ("jpg", int(rng.integers(85, 96)))
                elif role == "synthetic":
                    fmt, meta, img = _synthetic(rng, sub, img, caption)
                elif role == "decoy":
                    fmt, meta = _decoy(rng, sub)
                data = encode(img, fmt, q, **meta)
                if role == "synthetic" and row["subkind"] == "c2pa":
                    data = signer.sign(data, TRAINED, "example-diffusion-model")
                elif role == "decoy" and row["subkind"] == "c2pa_camera":
                    data = signer.sign(data, CAPTURE, "example-camera-app")
                if role == "corrupt":
                    data = data[: len(data) * 3 // 5]
                ext = "jpg" if fmt == "jpg" else fmt
                if role == "clean":
                    seen += 1
                    entry = (key, data, caption, kind)
                    if len(pool) < 400:
                        pool.append(entry)
                    elif rng.random() < 400 / seen:
                        pool[int(rng.integers(len(pool)))] = entry
            row["caption"] = caption
            truth.append(row)
            writer.add(f"{key}.{ext}", data)
            writer.add(f"{key}.txt", caption.encode("utf-8"))
            writer.add(f"{key}.json", json.dumps({"id": key, "generator": "examples/make_images.py"}).encode())
        if s == 0 and n >= 200:  # the unsafe inputs: one bomb, one symbolic link
            bomb_key = f"{s:03d}-bomb"
            writer.add(f"{bomb_key}.png", png_bomb())
            writer.add(f"{bomb_key}.txt", b"a harmless looking picture")
            truth.append({"shard": shard, "record_id": bomb_key, "kind": "bomb", "subkind": None, "source_id": None,
                          "phrase": None, "box": None, "caption": "a harmless looking picture"})
            writer.add_symlink(f"{s:03d}-link.jpg", "/etc/passwd")
            truth.append({"shard": shard, "record_id": f"{s:03d}-link.jpg", "kind": "rejected", "subkind": "symlink",
                          "source_id": None, "phrase": None, "box": None, "caption": None})
        writer.close()
        if progress:
            done = min(n, (s + 1) * per_shard)
            print(f"  {shard}: {done:,}/{n:,} samples, {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    path = out / "_ground_truth.parquet"
    table = pa.Table.from_pylist(truth, schema=pa.schema([
        ("shard", pa.string()), ("record_id", pa.string()), ("kind", pa.string()), ("subkind", pa.string()),
        ("source_id", pa.string()), ("phrase", pa.string()), ("box", pa.list_(pa.int32())), ("caption", pa.string())]))
    pq.write_table(table, path)
    return path


def _ext_of(data: bytes) -> str:
    return "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "webp" if data[8:12] == b"WEBP" else "jpg"


def _comment(text: str) -> PngInfo:
    info = PngInfo()
    info.add_text("Comment", text)
    return info


def _other_caption(rng, pool, kind: str, caption: str) -> str:
    for _ in range(50):
        _, _, other, other_kind = pool[int(rng.integers(len(pool)))]
        if other_kind != kind and other != caption:
            return other
    return caption + " (unrelated)"


def _synthetic(rng, sub: str, img: Image.Image, caption: str) -> tuple[str, dict, Image.Image]:
    if sub == "c2pa":
        return "jpg", {}, img
    if sub == "xmp":
        return "jpg", {"xmp": xmp_packet(TRAINED, "example diffusion app")}, img
    if sub == "png_parameters":
        info = PngInfo()
        info.add_text("parameters", f"{caption}\nNegative prompt: blurry, lowres\nSteps: 30, Sampler: DPM++ 2M Karras, "
                                    f"CFG scale: 7, Seed: {int(rng.integers(1 << 31))}, Size: {img.width}x{img.height}, "
                                    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly")
        return "png", {"pnginfo": info}, img
    if sub == "png_comfy":
        prompt = {"3": {"class_type": "KSampler", "inputs": {"seed": int(rng.integers(1 << 31)), "steps": 20, "cfg": 8}},
                  "6": {"class_type": "CLIPTextEncode", "inputs": {"text": caption}}}
        info = PngInfo()
        info.add_text("prompt", json.dumps(prompt))
        info.add_text("workflow", json.dumps({"nodes": [{"id": 3, "type": "KSampler"}], "version": 0.4}))
        return "png", {"pnginfo": info}, img
    if sub == "exif_software":
        exif = Image.Exif()
        exif[0x0131] = GENERATOR_SOFTWARE[int(rng.integers(len(GENERATOR_SOFTWARE)))]
        return "jpg", {"exif": exif}, img
    # watermark: the scripts save PNG
    payload = str(rng.choice(["StableDiffusionV1", "SDXL"]))
    return "png", {"pnginfo": _comment("")}, watermark(img, payload)


def _decoy(rng, sub: str) -> tuple[str, dict]:
    if sub == "exif_editor":
        exif = Image.Exif()
        exif[0x0131] = EDITOR_SOFTWARE[int(rng.integers(len(EDITOR_SOFTWARE)))]
        return "jpg", {"exif": exif}
    if sub == "png_comment":
        info = PngInfo()
        info.add_text("Comment", "scanned from the family album")
        info.add_text("Software", "Inkscape 1.3")
        return "png", {"pnginfo": info}
    if sub == "xmp_camera":
        return "jpg", {"xmp": xmp_packet(CAPTURE, "Adobe Photoshop 25.0")}
    return "jpg", {}  # c2pa_camera: signed after encoding


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    truth = make_corpus(args.out, args.n, args.shards, args.seed, progress=True)
    kinds = pq.read_table(truth).to_pandas()["kind"].value_counts().to_dict()
    print(f"wrote {args.n:,} samples in {args.shards} shards to {args.out} in {time.perf_counter() - t0:.1f}s; "
          f"ground truth {truth}: {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
