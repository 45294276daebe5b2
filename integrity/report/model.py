"""The per-check sections of the HTML report: what a section is made of, the registry of
sections by name (a check names its section in ``report_section``), and the two built-in
renderers (:func:`generic_section`, the ``"findings"`` section any check gets by default, and
:func:`dedup_section`, the duplicate-cluster view that the ``"dedup"`` section builds on).
See :mod:`integrity.report.render` for how sections are chosen and rendered."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import polars as pl
from markupsafe import Markup

from integrity.analysis.details import iter_detail_fields
from integrity.report import charts
from integrity.report.format import COLORS, SEVERITY_RANK, SEVERITY_SERIES, fmt_int, fmt_pct, fmt_score, pretty_detail

MAX_TOP_FINDINGS = 10  # per check, when it has no examples
MAX_TOP_CLUSTERS = 15
HIST_BINS = 20


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]
    numeric: tuple[int, ...] = ()  # right-aligned column indexes
    code: tuple[int, ...] = ()  # monospace column indexes
    note: str = ""


@dataclass
class Block:
    """One piece of a check section. ``kind`` picks the template macro:
    ``chart`` (``chart``: SVG Markup), ``table`` (``table``), ``examples``
    (``examples``: list of example dicts), ``note`` (``text``)."""

    kind: str
    title: str = ""
    chart: Markup | None = None
    table: Table | None = None
    examples: list[dict] = field(default_factory=list)
    text: str = ""
    wide: bool = False


@dataclass
class Section:
    check: str
    anchor: str
    blocks: list[Block] = field(default_factory=list)
    stats: list[tuple[str, str]] = field(default_factory=list)  # (label, value) shown under the title
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class CheckData:
    """What a section renderer gets for one check."""

    check: str
    anchor: str
    counts: dict[str, int]  # severity -> findings
    records_flagged: int
    shard_level: int  # findings with a null record_id
    shards_affected: int
    total_rows: int
    scores: pl.DataFrame  # severity, score (non-null) of every finding of the check
    examples: list[dict]  # rows of examples.parquet for the check (capped)
    has_examples_file: bool
    findings: Callable[[], pl.LazyFrame]  # full findings of the check (with detail), lazily

    @property
    def total(self) -> int:
        return sum(self.counts.values())


SectionRenderer = Callable[[CheckData], Section]
#: the section a check gets when it declares none (or one no module registers)
GENERIC_SECTION = "findings"
#: report sections by name; a check picks one with its ``report_section`` class attribute
#: (:attr:`integrity.checks.base.Check.report_section`)
SECTIONS: dict[str, SectionRenderer] = {}


def report_section(name: str) -> Callable[[SectionRenderer], SectionRenderer]:
    """Register a renderer as the report section ``name`` (checks name it in ``report_section``)."""

    def deco(fn: SectionRenderer) -> SectionRenderer:
        SECTIONS[name] = fn
        return fn

    return deco


def section_named(name: str) -> SectionRenderer:
    """The renderer registered as ``name``; the generic section for a name no module registers."""
    return SECTIONS.get(name) or generic_section


def score_range(scores: pl.DataFrame) -> str:
    """'0.2 – 0.97', or the one value when all scores are equal; '' without scores."""
    if scores.height == 0:
        return ""
    vals = scores["score"].to_numpy()
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return ""
    lo, hi = float(vals.min()), float(vals.max())
    return fmt_score(lo) if lo == hi else f"{fmt_score(lo)} – {fmt_score(hi)}"


def score_histogram(scores: pl.DataFrame, title: str, x_label: str = "score", min_findings: int = 5) -> Markup | None:
    """Score histogram stacked by severity; None when fewer than ``min_findings``
    finite scores or a single distinct value (nothing to see in a histogram)."""
    if scores.height < min_findings:
        return None
    vals = scores["score"].to_numpy()
    finite = np.isfinite(vals)
    if finite.sum() < min_findings:
        return None
    lo, hi = float(vals[finite].min()), float(vals[finite].max())
    if hi <= lo:
        return None
    edges = np.linspace(lo, hi, HIST_BINS + 1)
    sev = scores["severity"].to_numpy()
    series = []
    for key, lab, col in SEVERITY_SERIES:
        mask = finite & (sev == key)
        counts, _ = np.histogram(vals[mask], bins=edges)
        series.append((lab, counts.tolist(), col))
    other = finite & ~np.isin(sev, [s[0] for s in SEVERITY_SERIES])
    if other.any():
        counts, _ = np.histogram(vals[other], bins=edges)
        series.append(("other", counts.tolist(), "#c0c6cc"))
    return charts.histogram_chart(edges.tolist(), series, title=title, x_label=x_label, y_label="findings")


@report_section(GENERIC_SECTION)
def generic_section(data: CheckData) -> Section:
    """Counts, score histogram, examples with highlighted evidence (or top findings)."""
    sec = Section(check=data.check, anchor=data.anchor, counts=dict(data.counts))
    sec.stats = [
        ("findings", fmt_int(data.total)),
        ("records flagged (warn+critical)", fmt_int(data.records_flagged)),
        ("share of records flagged", fmt_pct(data.records_flagged, data.total_rows)),
        ("shards affected", fmt_int(data.shards_affected)),
    ]
    if data.shard_level:
        sec.stats.append(("shard-level findings", fmt_int(data.shard_level)))
    rng = score_range(data.scores)
    if rng:
        sec.stats.append(("score", rng))
    hist = score_histogram(data.scores, title=f"{data.check}: score distribution")
    if hist is not None:
        sec.blocks.append(Block(kind="chart", title="Score distribution", chart=hist))
    if data.examples:
        sec.blocks.append(Block(kind="examples", title="Examples", examples=data.examples, wide=True))
    else:
        top = (
            data.findings()
            .with_columns(
                _sev=pl.col("severity").replace_strict(SEVERITY_RANK, default=9, return_dtype=pl.Int32)
            )
            # ties in file order: the same run directory gives the same report
            .sort(["_sev", "score"], descending=[False, True], nulls_last=True, maintain_order=True)
            .head(MAX_TOP_FINDINGS)
            .collect()
        )
        if top.height:
            why = "" if data.has_examples_file else " (this run has no examples.parquet)"
            sec.blocks.append(
                Block(
                    kind="table",
                    title="Top findings",
                    wide=True,
                    table=Table(
                        headers=["shard", "record", "severity", "score", "detail"],
                        rows=[
                            [
                                r["shard"],
                                r["record_id"] if r["record_id"] is not None else "(shard)",
                                r["severity"],
                                fmt_score(r["score"]),
                                pretty_detail(r["detail"], 400, compact=True),
                            ]
                            for r in top.iter_rows(named=True)
                        ],
                        numeric=(3,),
                        code=(1, 4),
                        note=f"worst {top.height} of {data.total:,} findings by severity, then score{why}",
                    ),
                )
            )
    return sec


#: the top-level ``detail`` fields the duplicate-cluster view reads
CLUSTER_FIELDS = ("cluster", "group_size", "cluster_size", "representative", "representative_shard", "history")


def cluster_view(data: CheckData) -> pl.DataFrame:
    """One row per value of ``detail.cluster`` among the findings of ``data`` (a null row for the
    findings without one): what :func:`dedup_section` and the ``dedup`` section's headline figures
    show, from one pass over the findings that parses each detail once.

    Each slice of parsed details is reduced to a row per cluster as it comes (sums, maxima, the
    first values), and the slices' rows are combined, so memory grows with the clusters, not with
    the findings (800 k findings of ``dedup.near`` held ~600 MB parsed). Distinct members are
    counted only for the clusters that declare no size (``members`` is null for the others).

    The shards of each cluster (``shards``) are counted in the same pass when the findings come
    ordered by shard, as ``findings.parquet`` is: a slice's distinct shards per cluster add up,
    less one where a cluster's shard runs on from one slice into the next. When they do not come
    in that order the view has no ``shards`` column and :func:`dedup_section` counts them in a
    second pass for the clusters its table shows (:func:`cluster_shards`)."""
    partial: list[pl.DataFrame] = []
    member_pairs: list[pl.DataFrame] = []
    last_shard: str | None = None
    by_shard = True  # the findings so far came ordered by shard (no null shard)
    for piece in iter_detail_fields(data.findings(), CLUSTER_FIELDS, keep=("shard", "record_id", "score")):
        if by_shard and piece.height:
            shard = piece["shard"]
            by_shard = (shard.null_count() == 0 and shard.is_sorted()
                        and (last_shard is None or shard[0] >= last_shard))
            last_shard = shard[-1]
        piece = piece.with_columns(_cluster=pl.col("d_cluster"), **_cluster_numbers())
        partial.append(piece.group_by("_cluster", maintain_order=True).agg(
            declared=pl.col("_declared").max(),
            size_any=pl.col("_size_any").max(),
            n=pl.len(),
            history=(pl.col("d_history") == "true").sum(),
            representative=pl.col("d_representative").drop_nulls().first(),
            representative_shard=pl.col("d_representative_shard").drop_nulls().first(),
            sample=pl.col("record_id").drop_nulls().head(5),
            max_score=pl.col("score").max(),
            shards=pl.col("shard").n_unique().cast(pl.UInt32),
            shard_first=pl.col("shard").first(),
            shard_last=pl.col("shard").last(),
        ))
        undeclared = piece.filter(pl.col("_declared").is_null())
        if undeclared.height:
            member_pairs.append(pl.concat([undeclared.select("_cluster", member=pl.col(c))
                                           for c in ("record_id", "d_representative")]).drop_nulls("member").unique())
        if len(partial) >= CLUSTER_COMBINE_EVERY:  # keep the partial rows near one per cluster
            partial = [_combine_clusters(partial)]
            member_pairs = [pl.concat(member_pairs).unique()] if member_pairs else []
    view = _combine_clusters(partial)
    if member_pairs:
        members = pl.concat(member_pairs).unique().group_by("_cluster").agg(members=pl.col("member").n_unique())
        view = view.join(members, on="_cluster", how="left", nulls_equal=True)
    else:
        view = view.with_columns(members=pl.lit(None, dtype=pl.UInt32))
    view = view.drop("shard_first", "shard_last") if by_shard else view.drop("shards", "shard_first", "shard_last")
    return view.with_columns(size=pl.coalesce(pl.col("declared"), pl.col("members").cast(pl.Int64)))


#: slices of parsed details reduced before their per-cluster rows are combined again
CLUSTER_COMBINE_EVERY = 20


def cluster_shards(data: CheckData, clusters: list[str]) -> pl.DataFrame:
    """(``_cluster``, ``shards``): how many shards hold findings of each of ``clusters`` (a few,
    those a table shows), from a second pass over the details, for findings that do not come
    ordered by shard (see :func:`cluster_view`); only their (cluster, shard) pairs are kept (the
    pairs of every cluster are about as many as the findings)."""
    wanted = pl.Series(clusters, dtype=pl.Utf8)
    pairs = [piece.filter(pl.col("d_cluster").is_in(wanted.implode())).select(pl.col("d_cluster").alias("_cluster"),
                                                                                 "shard").unique()
             for piece in iter_detail_fields(data.findings(), ("cluster",), keep=("shard",))]
    if not pairs:
        return pl.DataFrame(schema={"_cluster": pl.Utf8, "shards": pl.UInt32})
    return pl.concat(pairs).group_by("_cluster").agg(shards=pl.col("shard").n_unique())


def _cluster_numbers() -> dict[str, pl.Expr]:
    num = {k: pl.col(f"d_{k}").cast(pl.Int64, strict=False) for k in ("group_size", "cluster_size")}
    return {
        "_declared": pl.coalesce(pl.col("d_group_size").cast(pl.Float64, strict=False),
                                 pl.col("d_cluster_size").cast(pl.Float64, strict=False)).cast(pl.Int64, strict=False),
        # the headline figures read the size the other way round (cluster_size first)
        "_size_any": pl.coalesce(num["cluster_size"], num["group_size"]),
    }


def _combine_clusters(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Per-cluster rows of several slices (in order) combined into one row per cluster."""
    if not parts:
        return pl.DataFrame(schema={"_cluster": pl.Utf8, "declared": pl.Int64, "size_any": pl.Int64, "n": pl.UInt32,
                                    "history": pl.UInt32, "representative": pl.Utf8, "representative_shard": pl.Utf8,
                                    "sample": pl.List(pl.Utf8), "max_score": pl.Float64, "shards": pl.UInt32,
                                    "shard_first": pl.Utf8, "shard_last": pl.Utf8})
    # a cluster's rows in order: where one slice ends on the shard the next starts with, that
    # shard was counted twice (only exact when the findings come ordered by shard)
    run_on = (pl.col("shard_first") == pl.col("shard_last").shift(1)).fill_null(False)
    return pl.concat(parts).group_by("_cluster", maintain_order=True).agg(
        pl.col("declared").max(), pl.col("size_any").max(), pl.col("n").sum(), pl.col("history").sum(),
        pl.col("representative").drop_nulls().first(), pl.col("representative_shard").drop_nulls().first(),
        pl.col("sample").explode().drop_nulls().head(5), pl.col("max_score").max(),
        (pl.col("shards").sum() - run_on.sum()).cast(pl.UInt32).alias("shards"),
        pl.col("shard_first").first(), pl.col("shard_last").last())


