"""Tests for integrity.report.render: the HTML report rendered from a run dir."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from connectors.schema import SCAN_FINDING_COLUMNS
from integrity.report import charts
from integrity.report.format import highlight_segments, human_bytes
from integrity.report.model import SECTIONS, Block, generic_section, report_section
from integrity.report.sections import renderer_for, section_name
from integrity.report.render import MAX_SHARD_ROWS, SHARD_COLUMNS, write_report

INJECT = "<script>alert(1)</script>"
EVIL_SHARD = f'evil{INJECT}".parquet'
SECRET = "AKIA[REDACTED]"


# --------------------------------------------------------------------------- run-dir builder


def shards_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SHARD_COLUMNS)




def shard_row(name: str, verdict: str = "pass", **kw) -> dict:
    row = {
        "shard": name,
        "uri": f"s3://corpus/web/{name}",
        "sha256": (f"{abs(hash(name)):x}" * 8)[:64],
        "rows": 10_000,
        "bytes": 52_428_800,
        "verdict": verdict,
        "reasons": [],
        "format": "parquet",
        "error": None,
        "cached": False,
        "seconds": 1.25,
        "n_info": 0,
        "n_warn": 0,
        "n_critical": 0,
        "records_flagged": 0,
        "quarantine": None,
    }
    row.update(kw)
    return row


def summary(shards: pl.DataFrame, findings: pl.DataFrame, verdict: str, **kw) -> dict:
    by_check: dict[str, dict[str, int]] = {}
    for chk, sev, n in findings.group_by(["check", "severity"]).len().iter_rows():
        by_check.setdefault(chk, {"info": 0, "warn": 0, "critical": 0})[sev] = n
    verdicts = {v: 0 for v in ("pass", "warn", "quarantine", "unreadable")}
    for v, n in shards.group_by("verdict").len().iter_rows():
        verdicts[v] = n
    s = {
        "scan_id": "scan-2024-05-01T02-00-00-7f3a",
        "source": "s3://corpus/web/2024-05-01/*.parquet",
        "policy": {"source": "policies/prod.yaml", "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
        "started_at": "2024-05-01T02:00:00+00:00",
        "finished_at": "2024-05-01T02:14:37+00:00",
        "timings": {"list": 2.1, "shards": 701.5, "corpus": 120.4, "policy": 0.8, "quarantine": 41.0, "report": 1.2, "total": 877.0},
        "counts": {
            "shards": shards.height,
            "rows": int(shards["rows"].sum() or 0),
            "bytes": int(shards["bytes"].sum() or 0),
            "findings": findings.height,
            "by_check": by_check,
            "verdicts": verdicts,
        },
        "verdict": verdict,
        "checks": ["dedup.exact", "privacy.secret", "poison.unicode", "contamination.eval", "poison.trigger"],
        "runner": "ThreadPoolTaskRunner(max_workers=8)",
        "cached_shards": 1,
    }
    s.update(kw)
    return s


def make_run(run_dir: Path, *, examples: bool = True) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    shards = shards_frame(
        [
            shard_row("web-00000.parquet", "pass", cached=True),
            shard_row(
                "web-00001.parquet",
                "quarantine",
                reasons=["privacy.secret: 1 critical finding", "dedup.exact: 3 duplicates"],
                n_critical=1,
                n_warn=3,
                records_flagged=4,
                quarantine="done → /state/quarantine/ab12/web-00001.parquet",
            ),
            shard_row("web-00002.parquet", "warn", reasons=["dedup.exact: 2 duplicates"], n_warn=2, records_flagged=2),
            shard_row(
                "web-00003.jsonl.gz",
                "unreadable",
                rows=0,
                bytes=1234,
                format="jsonl",
                error="web-00003.jsonl.gz line 17: invalid JSON: Expecting ',' delimiter <b>bold</b>",
                sha256=None,
            ),
            shard_row(EVIL_SHARD, "warn", reasons=[f"poison.unicode: {INJECT}"], n_warn=1, n_info=1, records_flagged=1),
        ]
    )
    dedup = lambda cluster, size, rep: json.dumps(  # noqa: E731
        {"cluster": cluster, "group_size": size, "representative": rep, "representative_shard": "web-00000.parquet"}
    )
    findings = pl.DataFrame(
        [
            ("web-00001.parquet", "r-101", "dedup.exact", "warn", 1.0, dedup("exact-aaaa", 4, "r-1")),
            ("web-00001.parquet", "r-102", "dedup.exact", "warn", 1.0, dedup("exact-aaaa", 4, "r-1")),
            ("web-00002.parquet", "r-201", "dedup.exact", "warn", 1.0, dedup("exact-aaaa", 4, "r-1")),
            ("web-00001.parquet", "r-103", "dedup.exact", "warn", 1.0, dedup("exact-bbbb", 2, "r-2")),
            ("web-00002.parquet", "r-202", "dedup.exact", "warn", 1.0, dedup("exact-cccc", 2, "r-3")),
            ("web-00001.parquet", "r-150", "privacy.secret", "critical", 0.99, json.dumps({"kind": "aws_access_key", "start": 12, "end": 32})),
            (EVIL_SHARD, "x<img src=x onerror=alert(2)>", "poison.unicode", "warn", 0.7, json.dumps({"chars": ["U+202E"], "note": INJECT})),
            (EVIL_SHARD, "x-2", "poison.unicode", "info", 0.2, json.dumps({"chars": ["U+200B"]})),
            ("web-00002.parquet", None, "poison.trigger", "info", 0.4, json.dumps({"trigger": "cf", "support": 12})),
        ],
        schema=SCAN_FINDING_COLUMNS,
        orient="row",
    )
    shards.write_parquet(run_dir / "shards.parquet")
    findings.write_parquet(run_dir / "findings.parquet")
    (run_dir / "summary.json").write_text(json.dumps(summary(shards, findings, "fail")))
    if examples:
        secret_excerpt = f"config: aws_key={SECRET} region=us-east-1"
        s = secret_excerpt.index(SECRET)
        evil_excerpt = f"hello {INJECT} \u202eevil"
        e = evil_excerpt.index(INJECT)
        pl.DataFrame(
            [
                ("web-00001.parquet", "r-150", "privacy.secret", "critical", 0.99, "text", secret_excerpt,
                 json.dumps([[s, s + len(SECRET)]]), json.dumps({"kind": "aws_access_key"})),
                (EVIL_SHARD, "x<img src=x onerror=alert(2)>", "poison.unicode", "warn", 0.7, "text", evil_excerpt,
                 json.dumps([[e, e + len(INJECT)], [999, 1005], "junk"]), json.dumps({"note": INJECT})),
                ("web-00001.parquet", "r-101", "dedup.exact", "warn", 1.0, "text", "Buy cheap watches now!!!",
                 "[]", dedup("exact-aaaa", 4, "r-1")),
            ],
            schema=[("shard", pl.Utf8), ("record_id", pl.Utf8), ("check", pl.Utf8), ("severity", pl.Utf8),
                    ("score", pl.Float64), ("field", pl.Utf8), ("excerpt", pl.Utf8), ("highlights", pl.Utf8),
                    ("detail", pl.Utf8)],
            orient="row",
        ).write_parquet(run_dir / "examples.parquet")
    return run_dir


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run")


def text_of(html_doc: str) -> str:
    """Visible text, roughly: tags stripped, entities decoded."""
    no_style = re.sub(r"<(style|script)\b.*?</\1>", "", html_doc, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", no_style))


# --------------------------------------------------------------------------- tests


def test_writes_default_path_and_header(run_dir: Path):
    out = write_report(run_dir)
    assert out == run_dir / "report.html"
    doc = out.read_text(encoding="utf-8")
    assert doc.startswith("<!DOCTYPE html>")
    assert 'class="verdict"' in doc and ">fail<" in doc
    assert "scan-2024-05-01T02-00-00-7f3a" in doc
    assert "s3://corpus/web/2024-05-01/*.parquet" in doc
    assert "policies/prod.yaml" in doc and 'title="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"' in doc
    assert "2024-05-01 02:00:00" in doc and "2024-05-01 02:14:37" in doc
    assert "14 min 37 s" in doc  # total time
    assert human_bytes(4 * 52_428_800 + 1234) in doc  # bytes, human readable
    assert "40,000" in doc  # rows
    # self-contained: nothing fetched from the network
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", doc)
    assert "<link" not in doc


def test_custom_out_path(run_dir: Path, tmp_path: Path):
    out = write_report(run_dir, tmp_path / "elsewhere" / "r.html")
    assert out == tmp_path / "elsewhere" / "r.html" and out.is_file()
    assert not (run_dir / "report.html").exists()


def test_every_shard_and_its_details(run_dir: Path):
    doc = write_report(run_dir).read_text()
    text = text_of(doc)
    for name in ("web-00000.parquet", "web-00001.parquet", "web-00002.parquet", "web-00003.jsonl.gz", EVIL_SHARD):
        assert name in text
    # unreadable shard: error shown (escaped), quarantine: state and destination
    assert "line 17: invalid JSON" in text
    assert "<b>bold</b>" not in doc and "&lt;b&gt;bold&lt;/b&gt;" in doc
    assert "/state/quarantine/ab12/web-00001.parquet" in text
    assert "privacy.secret: 1 critical finding" in text
    # worst verdict first
    table = doc[doc.index('id="shards"') :]
    order = [table.index(n) for n in ("web-00001.parquet", "web-00003.jsonl.gz", "web-00002.parquet", "web-00000.parquet")]
    assert order == sorted(order)
    # sha256 shortened with the full hash in the title attribute
    full = shard_row("web-00000.parquet")["sha256"]
    assert f'<span title="{full}">{full[:12]}</span>' in doc
    # release footer, with a ready command for the quarantined shard
    assert "integrity quarantine release web-00001.parquet --reason 'why this content is fine'" in text


def test_untrusted_text_is_escaped(run_dir: Path):
    doc = write_report(run_dir).read_text()
    assert "<script>alert" not in doc
    assert "<img src=x" not in doc
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in doc
    # the only <script> element is the report's own optional sorting code
    assert doc.count("<script") == 1
    # shard names also reach SVG and attributes only escaped
    assert 'evil<script' not in doc


def test_highlights_are_marked(run_dir: Path):
    doc = write_report(run_dir).read_text()
    assert f"<mark>{SECRET}</mark>" in doc
    # the highlighted injection text is marked *and* escaped
    assert "<mark>&lt;script&gt;alert(1)&lt;/script&gt;</mark>" in doc
    assert "region=us-east-1" in doc


def test_charts_and_sections(run_dir: Path):
    doc = write_report(run_dir).read_text()
    assert doc.count("<svg") >= 4  # timings, verdict bar, findings by check, cluster sizes
    assert "Time per stage" in doc and "Findings by check and severity" in doc
    for check in ("dedup.exact", "privacy.secret", "poison.unicode", "poison.trigger"):
        assert f'id="check-{check.replace(".", "-")}"' in doc
    # dedup: cluster histogram and top clusters, largest first
    assert "Cluster sizes (3 clusters)" in doc and "Largest clusters" in doc
    sec = doc[doc.index('id="check-dedup-exact"') :]
    assert sec.index("exact-aaaa") < sec.index("exact-bbbb")
    # share of records flagged per check: 5 flagged of 40,000 rows
    assert "0.01%" in doc
    # checks without findings are listed as clean
    assert "contamination.eval" in text_of(doc)
    # a check with no examples (poison.trigger, shard-level) shows its top findings
    trig = doc[doc.index('id="check-poison-trigger"') :]
    assert "Top findings" in trig and "(shard)" in trig


def test_unknown_future_check_uses_generic_section(tmp_path: Path):
    run = make_run(tmp_path / "run")
    f = pl.read_parquet(run / "findings.parquet")
    extra = pl.DataFrame(
        [("web-00002.parquet", f"r{i}", "future.novel_check", "warn", i / 10, json.dumps({"feature": "len"})) for i in range(8)],
        schema=SCAN_FINDING_COLUMNS,
        orient="row",
    )
    pl.concat([f, extra]).write_parquet(run / "findings.parquet")
    doc = write_report(run).read_text()
    assert 'id="check-future-novel-check"' in doc
    sec = doc[doc.index('id="check-future-novel-check"') :]
    sec = sec[: sec.index("</section>")]
    assert "<svg" in sec and "future.novel_check: score distribution" in sec  # score histogram
    assert "Top findings" in sec and "0 – 0.7" in sec
    assert renderer_for("future.novel_check") is generic_section
    assert renderer_for("dedup.near") is SECTIONS["dedup"]


def test_each_check_gets_the_section_it_declares():
    # declared on the class (image checks through their base), not guessed from the name
    assert section_name("dedup.image") == "dedup_images"
    assert section_name("poison.patch") == section_name("image.decode") == "images"
    assert section_name("provenance.duplicate_id") == "provenance"
    assert section_name("poison.trigger") == section_name("privacy.pii") == "findings"
    # a check that no longer imports (old run dir, plug-in not installed here) gets the generic one
    assert section_name("gone.check", ["nowhere_pkg.mod:Gone"]) == "findings"


def test_registering_a_section_renderer(run_dir: Path, monkeypatch):
    from integrity.checks.poison_trigger import PoisonTriggerCheck

    @report_section("trigger_test")
    def trig(data):
        sec = generic_section(data)
        sec.blocks.append(Block(kind="note", text="specialised trigger section <ok>"))
        return sec

    monkeypatch.setattr(PoisonTriggerCheck, "report_section", "trigger_test")
    try:
        doc = write_report(run_dir).read_text()
    finally:
        del SECTIONS["trigger_test"]
    assert "specialised trigger section &lt;ok&gt;" in doc


def test_without_examples_parquet(tmp_path: Path):
    run = make_run(tmp_path / "old", examples=False)
    doc = write_report(run).read_text()
    assert "Top findings" in doc and "no examples.parquet" in doc
    assert "<mark>" not in doc
    assert "<script>alert" not in doc


def test_empty_findings(tmp_path: Path):
    run = tmp_path / "clean"
    run.mkdir()
    shards = shards_frame([shard_row(f"web-{i:05d}.parquet") for i in range(3)])
    findings = pl.DataFrame(schema=SCAN_FINDING_COLUMNS)
    shards.write_parquet(run / "shards.parquet")
    findings.write_parquet(run / "findings.parquet")
    (run / "summary.json").write_text(json.dumps(summary(shards, findings, "pass")))
    doc = write_report(run).read_text()
    assert ">pass<" in doc and "No findings" in doc
    for i in range(3):
        assert f"web-{i:05d}.parquet" in doc


def test_old_run_with_missing_columns(tmp_path: Path):
    """A minimal run dir with only the contract's required columns still renders."""
    run = tmp_path / "minimal"
    run.mkdir()
    pl.DataFrame(
        {"shard": ["a.parquet", "b.parquet"], "uri": ["/d/a", "/d/b"], "sha256": ["0" * 64, "1" * 64],
         "rows": [5, 7], "bytes": [100, 200], "verdict": ["pass", "quarantine"], "reasons": [[], ["x"]]}
    ).write_parquet(run / "shards.parquet")
    pl.DataFrame({"shard": ["b.parquet"], "check": ["dedup.exact"], "severity": ["warn"]}).write_parquet(
        run / "findings.parquet"
    )
    (run / "summary.json").write_text(json.dumps({"scan_id": "old", "verdict": "fail"}))
    doc = write_report(run).read_text()
    assert ">fail<" in doc and "a.parquet" in doc and "b.parquet" in doc and "dedup.exact" in doc


