"""Report sections of the image checks: thumbnails of flagged records, their captions and evidence.

Section ``images`` (the default of every :class:`~integrity.checks.image_base.ImageCheck`) is the
generic section plus a gallery; ``dedup_images`` (``dedup.image``) is the ``dedup`` section plus
the gallery. The gallery shows a small thumbnail of each flagged record (the
matched patch outlined in red; for a duplicate, the kept representative next
to it), its caption, and the evidence in words (duplicate of which record at
which distance, which caption phrase a patch is tied to, the CLIP score
against the corpus median, the provenance marks).

The thumbnails are the ones the checks put in a few findings' ``detail``
(small JPEG ``data:`` URIs, at most a dozen per check); the report reads only
the run directory. Detail strings are untrusted: a thumbnail is used only when
it is a well-formed base64 JPEG/PNG data URI of bounded length, and every other
value is escaped. The long base64 strings are taken out of the detail shown in
examples and tables.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Callable

import polars as pl
from markupsafe import Markup

from integrity.report.format import pretty_detail
from integrity.report.model import Block, CheckData, Section, SectionRenderer, generic_section, report_section
from integrity.report.sections.dedup_risk import dedup_family_section

THUMB_KEYS = ("thumbnail", "representative_thumbnail")
MAX_GALLERY = 12
MAX_URI_CHARS = 60_000
_DATA_URI = re.compile(r"data:image/(?:jpeg|png);base64,[A-Za-z0-9+/]+={0,2}")
_STRIP = r',?\s*"(?:representative_)?thumbnail":\s*"[^"]*"'


def safe_data_uri(value: Any) -> str | None:
    """``value`` when it is a bounded, well-formed base64 JPEG/PNG data URI, else ``None``."""
    if isinstance(value, str) and len(value) <= MAX_URI_CHARS and _DATA_URI.fullmatch(value):
        return value
    return None


def _strip_thumbnails(lf: pl.LazyFrame) -> pl.LazyFrame:
    return lf.with_columns(pl.col("detail").str.replace_all(_STRIP, "").str.replace(r"^\{\s*,", "{"))


def _load(detail: Any) -> dict:
    try:
        d = json.loads(detail or "{}")
    except (TypeError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def _evidence(check: str, d: dict) -> str:
    """The finding's evidence in a few words."""
    if check == "dedup.image":
        if d.get("kind") == "caption_conflict":
            return (f"same image as {d.get('representative')} with another caption "
                    f"(word overlap {d.get('caption_similarity')}): “{str(d.get('representative_caption', ''))[:120]}”")
        where = f" (approved in scan {d.get('representative_scan')})" if d.get("history") else ""
        return (f"{d.get('match', 'near')} duplicate of {d.get('representative')}{where}, "
                f"hash distance {d.get('hamming')}, cluster of {d.get('group_size')}")
    if check == "poison.patch":
        tied = (f"; tied to “{d['tied_phrase']}” ({d.get('share')} of its captions, purity {d.get('purity')})"
                if d.get("tied_phrase") else "; no caption phrase tied to it")
        return f"patch shared by {d.get('images')} images ({d.get('distinct_images')} distinct) at {d.get('box')}{tied}"
    if check == "poison.caption_trigger":
        trig = ", ".join(f"“{t}”" for t in (d.get("trigger") or [])[:3])
        return (f"caption trigger {trig} tied to {d.get('cluster')} ({d.get('cluster_size')} images, "
                f"{d.get('target_records')} of {d.get('support')} trigger captions there; {d.get('mode')}, "
                f"p = 10^{d.get('log10_p')})")
    if check == "poison.caption_mismatch":
        return (f"alignment {d.get('clip_score')} vs corpus median {d.get('corpus_median')} "
                f"(z {d.get('z')}, {d.get('model')})")
    if check == "synthetic.image":
        marks = d.get("marks") or []
        parts = []
        for m in marks[:4]:
            if not isinstance(m, dict):
                continue
            what = m.get("digital_source_type") or m.get("generator") or m.get("key") or m.get("payload") or ""
            extra = f" {m.get('bit_accuracy')} bits" if m.get("mark") == "watermark" else ""
            parts.append(f"{m.get('mark')}: {what}{extra}")
        return "; ".join(parts)
    return str(d.get("error") or d.get("problem") or "")


