"""``synthetic.image``: images that say they were made by a generator.

Generated images leak back into scraped corpora, and most carry a mark that is
easy to read when one looks. Per record, from the bytes and the decoded image
(:mod:`integrity.analysis.images`), the check reads:

==================  =====================================================  =====
mark                evidence                                                score
==================  =====================================================  =====
``c2pa``            a C2PA manifest (read with ``c2pa-python`` when          1.0
                    installed, remote fetches and OCSP off) whose actions
                    declare an IPTC ``digitalSourceType`` of
                    ``trainedAlgorithmicMedia`` (composites 0.8,
                    ``algorithmicMedia`` 0.6); the validation state is in
                    the detail
``xmp``             XMP ``Iptc4xmpExt:DigitalSourceType`` with those          0.95
                    values, or an XMP ``CreatorTool`` naming a generator       0.8
``png_text``        PNG text chunks written by generator front ends:         0.9
                    AUTOMATIC1111/Forge ``parameters`` (Steps/Sampler/CFG),
                    ComfyUI ``prompt``/``workflow`` graphs, InvokeAI
                    ``invokeai_metadata``/``sd-metadata``/``Dream``,
                    NovelAI ``Software``/``Comment``
``exif``            EXIF ``Software``/``Make``/``Model``/``Artist``/          0.8
                    ``ImageDescription``/``UserComment`` naming a generator
                    (:data:`GENERATOR_NAMES`)
``watermark``       the invisible-watermark ``dwtDct`` payload of a Stable     0.9
                    Diffusion release, decoded by majority vote per bit and
                    accepted on bit accuracy with a one-sided binomial test
                    (``log10_p <= watermark_log10_p``), never exact equality
==================  =====================================================  =====

A record with any mark is one finding; its score is the strongest mark's and
the detail lists every mark with its evidence (and ``generator`` when one is
named). Benign metadata (editor software, camera XMP, ``digitalCapture``) is
not a mark. A few findings per shard carry a small thumbnail for the report.
"""
from __future__ import annotations

import io
import json
import re
import threading
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field

from connectors.images import decode_image, mime_of, thumbnail_data_uri
from integrity.checks.base import CheckOutput, findings_frame
from integrity.checks.image_base import ImageCheck, ImageOptions

IPTC_SOURCE = re.compile(r"digitalsourcetype/(\w+)", re.IGNORECASE)
#: IPTC digital source types that mean generated content, with their score
SOURCE_TYPE_SCORES = {
    "trainedalgorithmicmedia": 1.0,
    "compositewithtrainedalgorithmicmedia": 0.8,
    "algorithmicmedia": 0.6,
    "compositesynthetic": 0.6,
}
GENERATOR_NAMES = (
    "midjourney", "dall-e", "dall·e", "dalle", "stable diffusion", "stablediffusion", "sdxl", "stability ai",
    "adobe firefly", "firefly", "novelai", "comfyui", "automatic1111", "stable-diffusion-webui", "invokeai",
    "imagen", "ideogram", "leonardo.ai", "flux.1", "black forest labs", "runway", "craiyon", "dreamstudio",
    "nightcafe", "bing image creator", "image creator from designer", "made with google ai", "gemini",
    "openai", "diffusers", "fooocus",
)
_GEN_RE = re.compile("|".join(re.escape(n) for n in GENERATOR_NAMES), re.IGNORECASE)
_A1111 = re.compile(r"\bSteps:\s*\d+.*\b(Sampler|CFG scale|Seed):", re.IGNORECASE | re.DOTALL)
PNG_GENERATOR_KEYS = ("invokeai_metadata", "sd-metadata", "dream", "generation_data", "aigc")


def _generator(text: str) -> str | None:
    m = _GEN_RE.search(text or "")
    return m.group(0) if m else None


