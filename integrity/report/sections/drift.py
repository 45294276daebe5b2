"""Report sections ``drift`` (``distribution.drift``: drift dashboard, fairness view),
``synthetic_text`` (``synthetic.text``: synthetic share per shard, over nights) and
``provenance`` (``provenance.changed``: what changed since approval; ``provenance.duplicate_id``).

Every figure comes from the findings' ``detail`` JSON (the report reads only the
run directory). Charts are inline SVG drawn by matplotlib (:mod:`integrity.report.plots`);
labels from the data have invisible characters revealed first.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import polars as pl
from markupsafe import Markup

from integrity.report import charts, plots
from integrity.report.format import fmt_int, fmt_score
from integrity.report.model import Block, CheckData, Section, Table, generic_section, report_section

MAX_SHARDS_TABLE = 40
MAX_DASHBOARD_SHARDS = 3
FEATURES_PER_SHARD = 4
SEV_RANK = {"critical": 0, "warn": 1, "info": 2}


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * float(x):.1f}%"


def _num(x: Any) -> str:
    return "–" if x is None else fmt_score(float(x))


def _shard_details(data: CheckData, kind: str | None = "shard") -> list[dict]:
    rows = (data.findings().filter(pl.col("record_id").is_null())
            .select("shard", "severity", "score", "detail").collect())
    out = []
    for r in rows.iter_rows(named=True):
        try:
            d = json.loads(r["detail"] or "{}")
        except ValueError:
            continue
        if kind is None or d.get("kind") == kind:
            out.append({**r, "d": d})
    return out


def _ordered(items: list[dict]) -> list[dict]:
    return sorted(items, key=lambda r: (SEV_RANK.get(r["severity"], 3), -(r["score"] or 0.0), r["shard"] or ""))


# --------------------------------------------------------------------------- charts


def paired_bars(labels: Sequence[str], shard: Sequence[float], ref: Sequence[float], *, title: str,
                width: int = 380, height: int = 190) -> Markup:
    """Side-by-side bars per bin: the reference's share and the shard's (matplotlib, legend below)."""
    n = len(labels)
    ref = [float(ref[i]) if i < len(ref) else 0.0 for i in range(n)]
    shard = [float(shard[i]) if i < len(shard) else 0.0 for i in range(n)]
    return plots.grouped_bar_chart([charts.reveal_invisible(str(x)) for x in labels],
                                   {"reference": ref, "shard": shard}, title=title, percent=True,
                                   ylabel="share of records", width=width / plots.DPI, height=height / plots.DPI)


def line_chart(series: Sequence[tuple[str, Sequence[float]]], *, title: str, limit: float | None = None,
               width: int = 640, height: int = 230) -> Markup:
    """One line per (label, values over nights), y as percent, with an optional limit line (matplotlib)."""
    n = max([len(v) for _, v in series] + [1])
    x = [str(i + 1) for i in range(n)]
    data = {charts.reveal_invisible(str(lab)): [float(v) for v in vals] + [None] * (n - len(vals))
            for lab, vals in series}
    return plots.line_chart(x, data, title=title, percent=True, limit=limit, limit_label="max_share",
                            xlabel="scans, oldest to newest", width=width / plots.DPI, height=height / plots.DPI,
                            show_title=False)


def _bin_labels(edges: list[float]) -> list[str]:
    f = charts.fmt_num
    if not edges:
        return ["all", "null"]
    return [f"≤{f(edges[0])}"] + [f"{f(a)}–{f(b)}" for a, b in zip(edges, edges[1:])] + [f">{f(edges[-1])}", "null"]


# --------------------------------------------------------------------------- distribution.drift


@report_section("drift")
def drift_section(data: CheckData) -> Section:
    sec = generic_section(data)
    sec.blocks = [b for b in sec.blocks if b.kind == "examples"]  # the score histogram says little here
    items = _shard_details(data, None)
    skipped = [r for r in items if r["d"].get("kind") == "skipped"]
    shards = _ordered([r for r in items if r["d"].get("kind") == "shard"])
    fair = [r for r in items if r["d"].get("kind") == "fairness"]
    blocks: list[Block] = []
    for r in skipped[:3]:
        blocks.append(Block(kind="note", text=f"{r['shard']}: {r['d'].get('reason')}"))
    if shards:
        d0 = shards[0]["d"]
        basis = d0.get("basis", "reference")
        sec.stats += [("compared against", f"{basis} {d0.get('reference', '')}"),
                      ("shards drifted (warn+critical)", fmt_int(sum(r["severity"] in ("warn", "critical") for r in shards)))]
        blocks.append(Block(kind="note", text=(
            "Verdicts use effect sizes: an effect counts when its permutation p-value (k+1)/(n+1) is at most "
            f"alpha = {d0.get('alpha')} and it reaches the policy threshold. Score = the largest counted effect "
            "as a multiple of its warn threshold.")))
        rows = []
        for r in shards[:MAX_SHARDS_TABLE]:
            eff = {e["effect"]: e for e in r["d"].get("effects", [])}

            def cell(name: str) -> str:
                e = eff.get(name)
                if not e:
                    return "–"
                star = "" if e.get("significant") else " (n.s.)"
                return f"{fmt_score(e['value'])}{star}"

            fp = eff.get("feature_psi", {})
            rows.append([r["shard"], r["severity"], fmt_score(r["score"]), cell("domain_auc"),
                         f"{cell('feature_psi')} {fp.get('feature', '')}", cell("mmd2"), cell("topic_js"),
                         cell("novelty"), cell("language_psi"), cell("label_js"),
                         "; ".join(r["d"].get("reasons", [])) or "–"])
        blocks.append(Block(kind="table", title="Drift per shard", wide=True, table=Table(
            headers=["shard", "severity", "score", "domain AUC", "max PSI (feature)", "MMD²", "topic JS",
                     "novelty (share ≥)", "language PSI", "label JS", "why"],
            rows=rows, numeric=(2, 3, 5, 6, 7, 8, 9), code=(0,),
            note=f"worst {len(rows)} of {len(shards)} shards" if len(shards) > len(rows) else "")))
        for r in shards[:MAX_DASHBOARD_SHARDS]:
            feats = sorted(r["d"].get("features", []), key=lambda f: -(f.get("psi") or 0))[:FEATURES_PER_SHARD]
            for f in feats:
                counts = f.get("counts") or []
                tot = max(1, sum(counts))
                caption = f"{r['shard']} · {f['feature']} (PSI {f['psi']:.3g}, p {f['p_value']:.3g})"
                chart = paired_bars(_bin_labels(f.get("edges") or []), [c / tot for c in counts],
                                    f.get("ref_shares") or [], title=caption)
                blocks.append(Block(kind="chart", title=caption, chart=chart))
            topics = r["d"].get("topics") or {}
            if topics.get("shard_mass"):
                k = len(topics["shard_mass"])
                blocks.append(Block(kind="chart", title=f"{r['shard']} · topic mass", chart=paired_bars(
                    [f"t{i}" for i in range(k)], topics["shard_mass"], topics.get("reference_mass") or [0] * k,
                    title=f"{r['shard']}: share of records per reference topic")))
            for ci, cl in enumerate(topics.get("clusters") or []):
                blocks.append(Block(kind="note", text=(
                    f"{r['shard']}: new topic #{ci} – {cl['size']} sampled records far from every reference "
                    f"topic (mean distance {cl['mean_distance_to_reference']:.2f} > {topics.get('far_distance', 0):.2f});"
                    f" examples: {', '.join(cl['examples'])}")))
    if fair:
        agg: dict[str, dict[str, float]] = {}
        for r in fair:
            for g in r["d"].get("groups", []):
                a = agg.setdefault(g["group"], {"count": 0, "records": 0, "ref_rate": g.get("ref_rate"),
                                                "ref_sentiment": g.get("ref_sentiment"), "sent": [], "occ": []})
                a["count"] += g["count"]
                a["records"] += r["d"].get("records", 0)
                if g.get("sentiment") is not None:
                    a["sent"].append(g["sentiment"])
                if g.get("occupation") is not None:
                    a["occ"].append(g["occupation"])
        rows = []
        for g, a in sorted(agg.items(), key=lambda kv: -kv[1]["count"]):
            rate = a["count"] / max(1, a["records"])
            ratio = None if a["ref_rate"] is None else (rate + 1e-4) / (a["ref_rate"] + 1e-4)
            rows.append([g, fmt_int(a["count"]), _pct(rate), _pct(a["ref_rate"]),
                         "–" if ratio is None else f"×{ratio:.2f}",
                         _num(sum(a["occ"]) / len(a["occ"])) if a["occ"] else "–",
                         _num(sum(a["sent"]) / len(a["sent"])) if a["sent"] else "–", _num(a["ref_sentiment"])])
        blocks.append(Block(kind="table", title="Fairness view (report only)", wide=True, table=Table(
            headers=["group", "records", "rate", "reference rate", "ratio", "with occupation", "sentiment",
                     "reference sentiment"],
            rows=rows, numeric=(1, 2, 3, 4, 5, 6, 7),
            note="Records mentioning each group (short English lexicons), the share of them that also mention an "
                 "occupation, and (positive − negative)/(positive + negative) sentiment words in them. "
                 "No verdict is drawn from this view.")))
    sec.blocks = blocks + sec.blocks
    return sec


# --------------------------------------------------------------------------- synthetic.text


@report_section("synthetic_text")
def synthetic_section(data: CheckData) -> Section:
    sec = generic_section(data)
    sec.blocks = [b for b in sec.blocks if b.kind == "examples"]
    shards = _ordered(_shard_details(data, "shard"))
    blocks: list[Block] = [Block(kind="note", text=(
        "Evidence of machine generation, never proof; and the absence of a signal does not show that a text "
        "is human. Estimates carry their method and confidence."))]
    if shards:
        mx = shards[0]["d"].get("max_share")
        rows = []
        for r in shards[:MAX_SHARDS_TABLE]:
            d = r["d"]
            iv = d.get("interval") or [None, None]
            wm = d.get("watermark") or {}
            ul = (d.get("unlike_reference") or {}).get("lower_bound")
            div = (d.get("diversity") or {}).get("mean_tail_share")
            rows.append([r["shard"], r["severity"], _pct(d.get("estimate")), f"{_pct(iv[0])} – {_pct(iv[1])}",
                         d.get("method", ""), d.get("confidence", ""), fmt_int((d.get("markers") or {}).get("share", 0) * d.get("records", 0)),
                         _num(wm.get("shard_z")), _pct(ul), _pct(div)])
        blocks.append(Block(kind="table", title="Synthetic share per shard", wide=True, table=Table(
            headers=["shard", "severity", "estimate", "95% interval", "method", "confidence", "records with markers",
                     "watermark z", "unlike reference (≥)", "tail share (ref 10%)"],
            rows=rows, numeric=(2, 6, 7, 8, 9), code=(0,),
            note=f"max_share {_pct(mx)}; tail share below 10% means the shard lost the reference's tails "
                 "(a collapse signature)")))
        series = []
        for r in shards[:8]:
            hist = [h["estimate"] for h in r["d"].get("history") or [] if h.get("estimate") is not None]
            series.append((r["shard"], hist + [r["d"].get("estimate") or 0.0]))
        if any(len(v) > 1 for _, v in series):
            blocks.append(Block(kind="chart", title="Synthetic share over nights", wide=True,
                                chart=line_chart(series, title="synthetic share per shard over scans", limit=mx)))
        else:
            items = [(r["shard"], float(r["d"].get("estimate") or 0.0)) for r in shards[:20]]
            blocks.append(Block(kind="chart", title="Synthetic share (this scan)",
                                chart=charts.hbar_chart(items, title="synthetic share", value_fmt=lambda v: f"{100 * v:.1f}%")))
    sec.blocks = blocks + sec.blocks
    return sec


# --------------------------------------------------------------------------- provenance.changed


@report_section("provenance")
def provenance_section(data: CheckData) -> Section:
    sec = generic_section(data)
    sec.blocks = [b for b in sec.blocks if b.kind != "chart"]
    shards = _shard_details(data, "shard")
    if shards:
        rows = [[r["shard"], r["severity"], (r["d"].get("old_sha256") or "")[:16], (r["d"].get("new_sha256") or "")[:16],
                 r["d"].get("approved_at") or "–", str(r["d"].get("approved_in_scan") or "–"),
                 _n(r["d"].get("records_changed")), _n(r["d"].get("records_added")), _n(r["d"].get("records_removed"))]
                for r in _ordered(shards)[:MAX_SHARDS_TABLE]]
        sec.blocks.insert(0, Block(kind="table", title="Approved shards whose content changed", wide=True, table=Table(
            headers=["shard", "severity", "approved SHA-256", "now SHA-256", "approved at", "in scan", "records changed",
                     "added", "removed"], rows=rows, numeric=(6, 7, 8), code=(0, 2, 3, 5),
            note="Same URI, other bytes since it was approved (split-view poisoning shows up here).")))
    return sec


def _n(x: Any) -> str:
    return "–" if x is None else fmt_int(x)
