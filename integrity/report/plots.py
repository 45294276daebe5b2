"""Charts rendered to static SVG with matplotlib (SVG backend, Agg selected, no pyplot state, no network).

Used by the HTML report (through :mod:`integrity.report.charts`) and the ops
console. Every function returns a :class:`markupsafe.Markup` holding one
``<svg>`` element that can be inlined in an autoescaped page: all text in it
(titles, labels, legends) is written by matplotlib, which XML-escapes it,
and math-text parsing is off, so untrusted labels (shard names, check names)
can neither inject markup nor be read as TeX. Layout is matplotlib's: the
legend sits in its own band below the axes and their tick labels, the title
above, long labels are truncated, margins are sized from the labels; no text
is hand-placed.
"""
from __future__ import annotations

import io
import itertools
import math
import re
import threading
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # never a GUI backend, even when DISPLAY is set
import matplotlib.ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from markupsafe import Markup  # noqa: E402

# text stays text (small files, selectable); fixed hash salt: the same chart gives the same SVG;
# no math text: a label like "$5 $6" from the data is shown as written
matplotlib.rcParams.update({
    "svg.fonttype": "none",
    "svg.hashsalt": "corpus-integrity",
    "text.parse_math": False,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
})

# colour-blind safe (Okabe-Ito), then matplotlib's tab10 for more series
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
           "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
MAX_LABEL = 32
DPI = 96

_XML_HEAD = re.compile(r"^.*?(?=<svg)", re.S)
_ids = itertools.count(1)
_lock = threading.Lock()  # matplotlib's text layout caches are not thread-safe


def _label(text: object, n: int = MAX_LABEL) -> str:
    s = str(text)
    return s if len(s) <= n else s[: n - 1] + "…"


def fmt(v: float) -> str:
    """Compact number: 1234 -> '1,234', 0.5 -> '0.5', 1.23456 -> '1.23'."""
    v = float(v)
    if math.isnan(v):
        return "–"
    if v.is_integer():
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


