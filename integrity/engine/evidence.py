"""The evidence the report shows beside the findings: example records with excerpts, and
thumbnails of flagged images.

:func:`collect_examples` picks a few findings per check (worst first, from as few shards as
possible), re-reads their records from at most :data:`MAX_EXAMPLE_SHARDS` shards, and cuts an
excerpt around the evidence of each, with every secret masked
(:func:`integrity.engine.redact.mask_secrets`, then the spans a check marks ``redact``); a
``dedup.*`` example also carries the excerpt of the record it duplicates. The result is
``examples.parquet``, written before quarantine moves any shard away; the report reads only it.

Thumbnails: a corpus check only says where each finding's image is, in optional columns of
its findings (``uri`` and ``row`` of the record, or ``image_row`` where the finding has no
``row`` to put in its detail, a ``box`` to outline, ``representative_uri``
and ``representative_row`` of a second image shown beside it, e.g. the record a duplicate
repeats). :func:`attach_thumbnails`, run by the engine after every corpus pass and before the
findings are masked and written, picks the ``k`` best-scored findings of each check (its
``thumbnails`` option) from at most :data:`MAX_THUMBNAIL_SHARDS` shards, re-reads their
images once for every check, and puts ``thumbnail`` and ``caption`` (and
``representative_thumbnail``/``representative_caption``) in their ``detail``.
"""
from __future__ import annotations

import json

import polars as pl

from connectors import ShardReader, ShardRef
from connectors.errors import ShardReadError
from connectors.schema import EXAMPLE_COLUMNS, RECORD_ID, ROW, TEXT_FIELDS, ColumnMapping
from integrity.analysis.shard_groups import collect_by_shard_groups
from integrity.analysis.thumbnails import busiest_shards, fetch_thumbnails, pick_thumbnails, put_thumbnails
from integrity.checks.base import Check
from integrity.engine.redact import mask_secrets
from integrity.engine.shard import ShardResult
from integrity.engine.spec import ScanSpec
from integrity.report.format import SEVERITY_RANK

MAX_EXAMPLE_SHARDS = 8  # shards re-read to fetch example texts, at most
MAX_THUMBNAIL_SHARDS = 4  # shards a check's thumbnails come from, at most (twice that with representatives)


def _pick_examples(findings: pl.LazyFrame, k: int) -> pl.DataFrame:
    """Up to ``k`` findings per check, worst first, from as few shards as possible.

    Ranked on the key columns alone (and the finding's position, which breaks ties), a group of
    shards at a time (each group's best ``k`` per check, then the best of those), then only the
    picked rows are read whole: neither the keys nor the details of every finding are ever held
    at once."""
    indexed = findings.with_row_index("_i")
    keys = ["check", "sev_rank", "per_shard", "score", "_i"]
    descending = [False, False, True, True, False]

    def best(group: pl.LazyFrame) -> pl.LazyFrame:
        return (group.filter(pl.col("record_id").is_not_null())
                .select("_i", "check", "score", "shard",
                        sev_rank=pl.col("severity").replace_strict(SEVERITY_RANK, default=3, return_dtype=pl.Int8),
                        per_shard=pl.len().over(["check", "shard"]))
                .sort(keys, descending=descending)
                .group_by("check", maintain_order=True).head(k))

    top = (collect_by_shard_groups(indexed, best)
           .sort(keys, descending=descending)
           .group_by("check", maintain_order=True).head(k)
           .select("_i", "shard").with_row_index("_order"))
    # one shard's picks at a time: a filter on positions all over the file would read every row group at once
    rows = [indexed.filter((pl.col("shard").is_null() if shard is None else pl.col("shard") == shard)
                           & pl.col("_i").is_in(picks["_i"].implode())).collect()
            for (shard,), picks in top.group_by("shard", maintain_order=True)]
    if not rows:
        return indexed.head(0).drop("_i").collect()
    return (pl.concat(rows).join(top.drop("shard"), on="_i", how="inner")
            .sort("_order").drop("_i", "_order"))


def _spans(detail: dict) -> list[dict]:
    matches = detail.get("matches") or detail.get("spans") or []
    if not matches and {"start", "end"} <= set(detail):
        matches = [detail]
    return [m for m in matches if isinstance(m, dict) and "start" in m and "end" in m]


