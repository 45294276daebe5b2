"""Small inline-SVG charts for the HTML report, rendered server-side.

Every function returns a :class:`markupsafe.Markup` holding one ``<svg>``
element that needs no CSS, no fonts beyond the system sans-serif and no
JavaScript, so the report stays self-contained and printable. All text that
ends up in the SVG (labels, tooltips) is escaped here: labels may come from
scanned data (shard names, check names) and are untrusted.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

from markupsafe import Markup, escape

FONT = "font-family=\"system-ui,-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif\""
AXIS = "#8c959f"
GRID = "#e6e8eb"
TEXT = "#24292f"
MUTED = "#57606a"


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


def _truncate(label: str, n: int) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def _svg_open(width: int, height: int, title: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'aria-label="{_e(title)}" {FONT} font-size="12">',
        f"<title>{_e(title)}</title>",
    ]


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
) -> Markup:
    """Horizontal bars, one per (label, value); the value is printed after the bar."""
    items = list(items)
    gap = 6
    top = 4
    height = top + max(1, len(items)) * (bar_height + gap) + 4
    value_room = 90
    plot_w = max(60, width - label_width - value_room)
    vmax = max([v for _, v in items if v is not None] + [0]) or 1.0
    out = _svg_open(width, height, title)
    for i, (label, value) in enumerate(items):
        y = top + i * (bar_height + gap)
        v = value or 0.0
        w = max(0.0, plot_w * v / vmax)
        if v > 0:
            w = max(w, 1.5)
        c = colors[i] if colors else color
        out.append(
            f'<text x="{label_width - 8}" y="{y + bar_height * 0.72:.1f}" text-anchor="end" '
            f'fill="{TEXT}">{_e(_truncate(label, 24))}</text>'
        )
        out.append(
            f'<rect x="{label_width}" y="{y}" width="{w:.1f}" height="{bar_height}" rx="2" fill="{c}">'
            f"<title>{_e(label)}: {_e(value_fmt(v))}</title></rect>"
        )
        out.append(
            f'<text x="{label_width + w + 6:.1f}" y="{y + bar_height * 0.72:.1f}" '
            f'fill="{MUTED}">{_e(value_fmt(v))}</text>'
        )
    out.append("</svg>")
    return Markup("".join(out))


def stacked_hbar_chart(
    rows: Sequence[tuple[str, dict[str, float]]],
    series: Sequence[tuple[str, str, str]],
    *,
    title: str,
    width: int = 720,
    label_width: int = 170,
    bar_height: int = 18,
) -> Markup:
    """One horizontal bar per row, stacked by ``series`` = [(key, label, colour)], with a legend."""
    rows = list(rows)
    gap = 6
    legend_h = 24
    top = legend_h + 4
    height = top + max(1, len(rows)) * (bar_height + gap) + 4
    value_room = 80
    plot_w = max(60, width - label_width - value_room)
    totals = [sum(max(0.0, float(vals.get(k, 0) or 0)) for k, _, _ in series) for _, vals in rows]
    vmax = max(totals + [0]) or 1.0
    out = _svg_open(width, height, title)
    # legend
    lx = label_width
    for _, lab, col in series:
        out.append(f'<rect x="{lx}" y="6" width="12" height="12" rx="2" fill="{col}"/>')
        out.append(f'<text x="{lx + 16}" y="16" fill="{MUTED}">{_e(lab)}</text>')
        lx += 24 + 7 * len(lab) + 12
    for i, ((label, vals), total) in enumerate(zip(rows, totals)):
        y = top + i * (bar_height + gap)
        out.append(
            f'<text x="{label_width - 8}" y="{y + bar_height * 0.72:.1f}" text-anchor="end" '
            f'fill="{TEXT}">{_e(_truncate(label, 26))}</text>'
        )
        x = float(label_width)
        for key, lab, col in series:
            v = max(0.0, float(vals.get(key, 0) or 0))
            if v <= 0:
                continue
            w = max(1.5, plot_w * v / vmax)
            out.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_height}" fill="{col}">'
                f"<title>{_e(label)} · {_e(lab)}: {_e(fmt_num(v))}</title></rect>"
            )
            x += w
        out.append(
            f'<text x="{x + 6:.1f}" y="{y + bar_height * 0.72:.1f}" fill="{MUTED}">{_e(fmt_num(total))}</text>'
        )
    out.append("</svg>")
    return Markup("".join(out))


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
    nbins = max(0, len(edges) - 1)
    left, right, top, bottom = 46, 12, 10, 40
    legend = [s for s in series if any(c for c in s[1])]
    if len(series) > 1:
        top += 18
    plot_w = width - left - right
    plot_h = height - top - bottom
    totals = [sum(float(s[1][i]) for s in series) for i in range(nbins)]
    ymax = nice_max(max(totals + [0]), integer=True)
    out = _svg_open(width, height, title)
    if len(series) > 1:
        lx = left
        for lab, _, col in legend or series:
            out.append(f'<rect x="{lx}" y="4" width="12" height="12" rx="2" fill="{col}"/>')
            out.append(f'<text x="{lx + 16}" y="14" fill="{MUTED}">{_e(lab)}</text>')
            lx += 24 + 7 * len(lab) + 10
    # grid + y ticks
    for k in range(5):
        v = ymax * k / 4
        y = top + plot_h - plot_h * k / 4
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        out.append(
            f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end" font-size="10" fill="{MUTED}">{_e(fmt_num(v))}</text>'
        )
    if nbins:
        bw = plot_w / nbins
        for i in range(nbins):
            x = left + i * bw
            y = top + plot_h
            lo, hi = edges[i], edges[i + 1]
            rng = f"{fmt_num(lo)}" if integer_bins and hi - lo <= 1 else f"{fmt_num(lo)}–{fmt_num(hi)}"
            for lab, counts, col in series:
                c = float(counts[i])
                if c <= 0:
                    continue
                h = max(1.0, plot_h * c / ymax)
                y -= h
                out.append(
                    f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(1.0, bw - 2):.1f}" height="{h:.1f}" fill="{col}">'
                    f"<title>{_e(rng)}: {_e(fmt_num(c))} {_e(lab)}</title></rect>"
                )
        # x tick labels: at most ~8 labels
        step = max(1, math.ceil(nbins / 8))
        for i in range(0, nbins + (0 if integer_bins else 1), step):
            if integer_bins:
                x = left + (i + 0.5) * bw
                lab = fmt_num(edges[i]) if edges[i + 1] - edges[i] <= 1 else f"{fmt_num(edges[i])}+"
            else:
                x = left + i * bw
                lab = fmt_num(edges[i])
            out.append(
                f'<text x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle" font-size="10" fill="{MUTED}">{_e(lab)}</text>'
            )
    out.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="{AXIS}"/>'
    )
    if x_label:
        out.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle" fill="{MUTED}">{_e(x_label)}</text>'
        )
    if y_label:
        out.append(
            f'<text x="12" y="{top + plot_h / 2:.1f}" text-anchor="middle" fill="{MUTED}" '
            f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">{_e(y_label)}</text>'
        )
    out.append("</svg>")
    return Markup("".join(out))


def proportion_bar(
    parts: Sequence[tuple[str, float, str]], *, title: str, width: int = 720, height: int = 14
) -> Markup:
    """One full-width bar split into (label, value, colour) parts, e.g. verdict shares."""
    total = sum(max(0.0, float(v)) for _, v, _ in parts) or 1.0
    out = _svg_open(width, height, title)
    x = 0.0
    for lab, v, col in parts:
        v = max(0.0, float(v))
        if v <= 0:
            continue
        w = max(2.0, width * v / total)
        out.append(
            f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{height}" fill="{col}">'
            f"<title>{_e(lab)}: {_e(fmt_num(v))} ({100 * v / total:.1f}%)</title></rect>"
        )
        x += w
    out.append("</svg>")
    return Markup("".join(out))
