"""Safe decoding of untrusted image bytes, one record at a time.

Every image a check looks at comes from scanned data, so decoding is the
attack surface: decompression bombs (a few KB that declare 100,000 x 100,000
pixels), truncated or corrupt files, exotic formats with fragile decoders.
:func:`decode_image` never raises for bad data; it returns a
:class:`Decoded` whose ``status`` says what happened, so the problem is
reported per record and the rest of the shard goes on:

============  ===================================================================
``ok``        decoded; ``image`` is an RGB :class:`PIL.Image.Image`
``missing``   no bytes (null)
``rejected``  the connector refused the record as unsafe (a tar member with an
              absolute path, ``..``, a link or a device; see :func:`rejected_marker`)
``unusable``  the connector could not make a record of it (e.g. a tar member
              without an extension); ``error`` says why
``too_large`` more compressed bytes than ``DecodeLimits.max_bytes``
``bomb``      the header declares more than ``DecodeLimits.max_pixels`` pixels, or
              a chunk inflates past Pillow's text/ICC limits
``corrupt``   truncated or malformed data in an allowed format
``unsupported`` not an image of an allowed format (Pillow is only offered
              :data:`ALLOWED_FORMATS`, so no other decoder ever runs)
============  ===================================================================

The pixel limit is checked per call on the header's declared size, *before*
any pixel is decoded; Pillow's process-wide ``Image.MAX_IMAGE_PIXELS`` is left
alone (it still stops anything over twice its value inside ``Image.open``).
Truncated files are not completed (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays
off). Only the first frame of animated images is decoded.

Connectors that refuse a record (a tar member with an absolute path, ``..``,
a link or a device) still emit it, with :func:`rejected_marker` bytes in its
``image`` field: the record flows through the normalized schema like any
other, and ``image.decode`` reports the reason per record.
"""
from __future__ import annotations

import base64
import io
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw, UnidentifiedImageError

#: formats Pillow may use to decode scanned bytes (others are never tried)
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG also opens MPO
_REJECTED = b"\x00integrity:rejected-record\x00"
_MIME = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp",
         "GIF": "image/gif", "BMP": "image/bmp", "TIFF": "image/tiff"}
#: statuses that mean "something is wrong with this record"
PROBLEMS = ("rejected", "unusable", "too_large", "bomb", "corrupt", "unsupported")


@dataclass(frozen=True)
class DecodeLimits:
    """Per-decode limits (documented defaults; the policy may change them)."""

    max_pixels: int = 40_000_000  # width * height declared by the header
    max_bytes: int = 64 << 20  # compressed bytes of one image
    max_meta_chars: int = 8192  # characters kept of each metadata text value


DEFAULT_LIMITS = DecodeLimits()


@dataclass
class Decoded:
    """The outcome of decoding one record's bytes."""

    status: str
    image: Image.Image | None = None  # RGB, when status == "ok"
    error: str | None = None
    format: str | None = None  # Pillow format name
    size: tuple[int, int] | None = None  # declared (width, height)
    meta: dict[str, Any] = field(default_factory=dict)  # see image_metadata()

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# --------------------------------------------------------------------------- rejected records


def rejected_marker(reason: str, unsafe: bool = True) -> bytes:
    """Bytes standing in for a record the connector refused (reported by ``image.decode``):
    ``unsafe`` for an attack-shaped input (path escape, link, device), else merely unusable."""
    return _REJECTED + (b"U" if unsafe else b"N") + reason.encode("utf-8", "replace")[:2000]


def rejected_reason(data: bytes | memoryview | None) -> tuple[str, bool] | None:
    """(reason, unsafe) carried by :func:`rejected_marker` bytes, else ``None``."""
    n = len(_REJECTED)
    if data is None or len(data) <= n or bytes(data[:n]) != _REJECTED:
        return None
    return bytes(data[n + 1:]).decode("utf-8", "replace"), bytes(data[n:n + 1]) == b"U"


# --------------------------------------------------------------------------- decoding