def gallery(check: str, findings: pl.LazyFrame, limit: int = MAX_GALLERY) -> Markup | None:
    """HTML figures of the findings that carry a thumbnail (escaped, bounded)."""
    rows = (findings.filter(pl.col("detail").str.contains('"thumbnail"', literal=True))
            .sort("score", descending=True, nulls_last=True).head(limit).collect())
    figs = []
    for r in rows.iter_rows(named=True):
        d = _load(r["detail"])
        thumb = safe_data_uri(d.get("thumbnail"))
        if thumb is None:
            continue
        imgs = [Markup('<img src="{}" alt="{}" style="max-width:96px;max-height:96px;border:1px solid #d0d7de">')
                .format(thumb, f"record {r['record_id']}")]
        rep = safe_data_uri(d.get("representative_thumbnail"))
        if rep is not None:
            imgs.append(Markup('<img src="{}" alt="{}" title="kept: {}" style="max-width:96px;max-height:96px;'
                               'border:1px dashed #1a7f37">').format(rep, f"representative {d.get('representative')}",
                                                                      d.get("representative")))
        caption = str(d.get("caption") or "")[:300]
        figs.append(Markup(
            '<figure style="margin:0;width:236px;border:1px solid #d0d7de;border-radius:6px;padding:8px">'
            '<div style="display:flex;gap:6px;align-items:flex-start">{imgs}</div>'
            '<figcaption style="font-size:12px;line-height:1.35;margin-top:6px">'
            '<code>{rid}</code> <span style="color:#57606a">in {shard}</span>'
            '{cap}<div style="color:#57606a;margin-top:4px">{ev}</div></figcaption></figure>').format(
            imgs=Markup("").join(imgs), rid=r["record_id"], shard=r["shard"],
            cap=Markup("<div>“{}”</div>").format(caption) if caption else "",
            ev=_evidence(check, d)))
    if not figs:
        return None
    return Markup('<div style="display:flex;flex-wrap:wrap;gap:12px">{}</div>').format(Markup("").join(figs))


def with_gallery(base: SectionRenderer) -> SectionRenderer:
    """``base``'s section of an image check, without the base64 noise, plus the gallery of flagged images."""

    def image_section(data: CheckData) -> Section:
        full = data.findings
        stripped = lambda: _strip_thumbnails(full())  # noqa: E731
        sec = base(dataclasses.replace(data, findings=stripped, examples=_stripped_examples(data.examples, stripped)))
        pics = gallery(data.check, full())
        if pics is not None:
            block = Block(kind="chart", title="Flagged images", chart=pics, wide=True)
            charts_ = [b for b in sec.blocks if b.kind == "chart"]
            sec.blocks = charts_ + [block] + [b for b in sec.blocks if b.kind != "chart"]
        return sec

    return image_section


def _stripped_examples(examples: list[dict], stripped: Callable[[], pl.LazyFrame]) -> list[dict]:
    """The examples with the thumbnails taken out of their detail."""
    if not examples:
        return examples
    keys = [(e["shard"], e["record_id"]) for e in examples]
    clean = {(r["shard"], r["record_id"]): r["detail"] for r in stripped().filter(
        pl.struct("shard", "record_id").is_in(
            pl.DataFrame({"shard": [k[0] for k in keys], "record_id": [k[1] for k in keys]})
            .to_struct().implode())).collect().iter_rows(named=True)}
    return [{**e, "detail": pretty_detail(clean.get((e["shard"], e["record_id"]), ""))}
            if (e["shard"], e["record_id"]) in clean else e for e in examples]


image_section = report_section("images")(with_gallery(generic_section))
dedup_image_section = report_section("dedup_images")(with_gallery(dedup_family_section))
