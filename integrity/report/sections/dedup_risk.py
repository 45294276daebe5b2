"""Report sections ``dedup`` (declared by the text ``dedup.*`` checks), ``memorization``
(``memorization.risk``) and ``contamination`` (``contamination.eval``).

* ``dedup``: the cluster-size histogram and largest clusters of
  :func:`integrity.report.model.dedup_section`, plus headline figures (records in
  clusters, largest cluster, share of records duplicated), examples ordered
  largest cluster first, and for ``dedup.semantic`` the model, the similarity
  range and the share of records the CPU budget embedded;
* ``memorization.risk``: the risk distribution, what drives it (duplicated
  private data, duplicated clean text, repeated spans), records by number of
  copies, and the riskiest records;
* ``contamination.eval``: hits by benchmark (records, distinct test items,
  critical records, worst coverage), a bar chart, unreadable benchmarks, and the
  examples with the overlapping spans highlighted.

Everything comes from the findings' ``detail`` JSON (the report reads only the
run directory); labels from data are escaped by :mod:`integrity.report.charts` and the
template.
"""
from __future__ import annotations

import json
from typing import Any

import polars as pl

from integrity.analysis.shard_groups import shard_group_frames
from integrity.report import charts
from integrity.report.format import COLORS, fmt_int, fmt_pct, fmt_score
from integrity.report.model import (MAX_TOP_CLUSTERS, Block, CheckData, Section, Table, cluster_view, dedup_section,
                                    generic_section, report_section)

MAX_TOP_RECORDS = 12
MAX_BENCHMARKS = 20
COPY_BUCKETS = [(2, 2, "2"), (3, 4, "3–4"), (5, 9, "5–9"), (10, 99, "10–99"), (100, None, "100+")]


def _j(path: str) -> pl.Expr:
    return pl.col("detail").str.json_path_match(path)


def _example_cluster(ex: dict) -> tuple[str, float]:
    try:
        d = json.loads(ex.get("detail") or "{}")
    except ValueError:
        return "", 0.0
    if not isinstance(d, dict):
        return "", 0.0
    size = d.get("cluster_size", d.get("group_size")) or 0
    try:
        return str(d.get("cluster") or ""), float(size)
    except (TypeError, ValueError):
        return str(d.get("cluster") or ""), 0.0


def _move_to_front(sec: Section, blocks: list[Block]) -> None:
    """Charts first, then ``blocks``, then the rest (tables, examples)."""
    charts_ = [b for b in sec.blocks if b.kind == "chart"]
    rest = [b for b in sec.blocks if b.kind != "chart"]
    sec.blocks = charts_ + blocks + rest


# --------------------------------------------------------------------------- dedup.*


@report_section("dedup")
def dedup_family_section(data: CheckData) -> Section:
    """Cluster histogram and largest clusters (the report's dedup view), headline
    figures, and examples ordered by the size of their cluster."""
    view = cluster_view(data)
    sec = dedup_section(data, view)
    findings = int(view["n"].sum())
    if findings and view["_cluster"].drop_nulls().len():
        in_clusters = int(view.select(pl.coalesce("size_any", pl.col("n") + 1)).to_series().sum())
        stats = [("clusters", fmt_int(view.height)), ("records in clusters (kept ones included)", fmt_int(in_clusters)),
                 ("largest cluster", fmt_int(view["size_any"].max() or view["n"].max() + 1)),
                 ("records to drop", fmt_int(findings) + f" ({fmt_pct(findings, data.total_rows)} of the scan)")]
        hist = int(view["history"].sum())
        if hist:
            stats.append(("duplicates of earlier nights", fmt_int(hist)))
        sec.stats.extend(stats)
    if data.check == "dedup.semantic" and findings:
        share_expr = _j("$.embedded_share").cast(pl.Float64, strict=False)
        extra = data.findings().select(model=_j("$.model"), share=share_expr).head(1).collect()
        if extra.height:
            model, share = extra["model"][0], extra["share"][0]
            sec.stats.append(("model", str(model or "–")))
            if share is not None:
                sec.stats.append(("records embedded", fmt_pct(share, 1.0)))
                if share < 1.0:
                    sec.blocks.append(Block(kind="note", text=(
                        f"The CPU budget embedded {fmt_pct(share, 1.0)} of the records (a deterministic sample by "
                        "content hash, see cpu_max_records): large clusters of paraphrases are found, but a "
                        "pair is found only when both of its records were sampled. Run on a GPU, or raise the "
                        "budget, for every pair.")))
    # examples: largest cluster first, so the top clusters come with their text
    for b in sec.blocks:
        if b.kind == "examples" and b.examples:
            b.examples = sorted(b.examples, key=lambda ex: -_example_cluster(ex)[1])
            b.title = "Examples (largest clusters first; detail names the kept record)"
    return sec