def test_large_run_is_capped_and_fast(tmp_path: Path):
    run = tmp_path / "big"
    run.mkdir()
    n = 5000
    verdicts = ["pass"] * (n - 60) + ["warn"] * 50 + ["quarantine"] * 7 + ["unreadable"] * 3
    shards = shards_frame(
        [
            shard_row(
                f"web-{i:05d}.parquet",
                v,
                n_warn=2 if v != "pass" else 0,
                quarantine="done → /q/x" if v == "quarantine" else None,
                error="boom" if v == "unreadable" else None,
            )
            for i, v in enumerate(verdicts)
        ]
    )
    m = 100_000
    findings = pl.DataFrame(
        {
            "shard": [f"web-{i % n:05d}.parquet" for i in range(m)],
            "record_id": [str(i) for i in range(m)],
            "check": ["dedup.near" if i % 3 else "poison.outlier" for i in range(m)],
            "severity": ["warn" if i % 7 else "critical" for i in range(m)],
            "score": [(i % 97) / 97 for i in range(m)],
            "detail": [json.dumps({"cluster": f"c{i % 4000}", "cluster_size": 25}) for i in range(m)],
        },
        schema=SCAN_FINDING_COLUMNS,
    )
    shards.write_parquet(run / "shards.parquet")
    findings.write_parquet(run / "findings.parquet")
    (run / "summary.json").write_text(json.dumps(summary(shards, findings, "fail")))
    # its speed is a benchmark's business (benchmarks/report.py renders such runs); here: the caps
    doc = write_report(run).read_text()
    table = doc[doc.index('id="shards"') : doc.index("</table>", doc.index('id="shards"'))]
    assert table.count("<tr class=") == MAX_SHARD_ROWS
    assert f"Showing the {MAX_SHARD_ROWS} worst of 5,000 shards; 4,800 left out" in doc
    # the worst come first: all quarantined and unreadable shards are in the table
    assert table.count('data-verdict="quarantine"') == 7 and table.count('data-verdict="unreadable"') == 3
    assert len(doc) < 2_000_000