def decode_image(data: bytes | None, limits: DecodeLimits = DEFAULT_LIMITS, meta: bool = False) -> Decoded:
    """Decode ``data`` into RGB under ``limits``; never raises for bad data.

    With ``meta`` the result carries :func:`image_metadata` (text chunks,
    XMP, EXIF software tags, C2PA presence) for provenance checks.
    """
    if data is None:
        return Decoded("missing", error="no image bytes")
    rejected = rejected_reason(data)
    if rejected is not None:
        return Decoded("rejected" if rejected[1] else "unusable", error=rejected[0])
    if len(data) > limits.max_bytes:
        return Decoded("too_large", error=f"{len(data):,} bytes, over the limit of {limits.max_bytes:,}")
    if len(data) == 0:
        return Decoded("corrupt", error="empty image (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        return Decoded("bomb", error=f"decompression bomb: {exc}")
    except UnidentifiedImageError:
        fmt = sniff_format(data)
        if fmt is not None:
            return Decoded("corrupt", format=fmt, error=f"{fmt} signature but an unreadable header")
        return Decoded("unsupported", error=f"not an image in an allowed format ({', '.join(ALLOWED_FORMATS)}); "
                                            f"{_looks_like(data)}")
    except (OSError, ValueError, SyntaxError, struct.error, EOFError, IndexError, zlib.error) as exc:
        return _failure(exc)
    fmt = im.format
    w, h = im.size
    out = Decoded("ok", format=fmt, size=(w, h))
    if w <= 0 or h <= 0:
        out.status, out.error = "corrupt", f"declares an empty size {w}x{h}"
        return out
    if w * h > limits.max_pixels:
        out.status = "bomb"
        out.error = (f"declares {w}x{h} = {w * h:,} pixels, over the limit of {limits.max_pixels:,} "
                     f"(decompression bomb or oversized image; not decoded)")
        return out
    short = png_data_problem(data) if fmt == "PNG" else None
    if short is not None:  # Pillow would fill the missing rows with zeros and call it fine
        im.close()
        out.status, out.error = "corrupt", short
        return out
    try:
        im.load()
        if meta:
            out.meta = image_metadata(im, data, limits.max_meta_chars)
        out.image = _to_rgb(im)
    except Image.DecompressionBombError as exc:
        out.status, out.error = "bomb", f"decompression bomb: {exc}"
    except MemoryError:
        out.status, out.error = "too_large", f"{w}x{h} image does not fit in memory"
    except (OSError, ValueError, SyntaxError, struct.error, EOFError, IndexError, zlib.error, TypeError) as exc:
        failed = _failure(exc)
        out.status, out.error = failed.status, failed.error
    finally:
        im.close()
    if out.status != "ok":
        out.image = None
    return out


_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_DEFLATE_MAX_RATIO = 1032  # deflate cannot expand one byte into more than ~1032


def png_image_bytes(width: int, height: int, bit_depth: int, color_type: int, interlace: int) -> int:
    """Bytes of filtered scanlines a PNG of this header must decompress to."""
    bits = bit_depth * _PNG_CHANNELS.get(color_type, 4)
    if not interlace:
        return height * (1 + (width * bits + 7) // 8)
    total = 0
    for xs, ys, dx, dy in _ADAM7:
        pw, ph = (width - xs + dx - 1) // dx, (height - ys + dy - 1) // dy
        if pw > 0 and ph > 0:
            total += ph * (1 + (pw * bits + 7) // 8)
    return total


def png_data_problem(data: bytes) -> str | None:
    """Why a PNG's image data is shorter than its header declares, else ``None``.

    Pillow decodes a PNG whose compressed data ends early (cut file, or a
    complete but short zlib stream) as "ok", with the missing rows black. The
    IDAT data is checked before any pixel buffer is allocated: first against
    deflate's maximum ratio (no decompression at all), then by streaming it
    through zlib in 1 MiB pieces, counting and discarding.
    """
    view = memoryview(data)
    pos, header, idat = 8, None, []
    while pos + 8 <= len(view):
        length = int.from_bytes(view[pos:pos + 4], "big")
        kind = bytes(view[pos + 4:pos + 8])
        body = view[pos + 8:pos + 8 + length]
        if kind == b"IHDR" and len(body) >= 13:
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        return None  # Pillow opened it: leave the verdict to the decoder
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    expected = png_image_bytes(width, height, header[8], header[9], header[12])
    stored = sum(len(b) for b in idat)
    if stored * _DEFLATE_MAX_RATIO < expected:
        return (f"truncated image data: {stored:,} bytes of compressed data cannot hold the {expected:,} "
                f"bytes its {width}x{height} header declares")
    inflate, got = zlib.decompressobj(), 0
    try:
        for body in idat:
            chunk = bytes(body)
            while chunk and got < expected:
                got += len(inflate.decompress(chunk, 1 << 20))
                chunk = inflate.unconsumed_tail
            if got >= expected:
                return None
    except zlib.error as exc:
        return f"corrupt image data (zlib: {exc})"
    return f"truncated image data: {got:,} of the {expected:,} bytes its {width}x{height} header declares"


_BYTES_REPR = re.compile(r"""b(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


def _looks_like(data: bytes) -> str:
    """What a file that is not an image seems to hold, in words: never its bytes, which
    may be anything (a password file under an --image-root, a key) and end up in reports."""
    head = bytes(data[:512])
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        return f"it holds text ({len(data):,} bytes)"
    return f"it holds other binary data ({len(data):,} bytes)"


def _failure(exc: BaseException) -> Decoded:
    # decoder messages may quote the file's bytes (b'...'): never echo them
    msg = _BYTES_REPR.sub("<bytes>", str(exc)) or type(exc).__name__
    low = msg.lower()
    if "decompressed data too large" in low or "too much memory" in low:  # PNG text/ICC bombs
        return Decoded("bomb", error=f"decompression bomb in a metadata chunk: {msg}")
    if "truncated" in low:
        return Decoded("corrupt", error=f"truncated image: {msg}")
    return Decoded("corrupt", error=f"corrupt image ({type(exc).__name__}: {msg})")


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im.copy()  # the caller closes ``im``
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return im.convert("RGB")


_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
          (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def sniff_format(data: bytes) -> str | None:
    """The allowed format whose signature ``data`` starts with, if any."""
    head = bytes(data[:12])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _MAGIC if head.startswith(magic)), None)


def mime_of(fmt: str | None) -> str | None:
    """MIME type of a Pillow format name."""
    return _MIME.get(fmt or "")


# --------------------------------------------------------------------------- metadata

#: EXIF tags kept by image_metadata (0th IFD and Exif IFD)
EXIF_TAGS = {0x0131: "Software", 0x010E: "ImageDescription", 0x013B: "Artist", 0x010F: "Make",
             0x0110: "Model", 0x8298: "Copyright"}
EXIF_IFD_TAGS = {0x9286: "UserComment"}


def _clip_text(value: Any, limit: int) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).replace("\x00", " ").strip()
    return text[:limit]


def image_metadata(im: Image.Image, data: bytes, limit: int = DEFAULT_LIMITS.max_meta_chars) -> dict[str, Any]:
    """Provenance-relevant metadata of a loaded image, as plain strings.

    ``text``: PNG tEXt/iTXt/zTXt chunks (and other string ``info`` values such as a
    JPEG comment); ``xmp``: the XMP packet; ``exif``: :data:`EXIF_TAGS`;
    ``c2pa``: whether the bytes carry a C2PA JUMBF store (JPEG APP11, PNG ``caBX``,
    or the ``jumb``/``c2pa`` boxes elsewhere). Values are cut to ``limit`` characters.
    """
    text: dict[str, str] = {}
    for key, value in (im.info or {}).items():
        if not isinstance(key, str) or key in ("exif", "icc_profile", "xmp", "XML:com.adobe.xmp"):
            continue
        if isinstance(value, (str, bytes)) and value:
            text[key[:64]] = _clip_text(value, limit)
    xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp") or b""
    exif: dict[str, str] = {}
    try:
        ex = im.getexif()
        for tag, name in EXIF_TAGS.items():
            if tag in ex and ex[tag]:
                exif[name] = _clip_text(ex[tag], limit)
        ifd = ex.get_ifd(0x8769) if ex else {}
        for tag, name in EXIF_IFD_TAGS.items():
            if tag in ifd and ifd[tag]:
                exif[name] = _clip_text(ifd[tag], limit)
    except (OSError, ValueError, SyntaxError, struct.error, TypeError, KeyError, IndexError):
        pass
    return {
        "format": im.format,
        "text": text,
        "xmp": _clip_text(xmp, 4 * limit) if xmp else "",
        "exif": exif,
        "c2pa": has_c2pa(data),
    }


def has_c2pa(data: bytes) -> bool:
    """Whether ``data`` carries a C2PA manifest store (a JUMBF box labelled ``c2pa``)."""
    return b"jumb" in data and b"c2pa" in data


# --------------------------------------------------------------------------- thumbnails


def thumbnail_data_uri(image: Image.Image, max_side: int = 96, box: tuple[int, int, int, int] | None = None,
                       quality: int = 70) -> str:
    """A small JPEG ``data:`` URI of ``image`` (RGB), optionally with ``box``
    (x0, y0, x1, y1 in the image's pixels) outlined in red: report evidence."""
    thumb = image.copy()
    thumb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if box is not None:
        sx, sy = thumb.width / image.width, thumb.height / image.height
        x0, y0, x1, y1 = box
        ImageDraw.Draw(thumb).rectangle(
            [int(x0 * sx) - 1, int(y0 * sy) - 1, int(x1 * sx) + 1, int(y1 * sy) + 1], outline=(230, 0, 0), width=2)
    buf = io.BytesIO()
    thumb.convert("RGB").save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail_of_bytes(data: bytes | None, max_side: int = 96, box=None,
                       limits: DecodeLimits = DEFAULT_LIMITS) -> str | None:
    """:func:`thumbnail_data_uri` of raw bytes, or ``None`` when they do not decode safely."""
    dec = decode_image(data, limits)
    return thumbnail_data_uri(dec.image, max_side, box) if dec.ok else None