def dedup_section(data: CheckData, view: pl.DataFrame | None = None) -> Section:
    """Generic section plus cluster size histogram and the largest clusters (``view``: the
    check's :func:`cluster_view`, computed here when not given)."""
    sec = generic_section(data)
    view = cluster_view(data) if view is None else view
    clusters = view.filter(pl.col("_cluster").is_not_null())
    if clusters.height == 0:
        return sec
    sizes = clusters["size"].drop_nulls().to_numpy()
    smin, smax = int(sizes.min()), int(sizes.max())
    if smax - smin <= 30:
        edges = list(range(smin, smax + 2))
        integer = True
    else:
        edges = np.unique(np.round(np.geomspace(max(1, smin), smax + 1, 16))).tolist()
        integer = False
    counts, _ = np.histogram(sizes, bins=edges)
    chart = charts.histogram_chart(
        edges,
        [("clusters", counts.tolist(), COLORS["bar"])],
        title=f"{data.check}: cluster sizes",
        x_label="records in cluster" + ("" if integer else " (log-spaced bins)"),
        y_label="clusters",
        integer_bins=integer,
    )
    top = clusters.sort(["size", "_cluster"], descending=[True, False]).head(MAX_TOP_CLUSTERS)
    if "shards" not in top.columns:  # the findings did not come ordered by shard: a second pass
        top = top.join(cluster_shards(data, top["_cluster"].to_list()), on="_cluster", how="left", maintain_order="left")
    blocks = [
        Block(kind="chart", title=f"Cluster sizes ({clusters.height:,} clusters)", chart=chart),
        Block(
            kind="table",
            title="Largest clusters",
            wide=True,
            table=Table(
                headers=["cluster", "records", "shards", "kept (representative)", "members (sample)"],
                rows=[
                    [
                        r["_cluster"],
                        fmt_int(r["size"]),
                        fmt_int(r["shards"]),
                        (r["representative"] or "–")
                        + (f" in {r['representative_shard']}" if r["representative_shard"] else ""),
                        ", ".join(str(x) for x in (r["sample"] or [])),
                    ]
                    for r in top.iter_rows(named=True)
                ],
                numeric=(1, 2),
                code=(0, 3, 4),
                note=(
                    f"top {top.height} of {clusters.height:,} clusters by size"
                    if clusters.height > top.height
                    else ""
                ),
            ),
        ),
    ]
    # charts first, then the cluster table, then examples / top findings
    charts_first = [b for b in sec.blocks if b.kind == "chart"]
    rest = [b for b in sec.blocks if b.kind != "chart"]
    sec.blocks = charts_first + blocks[:1] + blocks[1:] + rest
    return sec