def test_highlight_segments_edge_cases():
    assert highlight_segments("abcdef", "[[1, 3], [2, 4]]") == [("a", False), ("bcd", True), ("ef", False)]
    assert highlight_segments("abc", "not json") == [("abc", False)]
    assert highlight_segments("abc", [[-5, 1], [2, 99]]) == [("a", True), ("b", False), ("c", True)]
    assert highlight_segments(None, "[]") == []
    long = "x" * 5000 + "SECRET" + "y" * 5000
    segs = highlight_segments(long, [[5000, 5006]], limit=200)
    assert ("SECRET", True) in segs and segs[0] == ("… ", False) and segs[-1] == (" …", False)
    assert sum(len(t) for t, _ in segs) < 220


def test_charts_escape_labels():
    svg = charts.hbar_chart([(INJECT, 3.0)], title=INJECT)
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    svg = charts.stacked_hbar_chart([(INJECT, {"warn": 2})], [("warn", "warn", "#f00")], title="t")
    assert "<script>" not in svg
    svg = charts.histogram_chart([0, 1, 2], [("a", [1, 2], "#000")], title="h")
    assert svg.startswith("<svg") and 'aria-label="h"' in svg
    # matplotlib draws the text, escaped, and never reads a label from the data as math (TeX)
    svg = charts.hbar_chart([("cost $5 and $x^2$", 1.0)], title="t")
    assert "cost $5 and $x^2$" in svg


