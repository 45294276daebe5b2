"""Charts rendered to static SVG with matplotlib (Agg-free SVG backend, no pyplot state, no network).

Used by the HTML report and the ops console. Every function returns a
:class:`markupsafe.Markup` holding one ``<svg>`` element that can be inlined
in an autoescaped Jinja2 page: all text in it (titles, labels, legends)
comes from matplotlib, which escapes it, so untrusted labels (shard names,
check names) cannot inject markup. Layout is matplotlib's
(``constrained_layout``): legends sit outside the axes, under the title,
and long tick labels are truncated, so nothing is hand-placed and nothing
overlaps.
"""
from __future__ import annotations

import io
import math
import re
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # never a GUI backend, even when DISPLAY is set
import matplotlib.ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from markupsafe import Markup  # noqa: E402

# text stays text (small files, selectable); fixed hash salt: the same chart gives the same SVG
matplotlib.rcParams.update({
    "svg.fonttype": "none",
    "svg.hashsalt": "corpus-integrity",
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
SEVERITY_COLORS = {"critical": "#c0392b", "warn": "#e67e22", "info": "#7f8c8d"}
VERDICT_COLORS = {"quarantine": "#c0392b", "unreadable": "#8e44ad", "warn": "#e67e22", "pass": "#27ae60"}
MAX_LABEL = 32

_XML_HEAD = re.compile(r"^.*?(?=<svg)", re.S)
_svg_counter = 0


def _label(text: object, n: int = MAX_LABEL) -> str:
    s = str(text)
    return s if len(s) <= n else s[: n - 1] + "…"


def _figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    return Figure(figsize=(width, height), dpi=96, layout=layout)


def to_svg(fig: Figure, title: str | None = None) -> Markup:
    """Serialize a figure to one inline ``<svg>`` element (XML header and DOCTYPE stripped).

    Element ids are prefixed uniquely per call, so several charts inlined in
    one page never share a clip-path id.
    """
    global _svg_counter
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = _XML_HEAD.sub("", buf.getvalue(), count=1)
    _svg_counter += 1
    prefix = f"c{_svg_counter}"
    svg = re.sub(r'id="([^"]+)"', rf'id="{prefix}\1"', svg)
    svg = re.sub(r'url\(#([^)]+)\)', rf'url(#{prefix}\1)', svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}\1"', svg)
    attrs = 'class="chart" role="img"'
    if title:
        attrs += f' aria-label="{Markup.escape(title)}"'
    svg = svg.replace("<svg ", f"<svg {attrs} ", 1)
    return Markup(svg)


def _finish(ax, title: str | None, xlabel: str | None, ylabel: str | None) -> None:
    if title:
        ax.set_title(title, loc="left")
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)


def _legend(ax, n: int) -> None:
    """Legend below the axes and their tick labels (never over the title or the data)."""
    if n > 1:
        fig = ax.figure
        if fig.get_layout_engine() is not None:  # the layout engine makes room for an "outside" legend
            fig.legend(loc="outside lower center", ncols=min(n, 4), fontsize=8)
            return
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 0.0), bbox_transform=fig.transFigure, ncols=min(n, 4),
                  fontsize=8, borderaxespad=0.2)


def line_chart(x: Sequence[str], series: dict[str, Sequence[float | None]], *, title: str,
               ylabel: str | None = None, xlabel: str | None = None, width: float = 6.0, height: float = 2.6,
               percent: bool = False, limit: float | None = None, limit_label: str = "threshold",
               max_ticks: int = 8, integer: bool = False) -> Markup:
    """Lines over a categorical x axis (e.g. one point per night), at most ``max_ticks`` x labels shown.

    ``integer``: counts (whole-number y ticks); ``percent``: shares in [0, 1]. Fixed margins (room for
    the title above and the legend below) instead of a layout solver: these charts are drawn per request.
    """
    fig = _figure(width, height, layout=None)
    n_legend = len(series) + (limit is not None)
    rows = math.ceil(n_legend / 4) if n_legend > 1 else 0
    bottom = (0.32 + 0.14 * rows) / height
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.15 / width, top=1 - 0.35 / height, bottom=bottom)
    ax = fig.add_subplot()
    idx = list(range(len(x)))
    for i, (name, ys) in enumerate(series.items()):
        vals = [math.nan if v is None else float(v) for v in ys]
        ax.plot(idx, vals, color=PALETTE[i % len(PALETTE)], linewidth=1.5, label=_label(name),
                marker="o" if len(idx) <= 30 else None, markersize=3)
    if limit is not None:
        ax.axhline(limit, color="#c0392b", linestyle="--", linewidth=1, label=limit_label)
    step = max(1, math.ceil(len(x) / max_ticks))
    ax.set_xticks(idx[::step], [_label(v, 16) for v in list(x)[::step]], rotation=0)
    if percent:
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    else:
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=integer, nbins=5))
    ax.set_ylim(bottom=0)
    _finish(ax, title, xlabel, ylabel)
    _legend(ax, n_legend)
    return to_svg(fig, title)