def png_text_marks(text: dict[str, str]) -> list[dict]:
    """Generator marks in PNG text chunks (and other ``info`` strings)."""
    marks = []
    lower = {k.lower(): v for k, v in text.items()}
    params = lower.get("parameters")
    if params and _A1111.search(params):
        marks.append({"mark": "png_text", "key": "parameters", "generator": "AUTOMATIC1111-compatible",
                      "evidence": params[:200], "score": 0.9})
    for key in ("prompt", "workflow"):
        value = lower.get(key)
        if value and ("class_type" in value or '"nodes"' in value):
            marks.append({"mark": "png_text", "key": key, "generator": "ComfyUI", "evidence": value[:200],
                          "score": 0.9})
    for key in PNG_GENERATOR_KEYS:
        if lower.get(key):
            marks.append({"mark": "png_text", "key": key, "evidence": lower[key][:200], "score": 0.9})
    for key in ("software", "comment", "description", "source"):
        value = lower.get(key)
        gen = _generator(value) if value else None
        if gen:
            marks.append({"mark": "png_text", "key": key, "generator": gen, "evidence": value[:200], "score": 0.9})
        elif key == "comment" and value and '"steps"' in value and '"sampler"' in value:
            marks.append({"mark": "png_text", "key": key, "evidence": value[:200], "score": 0.9})
    return marks


def xmp_marks(xmp: str) -> list[dict]:
    """IPTC DigitalSourceType and generator CreatorTool in an XMP packet."""
    marks = []
    for m in IPTC_SOURCE.finditer(xmp or ""):
        score = SOURCE_TYPE_SCORES.get(m.group(1).lower())
        if score:
            marks.append({"mark": "xmp", "digital_source_type": m.group(1), "score": round(min(score, 0.95), 2)})
            break
    tool = re.search(r"CreatorTool(?:=\"|>)([^\"<]{1,200})", xmp or "")
    if tool and _generator(tool.group(1)):
        marks.append({"mark": "xmp", "creator_tool": tool.group(1), "generator": _generator(tool.group(1)),
                      "score": 0.8})
    return marks


def exif_marks(exif: dict[str, str]) -> list[dict]:
    """EXIF tags naming a generator."""
    for tag, value in exif.items():
        gen = _generator(value)
        if gen:
            return [{"mark": "exif", "tag": tag, "value": value[:200], "generator": gen, "score": 0.8}]
    return []


_C2PA_CTX = threading.local()


def _c2pa_context():
    """A c2pa Context that never reaches the network (remote manifests, OCSP), per thread."""
    ctx = getattr(_C2PA_CTX, "ctx", None)
    if ctx is None:
        import c2pa

        settings = c2pa.Settings.from_json(json.dumps(
            {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}))
        ctx = c2pa.Context(settings)
        _C2PA_CTX.ctx = ctx
    return ctx


def c2pa_marks(data: bytes, fmt: str | None) -> list[dict]:
    """The digitalSourceType a C2PA manifest declares (``c2pa-python``; byte scan as fallback)."""
    info: dict[str, Any] = {"mark": "c2pa"}
    types: list[str] = []
    try:
        import c2pa

        reader = c2pa.Reader(mime_of(fmt) or "image/jpeg", io.BytesIO(data), context=_c2pa_context())
        manifest = reader.get_active_manifest() or {}
        info["validation_state"] = reader.get_validation_state()
        gens = [g.get("name") for g in manifest.get("claim_generator_info") or [] if isinstance(g, dict)]
        if gens:
            info["claim_generator"] = ", ".join(str(g) for g in gens if g)[:200]
        for assertion in manifest.get("assertions") or []:
            if str(assertion.get("label", "")).startswith("c2pa.actions"):
                for action in (assertion.get("data") or {}).get("actions") or []:
                    dst = action.get("digitalSourceType") if isinstance(action, dict) else None
                    if dst:
                        types.append(str(dst))
        reader.close()
    except ImportError:
        info["validation_state"] = "not validated (c2pa-python is not installed)"
        types = [m.group(0) for m in IPTC_SOURCE.finditer(data.decode("latin-1"))]
    except Exception as exc:  # a malformed manifest is evidence too: fall back to the bytes
        info["validation_state"] = f"unreadable ({type(exc).__name__}: {str(exc)[:120]})"
        types = [m.group(0) for m in IPTC_SOURCE.finditer(data.decode("latin-1"))]
    best = None
    for t in types:
        m = IPTC_SOURCE.search(t) or re.search(r"(\w+)$", t)
        name = m.group(1) if m else t
        score = SOURCE_TYPE_SCORES.get(name.lower())
        if score and (best is None or score > best[1]):
            best = (name, score)
    if best is None:
        return []
    info.update(digital_source_type=best[0], score=best[1])
    return [info]