# --------------------------------------------------------------------------- memorization.risk


@report_section("memorization")
def memorization_section(data: CheckData) -> Section:
    """Risk distribution, its drivers, records by copies, riskiest records."""
    sec = generic_section(data)
    for b in sec.blocks:
        if b.kind == "chart" and b.title == "Score distribution":
            b.title = "Risk distribution"
    figures = _memorization_figures(data.findings())
    if figures is None:
        return sec
    n, private, dup_clean, span_only, history, counts, top = figures
    drivers = [
        ("duplicated private data", private),
        ("duplicated clean text", dup_clean),
        ("repeated spans only", span_only),
    ]
    sec.stats.extend([("records at risk", fmt_int(n)),
                      ("with private data", fmt_int(private)),
                      ("copies from earlier nights", fmt_int(history))])
    blocks = [Block(kind="chart", title="What drives the risk", chart=charts.hbar_chart(
        [(k, float(v)) for k, v in drivers], title="records at risk by driver", label_width=190,
        value_fmt=lambda v: fmt_int(v),
        colors=[COLORS["critical"], COLORS["bar"], "#9aa4b1"]))]
    if any(v for _, v in counts):
        blocks.append(Block(kind="chart", title="Records by number of copies", chart=charts.hbar_chart(
            counts, title="records by copies of their content", value_fmt=lambda v: fmt_int(v))))
    blocks.append(Block(kind="table", title="Riskiest records", wide=True, table=Table(
        headers=["shard", "record", "severity", "risk", "copies", "private data", "repeated span share"],
        rows=[[r["shard"], r["record_id"], r["severity"] or "", fmt_score(r["score"]),
               fmt_score(r["copies"]) + (" (incl. earlier nights)" if r["history"] else ""),
               _kinds(r["kinds"]), "–" if r["span"] is None else fmt_pct(r["span"], 1.0)]
              for r in top.iter_rows(named=True)],
        numeric=(3, 4), code=(0, 1),
        note=f"top {top.height} of {n:,} by risk" if n > top.height else "")))
    _move_to_front(sec, blocks)
    return sec


def _memorization_figures(findings: pl.LazyFrame):
    """(records, with private data, duplicated clean text, repeated spans only, copies from earlier
    nights, records by copies, riskiest records) of ``memorization.risk``'s findings, None without
    any. Read a group of shards at a time
    (:func:`~integrity.analysis.shard_groups.shard_group_frames`): counts are summed and each
    group's riskiest records kept, so the details of every finding are never parsed at once."""
    n = private = dup_clean = span_only = history = 0
    buckets = [0] * len(COPY_BUCKETS)
    tops: list[pl.DataFrame] = []
    order = dict(by=["score", "copies"], descending=True, nulls_last=True, maintain_order=True)
    for group in shard_group_frames(findings):
        f = group.select(
            "shard", "record_id", "severity", "score",
            copies=_j("$.copies").cast(pl.Float64, strict=False),
            privacy=_j("$.privacy_score").cast(pl.Float64, strict=False).fill_null(0.0),
            kinds=_j("$.privacy_kinds"),
            span=_j("$.span_share").cast(pl.Float64, strict=False),
            history=(_j("$.history") == "true").fill_null(False),
        ).collect()
        if f.height == 0:
            continue
        dup = pl.col("copies").fill_null(1.0) > 1.0
        n += f.height
        private += f.filter(pl.col("privacy") > 0).height
        dup_clean += f.filter((pl.col("privacy") == 0) & dup).height
        span_only += f.filter((pl.col("privacy") == 0) & ~dup).height
        history += int(f["history"].sum())
        copies = f["copies"].fill_null(1.0).to_numpy()
        for i, (lo, hi, _) in enumerate(COPY_BUCKETS):
            m = copies >= lo if hi is None else (copies >= lo) & (copies <= hi + 0.999)
            buckets[i] += int(m.sum())
        tops.append(f.sort(**order).head(MAX_TOP_RECORDS))
    if n == 0:
        return None
    counts = [(label, float(c)) for (_, _, label), c in zip(COPY_BUCKETS, buckets)]
    top = pl.concat(tops).sort(**order).head(MAX_TOP_RECORDS)
    return n, private, dup_clean, span_only, history, counts, top