def test_bidi_and_invisible_characters_are_revealed(run_dir: Path):
    """A right-to-left override in data must not reorder the report's text (Trojan Source)."""
    doc = write_report(run_dir).read_text()
    assert "\u202e" not in doc
    assert "⟨U+202E⟩evil" in doc
    assert charts.reveal_invisible("a\u200bb\x00c\nd") == "a⟨U+200B⟩b⟨U+0000⟩c\nd"


# --------------------------------------------------------------------------- layout (issue 14)


def test_verdicts_come_before_timings_and_details_are_collapsed(run_dir: Path):
    doc = write_report(run_dir).read_text()
    assert doc.index('id="verdicts"') < doc.index('id="timings"') < doc.index('id="findings"')
    # every JSON detail is folded: no <pre class="detail"> outside a <details>
    assert '<details class="detail">' in doc
    assert not re.search(r'(?<!</summary>)<pre class="detail', doc)


def test_release_how_to_only_when_something_was_quarantined(tmp_path: Path):
    doc = write_report(make_run(tmp_path / "q")).read_text()
    assert "Releasing a quarantined shard" in doc and "integrity quarantine release web-00001.parquet" in doc
    run = make_run(tmp_path / "clean")
    shards = pl.read_parquet(run / "shards.parquet").with_columns(
        pl.when(pl.col("verdict") == "quarantine").then(pl.lit("warn")).otherwise(pl.col("verdict")).alias("verdict"))
    shards.write_parquet(run / "shards.parquet")
    doc = write_report(run).read_text()
    assert "Releasing a quarantined shard" not in doc and 'href="#release"' not in doc


