"""Findings of the label-trigger checks: one row per flagged record, with the trigger's
text and offsets in that record and the evidence of the tests that flagged its group
(see :func:`integrity.analysis.label_triggers.detect.detect_label_triggers`)."""
from __future__ import annotations

import json
import math

import numpy as np
import polars as pl

from connectors.schema import CORPUS_FINDING_COLUMNS, RECORD_ID, ROW
from integrity.analysis.label_triggers import lexical as lx


def empty_corpus_findings() -> pl.DataFrame:
    """A corpus pass's findings frame with no rows."""
    return pl.DataFrame(schema=CORPUS_FINDING_COLUMNS)


def offsets_for(recs_lazy: pl.LazyFrame, keys: pl.DataFrame, prefix: str) -> dict[tuple[str, str], tuple[list, list]]:
    """Token start/end lists of the records in ``keys`` (shard, record_id, row)."""
    got = (recs_lazy.join(keys.lazy().select("shard", ROW).unique(), on=["shard", ROW], how="semi")
           .select("shard", ROW, f"{prefix}_start", f"{prefix}_end").collect())
    return {(s, r): (a, b) for s, r, a, b in got.iter_rows()}


def score_of(logp: float) -> float:
    """Finding score in [0.5, 1] of a flagged record from the natural-log p-value of its
    trigger's tie to the target (the flagging tests have already passed)."""
    return float(min(1.0, 0.5 + 0.5 * min(1.0, max(0.0, -lx.log10p(logp)) / 40.0)))


def build_findings(recs: pl.DataFrame, recs_lazy: pl.LazyFrame, result: dict, vocab: dict[int, str],
                   prefix: str) -> pl.DataFrame:
    """One finding per record of a flagged group that carries the group's target label
    (``result``: :func:`~integrity.analysis.label_triggers.detect.detect_label_triggers`;
    ``prefix``: the feature columns holding the tokens' character offsets)."""
    groups: pl.DataFrame = result["groups"]
    cand: pl.DataFrame = result["cand"]
    member: pl.DataFrame = result["member"]
    codes: np.ndarray = result["codes"]
    names: list[str] = result["names"]
    table: lx.TokenTable = result["table"]
    gids = groups["grp"].to_list()
    mem = (member.join(cand.select("cid", "grp", "df", "target"), on="cid")
           .filter(pl.col("grp").is_in(gids)))
    mem = mem.with_columns(y=pl.Series(codes[mem["rec"].to_numpy().astype(np.int64)])).filter(
        pl.col("y") == pl.col("target"))
    mem = mem.join(result["grec"].select("grp", "rec"), on=["grp", "rec"], how="semi")  # core records only
    if mem.height == 0:
        return empty_corpus_findings()
    # names of member n-grams
    first = mem.sort(["cid", "rec"]).unique("cid", keep="first")
    gram_names = gram_labels(table, vocab, first["cid"].to_list(), first["rec"].to_numpy(),
                             first["pos"].to_numpy(), first["n"].to_numpy())
    top_members = {g: [c for c in cand.filter(pl.col("grp") == g).sort("df", descending=True)["cid"].to_list()
                       if c in gram_names][:8] for g in gids}
    # every occurrence position of the member n-grams in flagged records: positions from the table
    # (the evidence shows the group's main n-grams: an n-gram joining the trigger to a frequent
    # neighbour is left out when the record holds a main one)
    gsize = groups.select("grp", gn="n")
    mem = (mem.join(gsize, on="grp").with_columns(main=pl.col("df") >= 0.3 * pl.col("gn"))
           .filter(pl.col("main") | ~pl.col("main").any().over("rec")))
    per_rec = (mem.sort(["rec", "df"], descending=[False, True])
               .group_by("rec", maintain_order=True)
               .agg(grp=pl.col("grp").first(), cids=pl.col("cid"), ns=pl.col("n"), poss=pl.col("pos")))
    keys = recs.select("shard", RECORD_ID, ROW).with_row_index("rec")
    per_rec = per_rec.with_columns(pl.col("rec").cast(pl.UInt32)).join(
        keys.with_columns(pl.col("rec").cast(pl.UInt32)), on="rec")
    offs = offsets_for(recs_lazy, per_rec.select("shard", RECORD_ID, ROW), prefix)
    ginfo = {r["grp"]: r for r in groups.iter_rows(named=True)}
    field_of = recs["field"] if "field" in recs.columns else None
    shards, rids, scores, details = [], [], [], []
    for row in per_rec.iter_rows(named=True):  # one finding per flagged record
        g = ginfo[row["grp"]]
        st, en = offs.get((row["shard"], row[ROW]), ([], []))
        fld = field_of[int(row["rec"])] if field_of is not None else "text"
        matches = lx.occurrences(table, vocab, int(row["rec"]), zip(row["poss"], row["ns"]), st, en, fld)
        mode = "dirty-label" if g["dirty_ok"] else "clean-label"
        d = {
            "trigger": sorted({m["text"] for m in matches}) or [gram_names[int(row["cids"][0])]],
            "group": [gram_names[int(c)] for c in top_members[row["grp"]]],
            "target": names[int(g["target"])],
            "mode": mode,
            "support": int(g["n"]),
            "target_records": int(g["k"]),
            "label_share": round(float(g["share"]), 4),
            "label_prior": round(float(g["p0"]), 4),
            "z": round(float(g["z"]), 2),
            "p_value": float(math.exp(max(g["logp"], -700))),
            "log10_p": round(lx.log10p(g["logp"]), 2),
        }
        if g["dirty_ok"]:
            d["relabelled_share"] = round(float(g["flip"]), 3)
            d["content_log10_p"] = round(lx.log10p(g["dirty_logp"]), 2)
        else:
            d["tail_log10_p"] = round(lx.log10p(g["tail_logp"]), 2)
            if g.get("log_over") is not None:
                d["background_overrep"] = round(10 ** float(g["log_over"]), 1)
        if matches:
            d.update(field=matches[0]["field"], start=matches[0]["start"], end=matches[0]["end"])
            d["matches"] = matches
        shards.append(row["shard"])
        rids.append(row[RECORD_ID])
        scores.append(score_of(g["logp"]))
        details.append(json.dumps(d, sort_keys=True))
    return pl.DataFrame({"shard": shards, "record_id": rids, "score": scores, "detail": details,
                         "severity": [None] * len(rids)}, schema=CORPUS_FINDING_COLUMNS)


def gram_labels(table: lx.TokenTable, vocab: dict[int, str], ids: list, rec: np.ndarray, pos: np.ndarray,
                n: np.ndarray) -> dict:
    """Readable n-gram per id, from one occurrence (rec, pos) of each."""
    toks = table.gram_tokens(np.asarray(rec, dtype=np.int64), np.asarray(pos, dtype=np.int64),
                             np.asarray(n, dtype=np.int64))
    return {i: lx.fmt_tokens(t, vocab) for i, t in zip(ids, toks)}