class SyntheticImage(ImageCheck):
    name = "synthetic.image"
    description = ("Generated images: C2PA digitalSourceType, IPTC/XMP trainedAlgorithmicMedia, generator PNG text "
                   "chunks, EXIF software, and Stable Diffusion invisible watermarks (binomial test).")
    class Options(ImageOptions):
        c2pa: bool = Field(True, description="read C2PA manifests (digitalSourceType)")
        xmp: bool = Field(True, description="read IPTC/XMP digital source type")
        png_text: bool = Field(True, description="read generator PNG text chunks (A1111, ComfyUI, InvokeAI, NovelAI)")
        exif: bool = Field(True, description="read EXIF software naming a generator")
        watermark: bool = Field(True, description="look for Stable Diffusion invisible watermarks (dwtDct)")
        watermark_log10_p: float = Field(-6.0, le=0, description="binomial p-value (log10) a watermark match needs")
        thumbnails_per_shard: int = Field(2, ge=0, description="findings per shard that carry a thumbnail for the report")
    default_severity = "warn"

    def __init__(self, options=None, shard=None):
        super().__init__(options, shard)
        self._thumbs = 0

    def marks(self, data: bytes | None, meta: dict, watermark: dict | None) -> list[dict]:
        """Every generator mark of one record."""
        o = self.options
        marks: list[dict] = []
        if o["c2pa"] and meta.get("c2pa") and data is not None:
            marks += c2pa_marks(data, meta.get("format"))
        if o["xmp"] and meta.get("xmp"):
            marks += xmp_marks(meta["xmp"])
        if o["png_text"] and meta.get("text"):
            marks += png_text_marks(meta["text"])
        if o["exif"] and meta.get("exif"):
            marks += exif_marks(meta["exif"])
        if o["watermark"] and watermark and watermark["log10_p"] <= float(o["watermark_log10_p"]):
            marks.append({"mark": "watermark", "method": "dwtDct", **watermark, "score": 0.9})
        return marks

    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        a = self.analysis(batch)
        images = batch.column("image")
        ids = batch.column("record_id").to_pylist()
        rows = batch.column("row").to_pylist()
        rec, scores, details = [], [], []
        for i in np.flatnonzero(a.ok):
            meta = a.meta[i]
            needs_bytes = self.options["c2pa"] and meta.get("c2pa")
            data = images[int(i)].as_py() if needs_bytes else None
            marks = self.marks(data, meta, a.watermark[i])
            if not marks:
                continue
            best = max(marks, key=lambda m: m["score"])
            detail: dict[str, Any] = {"row": rows[i], "marks": marks, "strongest": best["mark"]}
            gen = next((m["generator"] for m in marks if m.get("generator")), None)
            if gen:
                detail["generator"] = gen
            if self._thumbs < int(self.options["thumbnails_per_shard"]):
                dec = decode_image(images[int(i)].as_py(), self.limits)
                if dec.ok:
                    detail["thumbnail"] = thumbnail_data_uri(dec.image)
                    if "caption" in batch.schema.names and batch.column("caption")[int(i)].is_valid:
                        detail["caption"] = batch.column("caption")[int(i)].as_py()[:300]
                    self._thumbs += 1
            rec.append(ids[i])
            scores.append(float(best["score"]))
            details.append(detail)
        return CheckOutput(findings=findings_frame(rec, scores, details) if rec else None)