def _figure(width: float, height: float, *, left: float = 0.6, right: float = 0.2, top: float = 0.12,
            bottom: float = 0.4) -> Figure:
    """A figure with fixed margins in inches (a layout solver would draw every chart twice; these are drawn
    per request and per report)."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    fig.subplots_adjust(left=min(0.6, left / width), right=1 - right / width, top=1 - top / height,
                        bottom=min(0.7, bottom / height))
    return fig


def _label_margin(labels: Sequence[str]) -> float:
    """Inches of left margin for horizontal-bar labels (about 6 px per character at 9 pt)."""
    return 0.2 + 0.068 * max([len(_label(x)) for x in labels] + [4])


def _legend_band(n: int) -> float:
    """Inches below the axes that a legend of ``n`` entries (4 per row) takes."""
    return 0.0 if n <= 1 else 0.06 + 0.17 * math.ceil(n / 4)


def to_svg(fig: Figure, title: str | None = None) -> Markup:
    """Serialize a figure to one inline ``<svg>`` element (XML header and DOCTYPE stripped).

    Element ids get a per-chart prefix, so several charts inlined in one page
    never share a clip-path id.
    """
    buf = io.StringIO()
    with _lock:
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = _XML_HEAD.sub("", buf.getvalue(), count=1)
    prefix = f"c{next(_ids)}"
    svg = re.sub(r'id="([^"]+)"', rf'id="{prefix}\1"', svg)
    svg = re.sub(r'url\(#([^)]+)\)', rf'url(#{prefix}\1)', svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}\1"', svg)
    attrs = 'class="chart" role="img"'
    if title:
        attrs += f' aria-label="{Markup.escape(title)}"'
    return Markup(svg.replace("<svg ", f"<svg {attrs} ", 1))


def _finish(ax, title: str | None, xlabel: str | None, ylabel: str | None) -> None:
    if title:
        ax.set_title(_label(title, 90), loc="left")
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)


def _legend(ax, n: int) -> None:
    """Legend in its own band below the axes and their tick labels (never over the title or the data)."""
    if n <= 1:
        return
    fig = ax.figure
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 0.0), bbox_transform=fig.transFigure, ncols=min(n, 4),
              fontsize=8, borderaxespad=0.2)


def _count_axis(axis, integer: bool) -> None:
    axis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=integer, nbins=5))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: fmt(v)))


def line_chart(x: Sequence[str], series: dict[str, Sequence[float | None]], *, title: str,
               ylabel: str | None = None, xlabel: str | None = None, width: float = 6.0, height: float = 2.6,
               percent: bool = False, limit: float | None = None, limit_label: str = "threshold",
               max_ticks: int = 8, integer: bool = False, show_title: bool = True) -> Markup:
    """Lines over a categorical x axis (e.g. one point per night), at most ``max_ticks`` x labels shown.

    ``integer``: counts (whole-number y ticks); ``percent``: shares in [0, 1]; ``limit``: a dashed
    threshold line. Fixed margins (room for the title above and the legend below) instead of a layout
    solver: the console draws these per request.
    """
    n_legend = len(series) + (limit is not None)
    fig = _figure(width, height, left=1.0 if percent else 0.75, right=0.25, top=0.35 if show_title else 0.12,
                  bottom=0.32 + (0.2 if xlabel else 0) + _legend_band(n_legend))
    ax = fig.add_subplot()
    idx = list(range(len(x)))
    for i, (name, ys) in enumerate(series.items()):
        vals = [math.nan if v is None else float(v) for v in ys]
        ax.plot(idx, vals, color=PALETTE[i % len(PALETTE)], linewidth=1.5, label=_label(name),
                marker="o" if len(idx) <= 30 else None, markersize=3)
    if limit is not None:
        ax.axhline(limit, color="#c0392b", linestyle="--", linewidth=1, label=limit_label)
    # as many x labels as fit side by side (about 6.5 px per character at 9 pt)
    longest = max([len(_label(v, 16)) for v in x] + [1])
    fit = max(2, int((width - (1.25 if percent else 1.0)) * DPI / (6.5 * longest + 22)))
    step = max(1, math.ceil(len(x) / min(max_ticks, fit)))
    ax.set_xticks(idx[::step], [_label(v, 16) for v in list(x)[::step]])
    if len(idx) == 1:
        ax.set_xlim(-0.5, 0.5)
    if percent:
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    else:
        _count_axis(ax.yaxis, integer)
    ax.set_ylim(bottom=0)
    _finish(ax, title if show_title else None, xlabel, ylabel)
    _legend(ax, n_legend)
    return to_svg(fig, title)


def hbar_chart(labels: Sequence[str], values: Sequence[float], *, title: str, xlabel: str | None = None,
               colors: Sequence[str] | str | None = None, value_labels: Sequence[str] | None = None,
               width: float = 6.0, bar_height: float = 0.26, show_title: bool = False) -> Markup:
    """Horizontal bars, one per label, top to bottom as given; each value written at its bar's end."""
    n = max(len(labels), 1)
    top = 0.35 if show_title else 0.1
    bottom = 0.35 + (0.2 if xlabel else 0)
    fig = _figure(width, top + bottom + bar_height * n, left=_label_margin(labels), top=top, bottom=bottom,
                  right=0.3)
    ax = fig.add_subplot()
    ys = list(range(len(labels)))[::-1]
    bars = ax.barh(ys, [float(v) for v in values], color=colors or PALETTE[0], height=0.7)
    ax.set_yticks(ys, [_label(v) for v in labels])
    ax.bar_label(bars, labels=list(value_labels) if value_labels is not None else [fmt(v) for v in values],
                 padding=3, fontsize=8)
    ax.margins(x=0.18)
    ax.grid(axis="y", visible=False)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: fmt(v)))
    _finish(ax, title if show_title else None, xlabel, None)
    return to_svg(fig, title)


def stacked_hbar_chart(labels: Sequence[str], series: dict[str, Sequence[float]], *, title: str,
                       colors: dict[str, str] | None = None, xlabel: str | None = None, width: float = 7.0,
                       bar_height: float = 0.26, show_title: bool = False) -> Markup:
    """Horizontal bars stacked by series (e.g. findings per check split by severity), legend below."""
    n = max(len(labels), 1)
    top = 0.35 if show_title else 0.1
    bottom = 0.35 + (0.2 if xlabel else 0) + _legend_band(sum(1 for v in series.values() if any(v)))
    fig = _figure(width, top + bottom + bar_height * n, left=_label_margin(labels), top=top, bottom=bottom,
                  right=0.3)
    ax = fig.add_subplot()
    ys = list(range(len(labels)))[::-1]
    left = [0.0] * len(labels)
    shown = 0
    for i, (name, vals) in enumerate(series.items()):
        vals = [float(v) for v in vals]
        if not any(vals):
            continue
        shown += 1
        ax.barh(ys, vals, left=left, color=(colors or {}).get(name, PALETTE[i % len(PALETTE)]), height=0.7,
                label=_label(name))
        left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks(ys, [_label(v) for v in labels])
    for y, total in zip(ys, left):
        ax.annotate(fmt(total), (total, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.margins(x=0.15)
    ax.grid(axis="y", visible=False)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: fmt(v)))
    _finish(ax, title if show_title else None, xlabel, None)
    _legend(ax, shown)
    return to_svg(fig, title)