def test_a_duplicate_is_shown_beside_the_record_it_duplicates(tmp_path: Path):
    run = make_run(tmp_path / "run")
    ex = pl.read_parquet(run / "examples.parquet").with_columns(
        pl.when(pl.col("check") == "dedup.exact").then(pl.lit("web-00000.parquet")).alias("representative_shard"),
        pl.when(pl.col("check") == "dedup.exact").then(pl.lit("Buy cheap watches now!!! (the kept copy)"))
        .alias("representative_excerpt"))
    ex.write_parquet(run / "examples.parquet")
    doc = write_report(run).read_text()
    pair = doc[doc.index('class="side-by-side"'):]
    assert pair.index("kept:") < pair.index("r-1") < pair.index("the kept copy") < pair.index("duplicate:")
    assert pair.index("duplicate:") < pair.index("Buy cheap watches now!!!</pre>")


def test_dedup_view_counts_clusters_from_one_pass_over_the_details(monkeypatch):
    """The dedup section's cluster view (integrity.analysis.details parses the details in slices):
    sizes, history, representative and the first members in the findings' order."""
    from integrity.analysis import details
    from integrity.report import model

    monkeypatch.setattr(details, "DETAIL_SLICE", 3)
    lf = pl.LazyFrame({"shard": ["a.parquet"] * len(CLUSTER_DETAILS),
                       "record_id": [f"d{i}" for i in range(len(CLUSTER_DETAILS))],
                       "score": [0.9] * len(CLUSTER_DETAILS), "detail": CLUSTER_DETAILS})
    view = model.cluster_view(model.CheckData(
        check="dedup.near", anchor="a", counts={"warn": len(CLUSTER_DETAILS)}, records_flagged=0, shard_level=0,
        shards_affected=1, total_rows=100, scores=pl.DataFrame(), examples=[], has_examples_file=True,
        findings=lambda: lf)).sort("_cluster", nulls_last=True)
    near0 = view.row(0, named=True)
    assert (near0["_cluster"], near0["n"], near0["size"], near0["history"], near0["representative"]) == \
        ("near-0", 3, 3, 1, "r0")
    assert near0["sample"] == ["d0", "d4", "d8"]  # in the findings' order
    assert view.filter(pl.col("_cluster") == "near-x")["size"].item() == 2