def _kinds(raw: Any) -> str:
    if not raw:
        return "–"
    try:
        kinds = json.loads(raw)
    except (TypeError, ValueError):
        return str(raw)
    return ", ".join(str(k) for k in kinds) if isinstance(kinds, list) and kinds else "–"


# --------------------------------------------------------------------------- contamination.eval

_BENCH_DTYPE = pl.List(pl.Struct({"name": pl.Utf8, "records": pl.List(pl.Struct(
    {"id": pl.Utf8, "coverage": pl.Float64, "ngrams": pl.Int64}))}))


@report_section("contamination")
def contamination_section(data: CheckData) -> Section:
    """Hits by benchmark, unreadable benchmarks, examples with highlighted overlap."""
    sec = generic_section(data)
    for b in sec.blocks:
        if b.kind == "chart" and b.title == "Score distribution":
            b.title = "Coverage of the leaked test items"
    lf = data.findings()
    errors = (lf.filter(pl.col("record_id").is_null())
              .select("shard", bench=_j("$.benchmark"), error=_j("$.error")).collect())
    hits = (lf.filter(pl.col("record_id").is_not_null())
            .select("shard", "record_id", "severity", "score",
                    benchmarks=_j("$.benchmarks").str.json_decode(_BENCH_DTYPE))
            .explode("benchmarks")
            .select("shard", "record_id", "severity", "score",
                    name=pl.col("benchmarks").struct.field("name"),
                    records=pl.col("benchmarks").struct.field("records"))
            .collect())
    blocks: list[Block] = []
    if hits.height:
        items = hits.explode("records").with_columns(
            item=pl.col("records").struct.field("id"), cov=pl.col("records").struct.field("coverage"))
        by = (items.group_by("name").agg(
            records=pl.struct("shard", "record_id").n_unique(),
            items=pl.col("item").n_unique(),
            critical=pl.struct("shard", "record_id").filter(pl.col("severity") == "critical").n_unique(),
            worst=pl.col("cov").max(),
        ).sort(["records", "name"], descending=[True, False]).head(MAX_BENCHMARKS))
        sec.stats.append(("benchmarks hit", fmt_int(by.height)))
        blocks.append(Block(kind="chart", title="Contaminated records by benchmark", chart=charts.hbar_chart(
            [(r["name"], float(r["records"])) for r in by.iter_rows(named=True)],
            title="training records overlapping each benchmark", value_fmt=lambda v: fmt_int(v))))
        blocks.append(Block(kind="table", title="Hits by benchmark", wide=True, table=Table(
            headers=["benchmark", "training records", "distinct test items hit", "critical records",
                     "largest share of one test item"],
            rows=[[r["name"], fmt_int(r["records"]), fmt_int(r["items"]), fmt_int(r["critical"]),
                   fmt_pct(r["worst"], 1.0)] for r in by.iter_rows(named=True)],
            numeric=(1, 2, 3, 4), code=(0,),
            note="test items are counted from the records listed per finding (capped by max_records)")))
        top_items = (items.group_by("name", "item").agg(pl.struct("shard", "record_id").n_unique().alias("n"),
                                                         pl.col("cov").max().alias("cov"))
                     .sort(["n", "cov"], descending=True).head(MAX_TOP_CLUSTERS))
        blocks.append(Block(kind="table", title="Most leaked test items", table=Table(
            headers=["benchmark", "test item", "training records", "largest share"],
            rows=[[r["name"], r["item"], fmt_int(r["n"]), fmt_pct(r["cov"], 1.0)]
                  for r in top_items.iter_rows(named=True)],
            numeric=(2, 3), code=(0, 1))))
    if errors.height:
        uniq = errors.unique(subset=["bench", "error"]).head(10)
        blocks.append(Block(kind="note", text="Benchmarks that could not be read (nothing was checked "
                            "against them): " + "; ".join(f"{r['bench']}: {r['error']}"
                                                          for r in uniq.iter_rows(named=True))))
    _move_to_front(sec, blocks)
    return sec


__all__ = ["dedup_family_section", "memorization_section", "contamination_section"]
