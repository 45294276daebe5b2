"""The report's charts: inline static SVG drawn by matplotlib (:mod:`integrity.report.plots`).

Every function returns a :class:`markupsafe.Markup` holding one ``<svg>``
element that needs no CSS, no web fonts and no JavaScript, so the report
stays self-contained and printable. Labels may come from scanned data (shard
names, check names) and are untrusted: invisible and bidi characters are
revealed here (:func:`reveal_invisible`), and matplotlib escapes the text it
writes, with math text off. Layout (legends, titles, tick labels) is
matplotlib's; nothing is hand-placed. The report shows each chart's title
in a caption, so the charts carry it only as their accessible label.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

from markupsafe import Markup, escape

from integrity.report import plots

# Characters that change how text around them is displayed or hide themselves:
# bidi overrides/isolates (Trojan Source), zero-width characters, C0/C1
# controls. Scanned data may carry them on purpose; the report shows them as
# visible code points instead of letting them reorder or hide report text.
_INVISIBLE = (
    [c for c in range(0x00, 0x20) if c not in (0x09, 0x0A, 0x0D)]
    + list(range(0x7F, 0xA0))
    + [0x061C, 0x180E, 0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0x2060, 0x2061, 0x2062, 0x2063, 0x2064, 0xFEFF]
    + list(range(0x202A, 0x202F))
    + list(range(0x2066, 0x206A))
)
_REVEAL = {c: f"⟨U+{c:04X}⟩" for c in _INVISIBLE}


def reveal_invisible(text: str) -> str:
    """``text`` with bidi controls, zero-width and control characters shown as ⟨U+XXXX⟩."""
    return text.translate(_REVEAL)


def _e(value: object) -> str:
    return str(escape(reveal_invisible(str(value))))


def fmt_num(value: float) -> str:
    """Compact number: 1234 -> '1,234', 0.5 -> '0.5', 1.23456 -> '1.23'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if float(value).is_integer():
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def nice_max(value: float, integer: bool = False) -> float:
    """The smallest 'round' number (1, 2, 2.5, 5 × 10^k) that is >= value.

    With ``integer`` the result is a multiple of 4 (so the four grid steps
    of a count axis fall on whole numbers)."""
    if integer:
        need = max(1.0, value / 4)
        exp = 10 ** max(0, math.floor(math.log10(need)) - 1)
        for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100):
            step = m * exp
            if step == int(step) and step >= need:
                return float(step * 4)
        return float(math.ceil(need) * 4)  # pragma: no cover
    if value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        cand = m * 10**exp
        if cand >= value - 1e-12:
            return float(cand)
    return float(10 ** (exp + 1))


def _lab(value: object) -> str:
    return reveal_invisible(str(value))


def hbar_chart(
    items: Sequence[tuple[str, float]],
    *,
    title: str,
    value_fmt: Callable[[float], str] = fmt_num,
    color: str = "#4c78a8",
    width: int = 640,
    label_width: int = 150,
    bar_height: int = 18,
    colors: Sequence[str] | None = None,
    x_label: str | None = None,
) -> Markup:
    """Horizontal bars, one per (label, value); the value, formatted by ``value_fmt``, after the bar.

    ``width`` is in CSS pixels; ``label_width`` is kept for callers (matplotlib sizes the labels).
    """
    items = list(items)
    n = len(items)
    bar_colors = [colors[i % len(colors)] for i in range(n)] if colors else color
    return plots.hbar_chart([_lab(k) for k, _ in items], [float(v) for _, v in items], title=title,
                            colors=bar_colors, value_labels=[value_fmt(float(v)) for _, v in items], xlabel=x_label,
                            width=width / plots.DPI, bar_height=max(0.2, (bar_height + 6) / plots.DPI))


def stacked_hbar_chart(
    rows: Sequence[tuple[str, dict[str, float]]],
    series: Sequence[tuple[str, str, str]],
    *,
    title: str,
    width: int = 720,
    label_width: int = 170,
    bar_height: int = 18,
) -> Markup:
    """One horizontal bar per row, stacked by ``series`` = [(key, label, colour)], legend below."""
    rows = list(rows)
    return plots.stacked_hbar_chart(
        [_lab(k) for k, _ in rows],
        {lab: [float(d.get(key) or 0) for _, d in rows] for key, lab, _ in series},
        colors={lab: col for _, lab, col in series}, title=title, width=width / plots.DPI,
        bar_height=max(0.2, (bar_height + 6) / plots.DPI))


def histogram_chart(
    edges: Sequence[float],
    series: Sequence[tuple[str, Sequence[float], str]],
    *,
    title: str,
    x_label: str = "",
    y_label: str = "count",
    width: int = 520,
    height: int = 200,
    integer_bins: bool = False,
) -> Markup:
    """Column histogram stacked by ``series`` = [(label, counts per bin, colour)].

    ``edges`` has one more entry than each counts list. With ``integer_bins``
    the bins are labelled by their (integer) left edge, e.g. cluster sizes.
    """
    return plots.histogram_chart(list(edges), {lab: list(c) for lab, c, _ in series}, title=title,
                                 xlabel=x_label or None, ylabel=y_label or None,
                                 colors={lab: col for lab, _, col in series}, integer_bins=integer_bins,
                                 width=width / plots.DPI, height=height / plots.DPI)


def proportion_bar(
    parts: Sequence[tuple[str, float, str]], *, title: str, width: int = 720, height: int = 14
) -> Markup:
    """One full-width bar split into (label, value, colour) parts, e.g. verdict shares, with a legend."""
    return plots.proportion_bar([(_lab(k), v, c) for k, v, c in parts], title=title, width=width / plots.DPI)