CLUSTER_DETAILS = [json.dumps({"cluster": f"near-{i % 4}", "cluster_size": 3 + i % 4, "representative": f"r{i % 4}",
                               "representative_shard": "a.parquet", "history": i % 5 == 0, "similarity": 0.9})
                   for i in range(10)] + [None, "{}", json.dumps({"cluster": {"nested": 1}, "group_size": "7"}),
                                          json.dumps({"cluster": "near-x", "group_size": 2.0})]


def test_dedup_view_combines_slices_counts_undeclared_members_and_shards_of_shown_clusters(monkeypatch):
    """Slices of details reduced per cluster and combined (every 2 slices of 3 findings here) give
    the figures of one aggregation over every finding; members are counted where no size is
    declared; the shards of a cluster come from a second pass for the clusters a table shows."""
    from integrity.analysis import details
    from integrity.report import model

    monkeypatch.setattr(details, "DETAIL_SLICE", 3)
    monkeypatch.setattr(model, "CLUSTER_COMBINE_EVERY", 2)
    rows = [(f"s{i % 3}.parquet", f"d{i}", json.dumps({"cluster": f"c{i % 2}", "group_size": 9,
                                                       "representative": "r0", "history": i == 5}))
            for i in range(14)]
    rows += [("s0.parquet", "u1", json.dumps({"cluster": "u", "representative": "u0"})),
             ("s1.parquet", "u2", json.dumps({"cluster": "u", "representative": "u0"})),
             ("s1.parquet", "u2", json.dumps({"cluster": "u", "representative": "u0"}))]
    lf = pl.LazyFrame({"shard": [r[0] for r in rows], "record_id": [r[1] for r in rows],
                       "score": [float(i) for i in range(len(rows))], "detail": [r[2] for r in rows],
                       "severity": "warn"})
    data = model.CheckData(
        check="dedup.exact", anchor="a", counts={"warn": len(rows)}, records_flagged=0, shard_level=0,
        shards_affected=3, total_rows=100, scores=pl.DataFrame(), examples=[], has_examples_file=True,
        findings=lambda: lf)
    view = model.cluster_view(data).sort("_cluster")
    c0, c1, u = view.rows(named=True)
    assert (c0["n"], c0["size"], c0["history"], c0["sample"], c0["max_score"]) == (7, 9, 0, ["d0", "d2", "d4", "d6", "d8"], 12.0)
    assert (c1["n"], c1["history"], c1["sample"], c1["members"]) == (7, 1, ["d1", "d3", "d5", "d7", "d9"], None)
    assert (u["n"], u["size"], u["members"], u["representative"]) == (3, 3, 3, "u0")  # u0, u1, u2
    # not ordered by shard: no count from the first pass, a second pass for the shown clusters
    assert "shards" not in view.columns
    shards = dict(model.cluster_shards(data, ["c1", "u"]).iter_rows())
    assert shards == {"c1": 3, "u": 2}
    table = next(b.table for b in model.dedup_section(data, view).blocks if b.title == "Largest clusters")
    assert {r[0]: r[2] for r in table.rows} == {"c0": "3", "c1": "3", "u": "2"}