def excerpt_of(record: dict, detail: dict, width: int) -> tuple[str, str, list[list[int]]]:
    """(field, excerpt, highlight spans) for one record; spans marked ``redact``
    are masked after their first 4 characters, so no secret reaches the report."""
    spans = _spans(detail)
    field = detail.get("field") or (spans[0].get("field") if spans else None)
    if field not in record or record.get(field) is None:
        field = next((f for f in TEXT_FIELDS if record.get(f)), None)
    if field is None:
        return "", "", []
    # every excerpt, whatever check asked for it, has its secrets masked first
    text: str = mask_secrets(str(record[field]), record_text=True)
    spans = [s for s in spans if s.get("field", field) == field]
    for s in spans:
        if s.get("redact"):
            a, b = int(s["start"]), int(s["end"])
            keep = min(4, b - a)
            text = text[: a + keep] + "•" * (b - a - keep) + text[b:]
    start = 0
    if spans:
        start = max(0, int(spans[0]["start"]) - width // 3)
    end = min(len(text), start + width)
    prefix = "…" if start > 0 else ""
    excerpt = prefix + text[start:end] + ("…" if end < len(text) else "")
    shift = len(prefix) - start
    highlights = [[int(s["start"]) + shift, int(s["end"]) + shift] for s in spans
                  if int(s["start"]) >= start and int(s["end"]) <= end]
    return field, excerpt, highlights


def _representatives(picked: pl.DataFrame) -> pl.DataFrame:
    """For the ``dedup.*`` examples: the (shard, record id) of the record each one duplicates (the kept one)."""
    dedup = picked.filter(pl.col("check").str.starts_with("dedup.") & pl.col("detail").is_not_null())
    return (dedup.select(pl.col("shard").alias("dup_shard"), pl.col("record_id").alias("dup_id"),
                         pl.col("detail").str.json_path_match("$.representative").alias("rep_id"),
                         pl.col("detail").str.json_path_match("$.representative_shard").alias("rep_shard"))
            .with_columns(pl.col("rep_shard").fill_null(pl.col("dup_shard")))
            .filter(pl.col("rep_id").is_not_null() & (pl.col("rep_id") != pl.col("dup_id"))))


def _read_records(spec: ScanSpec, ref: ShardRef, ids: set[str], rows: frozenset[int] = frozenset()
                  ) -> dict[str | int, dict]:
    """The records of one shard whose id is in ``ids`` (keyed by id) or whose row index is in
    ``rows`` (keyed by the int row: ids may repeat in a shard, ``detail.row`` names the very
    record). Stops reading once all are found."""
    records: dict[str | int, dict] = {}
    found_rows = 0
    for batch in ShardReader(ref, spec.mapping, batch_size=spec.policy.batch_size,
                             storage_options=spec.storage_options, limits=spec.policy.limits.read_limits()):
        hit = pl.from_arrow(batch).filter(pl.col(RECORD_ID).is_in(list(ids)) | pl.col(ROW).is_in(list(rows)))
        for rec in hit.drop([c for c in hit.columns if c == "image"]).iter_rows(named=True):
            records.setdefault(rec[RECORD_ID], rec)
            if rec[ROW] in rows:
                records[rec[ROW]] = rec
                found_rows += 1
        if len(records) - found_rows >= len(ids) and found_rows >= len(rows):
            break
    return records


def collect_examples(spec: ScanSpec, findings: pl.LazyFrame, results: list[ShardResult], refs: dict[str, ShardRef]) -> pl.DataFrame:
    """Example records with evidence excerpts, re-reading at most a few shards.

    A ``dedup.*`` example also carries the excerpt of the record it duplicates
    (``representative_excerpt``, secrets masked), so the report shows the two
    side by side.
    """
    k = spec.policy.report.examples_per_check
    picked = _pick_examples(findings, k) if k else pl.DataFrame()
    if picked.height == 0:
        return pl.DataFrame(schema=EXAMPLE_COLUMNS)
    ok = {r.shard for r in results if r.ok}
    shards = [s for s in picked["shard"].unique(maintain_order=True).to_list() if s in ok and s in refs]
    shards = shards[:MAX_EXAMPLE_SHARDS]
    reps = _representatives(picked.filter(pl.col("shard").is_in(shards)))
    need: dict[str, set[str]] = {s: set(picked.filter(pl.col("shard") == s)["record_id"].to_list()) for s in shards}
    rep_shards = [s for s in reps["rep_shard"].unique(maintain_order=True).to_list()
                  if s in ok and s in refs and s not in need][:MAX_EXAMPLE_SHARDS]
    for r in reps.iter_rows(named=True):
        if r["rep_shard"] in need or r["rep_shard"] in rep_shards:
            need.setdefault(r["rep_shard"], set()).add(r["rep_id"])
    rows_of = {s: frozenset(r for r in map(_detail_row, picked.filter(pl.col("shard") == s)["detail"].to_list())
                            if r is not None) for s in shards}
    records: dict[tuple[str, str | int], dict] = {}
    for shard, ids in need.items():
        try:
            found = _read_records(spec, refs[shard], ids, rows_of.get(shard, frozenset()))
            records.update({(shard, key): rec for key, rec in found.items()})
        except ShardReadError:
            continue
    rep_of = {(r["dup_shard"], r["dup_id"]): (r["rep_shard"], r["rep_id"]) for r in reps.iter_rows(named=True)}
    width = spec.policy.report.excerpt_chars
    rows = []
    for f in picked.filter(pl.col("shard").is_in(shards)).iter_rows(named=True):
        rec = records.get((f["shard"], _detail_row(f["detail"]))) or records.get((f["shard"], f["record_id"]))
        if rec is None:
            continue
        try:
            detail = json.loads(f["detail"] or "{}")
        except ValueError:
            detail = {}
        detail = detail if isinstance(detail, dict) else {}
        field, excerpt, hl = excerpt_of(rec, detail, width)
        row = {**{c: f[c] for c in ("shard", "record_id", "check", "severity", "score", "detail")},
               "field": field, "excerpt": excerpt, "highlights": json.dumps(hl),
               "representative_shard": None, "representative_excerpt": None}
        rep_key = rep_of.get((f["shard"], f["record_id"]))
        rep = records.get(rep_key) if rep_key else None
        if rep is not None:
            row["representative_shard"] = rep_key[0]
            row["representative_excerpt"] = excerpt_of(rep, {"field": field} if field else {}, width)[1]
        rows.append(row)
    return pl.DataFrame(rows, schema=EXAMPLE_COLUMNS) if rows else pl.DataFrame(schema=EXAMPLE_COLUMNS)


def _detail_row(detail: str | None) -> int | None:
    """``detail.row`` of a finding (its record's row index in the shard), when it has one."""
    try:
        row = json.loads(detail or "{}").get("row")
    except (ValueError, AttributeError):
        return None
    return row if isinstance(row, int) else None


def thumbnail_count(check: Check) -> int:
    """How many of a check's findings get a thumbnail: its ``thumbnails`` option (0 without one)."""
    return int(check.options.get("thumbnails") or 0)


def attach_thumbnails(found: dict[str, tuple[int, pl.DataFrame]], mapping: ColumnMapping | None = None
                      ) -> dict[str, pl.DataFrame]:
    """Each check's corpus findings (``{name: (k, findings)}``) with thumbnails in the detail of
    its ``k`` best-scored findings whose image is named (``uri``/``row`` columns), from at most
    :data:`MAX_THUMBNAIL_SHARDS` shards per check; the images of all checks are re-read in one
    pass (each shard once, with the scan's column mapping). Frames are returned as given
    otherwise, location columns included (the caller drops them)."""
    picked: dict[str, tuple[pl.DataFrame, dict[str, dict[int, dict]]]] = {}
    jobs: list[dict] = []
    for name, (k, frame) in found.items():
        # ``image_row``: the row of a finding that carries no ``row`` (which would go into its detail)
        view = frame.rename({"image_row": ROW}) if ROW not in frame.columns and "image_row" in frame.columns else frame
        if k <= 0 or frame.height == 0 or not {"uri", ROW} <= set(view.columns):
            continue
        top = pick_thumbnails(view, k, MAX_THUMBNAIL_SHARDS)
        if top.height == 0:
            continue
        mine = [{"uri": r["uri"], "row": r[ROW], "box": r.get("box")} for r in top.iter_rows(named=True)]
        more: dict[str, dict[int, dict]] = {}
        if {"representative_uri", "representative_row"} <= set(top.columns):
            reps = top.filter(pl.col("representative_uri").is_not_null() & pl.col("representative_row").is_not_null())
            more["representative_thumbnail"] = {int(r["_i"]): {"uri": r["representative_uri"],
                                                                "row": int(r["representative_row"])}
                                                for r in reps.iter_rows(named=True)}
            mine += list(more["representative_thumbnail"].values())
        # a finding shown beside a second image may need twice the shards
        jobs += busiest_shards(mine, 2 * MAX_THUMBNAIL_SHARDS if more else MAX_THUMBNAIL_SHARDS)
        picked[name] = (top, more)
    if not jobs:
        return {name: frame for name, (_, frame) in found.items()}
    got = fetch_thumbnails(jobs, max_shards=len({j["uri"] for j in jobs}), mapping=mapping)
    out = {}
    for name, (_, frame) in found.items():
        if name in picked:
            top, more = picked[name]
            frame = put_thumbnails(frame, top, got, more)
        out[name] = frame
    return out