def histogram_chart(edges: Sequence[float], series: dict[str, Sequence[float]], *, title: str,
                    xlabel: str | None = None, ylabel: str | None = "count", colors: dict[str, str] | None = None,
                    integer_bins: bool = False, width: float = 5.4, height: float = 2.3,
                    show_title: bool = False) -> Markup:
    """Columns over bins (``len(edges) == len(counts) + 1``), stacked by series; with ``integer_bins`` the
    bins are labelled by their integer left edge (e.g. cluster sizes), else the axis shows the edges."""
    n_series = sum(1 for v in series.values() if any(v))
    fig = _figure(width, height, left=0.7 if ylabel else 0.5, top=0.35 if show_title else 0.12,
                  bottom=0.3 + (0.2 if xlabel else 0) + _legend_band(n_series))
    ax = fig.add_subplot()
    nb = max(0, len(edges) - 1)
    if integer_bins:
        xs, widths = list(range(nb)), [0.85] * nb
        align = "center"
    else:
        xs, widths = list(edges[:-1]), [b - a for a, b in zip(edges[:-1], edges[1:])]
        align = "edge"
    bottom = [0.0] * nb
    shown = 0
    for i, (name, counts) in enumerate(series.items()):
        counts = [float(c) for c in counts]
        if not any(counts):
            continue
        shown += 1
        ax.bar(xs, counts, width=widths, bottom=bottom, align=align, label=_label(name),
               color=(colors or {}).get(name, PALETTE[i % len(PALETTE)]), edgecolor="white", linewidth=0.5)
        bottom = [a + b for a, b in zip(bottom, counts)]
    if integer_bins and nb:
        step = max(1, math.ceil(nb / 10))
        labels = [fmt(edges[i]) if edges[i + 1] - edges[i] <= 1 else f"{fmt(edges[i])}+" for i in range(nb)]
        ax.set_xticks(xs[::step], labels[::step])
    ax.grid(axis="x", visible=False)
    _count_axis(ax.yaxis, True)
    _finish(ax, title if show_title else None, xlabel, ylabel)
    _legend(ax, shown)
    return to_svg(fig, title)


def grouped_bar_chart(labels: Sequence[str], series: dict[str, Sequence[float]], *, title: str,
                      ylabel: str | None = None, percent: bool = False, width: float = 6.0,
                      height: float = 2.6, show_title: bool = False) -> Markup:
    """Vertical bars grouped per label (e.g. a shard's distribution beside the reference's), legend below."""
    rotate = len(labels) > 6
    fig = _figure(width, height, left=0.7 if ylabel else 0.5, top=0.35 if show_title else 0.12,
                  bottom=(0.75 if rotate else 0.3) + _legend_band(len(series)))
    ax = fig.add_subplot()
    k = max(len(series), 1)
    w = 0.8 / k
    xs = list(range(len(labels)))
    for i, (name, vals) in enumerate(series.items()):
        ax.bar([x - 0.4 + w * (i + 0.5) for x in xs], [float(v) for v in vals], width=w,
               color=PALETTE[i % len(PALETTE)], label=_label(name))
    step = max(1, math.ceil(len(labels) / 12))
    ax.set_xticks(xs[::step], [_label(v, 14) for v in list(labels)[::step]], rotation=30 if rotate else 0,
                  ha="right" if rotate else "center")
    if percent:
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.grid(axis="x", visible=False)
    _finish(ax, title if show_title else None, None, ylabel)
    _legend(ax, len(series))
    return to_svg(fig, title)


def proportion_bar(parts: Sequence[tuple[str, float, str]], *, title: str, width: float = 7.5) -> Markup:
    """One full-width bar split into (label, value, colour) parts, each labelled with its count and share."""
    parts = [(lab, float(v), col) for lab, v, col in parts if float(v) > 0]
    total = sum(v for _, v, _ in parts) or 1.0
    fig = _figure(width, 0.3 + _legend_band(max(2, len(parts))), left=0.02, right=0.02, top=0.02,
                  bottom=_legend_band(max(2, len(parts))))
    ax = fig.add_subplot()
    left = 0.0
    for lab, v, col in parts:
        ax.barh([0], [v / total], left=left, color=col, height=1.0,
                label=f"{_label(lab, 20)} {fmt(v)} ({100 * v / total:.0f}%)")
        left += v / total
    ax.set_xlim(0, 1)
    ax.set_axis_off()
    _legend(ax, max(2, len(parts)))
    return to_svg(fig, title)


def warm_up() -> None:
    """Draw one tiny chart so the first real one does not pay for font loading (call at start-up)."""
    line_chart(["a", "b"], {"x": [0, 1]}, title="warm-up")