@pytest.mark.parametrize("slice_rows,combine_every", [(3, 2), (4, 3), (1, 2), (100, 20)])
def test_dedup_view_counts_each_clusters_shards_in_the_same_pass_when_findings_come_by_shard(
        monkeypatch, slice_rows, combine_every):
    """Findings ordered by shard (as findings.parquet is): the view's shards per cluster equal
    the distinct shards of its findings, with a shard's run of a cluster split over slices and
    over combined partials, and no second pass is made."""
    from integrity.analysis import details
    from integrity.report import model

    monkeypatch.setattr(details, "DETAIL_SLICE", slice_rows)
    monkeypatch.setattr(model, "CLUSTER_COMBINE_EVERY", combine_every)
    rng = np.random.default_rng(slice_rows)
    shard = np.sort(rng.integers(0, 6, 60))
    cluster = rng.integers(0, 5, 60)
    frame = pl.DataFrame({"shard": [f"s{x}.parquet" for x in shard], "record_id": [f"d{i}" for i in range(60)],
                          "score": np.ones(60), "detail": [json.dumps({"cluster": f"c{c}", "group_size": 20})
                                                           for c in cluster], "severity": "warn"})
    data = model.CheckData(
        check="dedup.exact", anchor="a", counts={"warn": 60}, records_flagged=0, shard_level=0,
        shards_affected=6, total_rows=100, scores=pl.DataFrame(), examples=[], has_examples_file=True,
        findings=lambda: frame.lazy())
    view = model.cluster_view(data)
    expected = {f"c{c}": len(set(shard[cluster == c])) for c in set(cluster)}
    assert dict(view.select("_cluster", "shards").iter_rows()) == expected
    monkeypatch.setattr(model, "cluster_shards", lambda *a: pytest.fail("a second pass over the details"))
    table = next(b.table for b in model.dedup_section(data, view).blocks if b.title == "Largest clusters")
    assert {r[0]: int(r[2]) for r in table.rows} == expected
