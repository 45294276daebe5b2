"""Formatting helpers of the HTML report: its vocabulary (severity and verdict order,
colours), numbers, sizes, durations, times, finding details and highlighted excerpts. Everything returned is plain text; the report's
template escapes it."""
from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

MAX_DETAIL_CHARS = 1200
MAX_EXCERPT_CHARS = 1600

SEVERITIES = ("critical", "warn", "info")  # worst first
VERDICTS = ("quarantine", "unreadable", "warn", "pass")  # worst first
VERDICT_RANK = {v: i for i, v in enumerate(VERDICTS)}
SEVERITY_RANK = {"critical": 0, "warn": 1, "info": 2}

COLORS = {
    "pass": "#1a7f37",
    "warn": "#b35c00",
    "fail": "#c62828",
    "quarantine": "#c62828",
    "unreadable": "#6f42c1",
    "critical": "#c62828",
    "info": "#6e7781",
    "bar": "#4c78a8",
}
SEVERITY_SERIES = [
    ("critical", "critical", COLORS["critical"]),
    ("warn", "warn", "#e3a008"),
    ("info", "info", "#9aa4b1"),
]
TIMING_STAGES = ("list", "shards", "corpus", "policy", "quarantine", "report")


def human_bytes(n: Any) -> str:
    if n is None:
        return "–"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def fmt_int(n: Any) -> str:
    if n is None:
        return "–"
    try:
        return f"{int(n):,}"
    except (TypeError, ValueError):
        return str(n)


def fmt_duration(s: Any) -> str:
    if s is None:
        return "–"
    try:
        s = float(s)
    except (TypeError, ValueError):
        return str(s)
    if math.isnan(s):
        return "–"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def fmt_pct(part: Any, whole: Any) -> str:
    if not whole or part is None:
        return "–"
    p = 100.0 * float(part) / float(whole)
    if p == 0:
        return "0%"
    if p < 0.01:
        return "<0.01%"
    if p < 1:
        return f"{p:.2f}%"
    return f"{p:.1f}%"


def fmt_score(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def fmt_time(iso: Any) -> str:
    if not iso:
        return "–"
    try:
        dt = datetime.fromisoformat(str(iso).replace("Z", "+00:00"))
    except ValueError:
        return str(iso)
    tz = dt.strftime("%Z") or ""
    if tz in ("UTC+00:00",):
        tz = "UTC"
    return (dt.strftime("%Y-%m-%d %H:%M:%S") + (f" {tz}" if tz else "")).strip()


def _truncate(s: Any, n: int) -> str:
    s = "" if s is None else str(s)
    return s if len(s) <= n else s[: n - 1] + "…"


def pretty_detail(detail: Any, limit: int = MAX_DETAIL_CHARS, compact: bool = False) -> str:
    """The detail JSON, indented (or on one line with ``compact``); the raw
    string when it is not JSON; truncated to ``limit`` characters."""
    if detail is None or detail == "":
        return ""
    try:
        obj = json.loads(detail)
        if compact:
            text = json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(", ", ": "))
        else:
            text = json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        text = str(detail)
    if len(text) > limit:
        text = text[:limit] + f"{' ' if compact else chr(10)}… ({len(text) - limit:,} more characters)"
    return text


def anchor(check: str, taken: set[str]) -> str:
    base = "check-" + (re.sub(r"[^a-z0-9]+", "-", check.lower()).strip("-") or "x")
    a, i = base, 2
    while a in taken:
        a, i = f"{base}-{i}", i + 1
    taken.add(a)
    return a


def highlight_segments(excerpt: Any, highlights: Any, limit: int = MAX_EXCERPT_CHARS) -> list[tuple[str, bool]]:
    """Split ``excerpt`` into (text, highlighted) pieces from ``highlights`` (JSON [[start, end], ...]).

    Spans are clamped to the excerpt, sorted and merged; invalid input gives no
    highlight. A long excerpt is cut to a window of ``limit`` characters around
    the first highlight, with "…" marking the cuts.
    """
    text = "" if excerpt is None else str(excerpt)
    spans: list[list[int]] = []
    raw = highlights
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = []
    if isinstance(raw, (list, tuple)):
        for item in raw:
            try:
                s, e = int(item[0]), int(item[1])
            except (TypeError, ValueError, IndexError, KeyError):
                continue
            s, e = max(0, s), min(len(text), e)
            if e > s:
                spans.append([s, e])
    spans.sort()
    merged: list[list[int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    lo, hi = 0, len(text)
    if len(text) > limit:
        first = merged[0][0] if merged else 0
        lo = max(0, min(first - limit // 4, len(text) - limit))
        hi = lo + limit
    out: list[tuple[str, bool]] = []
    if lo > 0:
        out.append(("… ", False))
    pos = lo
    for s, e in merged:
        s, e = max(s, lo), min(e, hi)
        if e <= s:
            continue
        if s > pos:
            out.append((text[pos:s], False))
        out.append((text[s:e], True))
        pos = e
    if pos < hi:
        out.append((text[pos:hi], False))
    if hi < len(text):
        out.append((" …", False))
    return out