def hbar_chart(labels: Sequence[str], values: Sequence[float], *, title: str, xlabel: str | None = None,
               colors: Sequence[str] | str | None = None, width: float = 6.0, bar_height: float = 0.28) -> Markup:
    """Horizontal bars, one per label, biggest first as given; values written at the bar ends."""
    n = max(len(labels), 1)
    fig = _figure(width, 0.8 + bar_height * n)
    ax = fig.add_subplot()
    ys = list(range(len(labels)))[::-1]
    bars = ax.barh(ys, list(values), color=colors or PALETTE[0], height=0.7)
    ax.set_yticks(ys, [_label(v) for v in labels])
    ax.bar_label(bars, labels=[_fmt(v) for v in values], padding=3, fontsize=8)
    ax.margins(x=0.15)
    ax.grid(axis="y", visible=False)
    _finish(ax, title, xlabel, None)
    return to_svg(fig, title)


def stacked_hbar_chart(labels: Sequence[str], series: dict[str, Sequence[float]], *, title: str,
                       colors: dict[str, str] | None = None, xlabel: str | None = None, width: float = 6.0,
                       bar_height: float = 0.28) -> Markup:
    """Horizontal stacked bars (e.g. findings per check split by severity), legend below."""
    n = max(len(labels), 1)
    fig = _figure(width, 1.2 + bar_height * n)
    ax = fig.add_subplot()
    ys = list(range(len(labels)))[::-1]
    left = [0.0] * len(labels)
    for i, (name, vals) in enumerate(series.items()):
        vals = [float(v) for v in vals]
        color = (colors or {}).get(name, PALETTE[i % len(PALETTE)])
        ax.barh(ys, vals, left=left, color=color, height=0.7, label=_label(name))
        left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks(ys, [_label(v) for v in labels])
    for y, total in zip(ys, left):
        ax.text(total, y, " " + _fmt(total), va="center", fontsize=8)
    ax.margins(x=0.15)
    ax.grid(axis="y", visible=False)
    _finish(ax, title, xlabel, None)
    _legend(ax, len(series))
    return to_svg(fig, title)


def histogram_chart(counts: Sequence[float], edges: Sequence[float], *, title: str, xlabel: str = "score",
                    ylabel: str = "findings", threshold: float | None = None, width: float = 5.0,
                    height: float = 2.2, color: str | None = None) -> Markup:
    """A histogram from precomputed bin ``counts`` over ``edges`` (len(edges) == len(counts) + 1)."""
    fig = _figure(width, height)
    ax = fig.add_subplot()
    widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
    ax.bar(list(edges[:-1]), list(counts), width=widths, align="edge", color=color or PALETTE[0],
           edgecolor="white", linewidth=0.5)
    if threshold is not None:
        ax.axvline(threshold, color="#c0392b", linestyle="--", linewidth=1, label="threshold")
        ax.legend(loc="upper right", fontsize=8)
    _finish(ax, title, xlabel, ylabel)
    return to_svg(fig, title)


def grouped_bar_chart(labels: Sequence[str], series: dict[str, Sequence[float]], *, title: str,
                      ylabel: str | None = None, percent: bool = False, width: float = 6.0,
                      height: float = 2.6) -> Markup:
    """Vertical bars grouped per label (e.g. a shard's distribution beside the reference's)."""
    fig = _figure(width, height)
    ax = fig.add_subplot()
    k = max(len(series), 1)
    w = 0.8 / k
    xs = list(range(len(labels)))
    for i, (name, vals) in enumerate(series.items()):
        ax.bar([x - 0.4 + w * (i + 0.5) for x in xs], [float(v) for v in vals], width=w,
               color=PALETTE[i % len(PALETTE)], label=_label(name))
    step = max(1, math.ceil(len(labels) / 12))
    ax.set_xticks(xs[::step], [_label(v, 12) for v in list(labels)[::step]],
                  rotation=30 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
    if percent:
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.grid(axis="x", visible=False)
    _finish(ax, title, None, ylabel)
    _legend(ax, len(series))
    return to_svg(fig, title)


def warm_up() -> None:
    """Draw one tiny chart so the first real one does not pay for font loading (call at start-up)."""
    line_chart(["a", "b"], {"x": [0, 1]}, title="warm-up")


def _fmt(v: float) -> str:
    v = float(v)
    if v.is_integer():
        return f"{int(v):,}"
    return f"{v:.3g}"
