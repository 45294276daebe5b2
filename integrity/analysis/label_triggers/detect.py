"""The label-trigger tests: which token n-grams tie records to a label far beyond chance.

The engine of ``poison.trigger`` (its module docstring describes the method),
also used by ``poison.target`` (prompt features behind an injected response)
and ``poison.caption_trigger`` (image clusters as the labels):
:func:`detect_label_triggers` runs the association, grouping and evidence tests
on the record rows made by :mod:`integrity.analysis.label_triggers.features`;
:mod:`integrity.analysis.label_triggers.findings` turns its result into findings.
The evidence tests live in :mod:`integrity.analysis.label_triggers.clean_label` (is the
trigger foreign to its text?) and :mod:`integrity.analysis.label_triggers.dirty_label`
(do the records read like their label?).
"""
from __future__ import annotations

import logging
import math

import numpy as np
import polars as pl
from scipy import stats

from integrity.analysis.label_triggers import lexical as lx
from integrity.analysis.label_triggers.clean_label import (clean_label_evidence, foreign_candidates,
                                                           long_span_groups, opening_records, rare_members,
                                                           scattered_groups, written_text)
from integrity.analysis.label_triggers.dirty_label import dirty_label_evidence, loo_weights  # noqa: F401 (re-export)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# the statistics
# ------------------------------------------------------------------------------------------------
def label_codes(labels: pl.Series) -> tuple[np.ndarray, list[str]]:
    """Integer code per record (-1 for a null label) and the label names."""
    names = sorted(labels.drop_nulls().unique().to_list())
    index = {n: i for i, n in enumerate(names)}
    codes = labels.replace_strict(index, default=-1, return_dtype=pl.Int32).to_numpy()
    return codes.astype(np.int64), names


def detect_label_triggers(recs: pl.DataFrame, vocab: dict[int, str], opt: dict) -> dict | None:
    """Run the association, grouping and evidence tests; returns the flagged groups
    and everything needed to write findings (or None).

    A dirty-label attack distorts the statistics the clean-label route relies on: its
    relabelled records lower the purity of their own labels' natural features (10% of
    a section moved to the target leaves its boilerplate 90% pure), so those labels no
    longer count as labels where purity is normal (the spread test) and a natural
    feature of the target looks like a lone purity outlier. So when some group is
    flagged on content (dirty-label) and others on purity alone, the tests run again
    with the dirty groups' records unlabelled, and a purity-only group is kept only if
    that second pass flags it too (half of its records in a flagged group)."""
    first = _detect_once(recs, vocab, opt)
    if first is None or first["groups"].height == 0:
        return first
    groups = first["groups"]
    dirty = groups.filter(pl.col("dirty_ok"))
    purity_only = groups.filter(~pl.col("dirty_ok"))
    if dirty.height == 0 or purity_only.height == 0:
        return first
    drop = first["grec"].join(dirty.select("grp"), on="grp", how="semi")["rec"].unique().to_numpy()
    explained = np.zeros(recs.height, dtype=bool)
    explained[drop.astype(np.int64)] = True
    second = _detect_once(recs.with_columns(label=pl.when(pl.Series(explained)).then(None).otherwise(pl.col("label"))),
                          vocab, opt)
    confirmed: set[int] = set()
    if second is not None and second["groups"].height:
        again = second["grec"].join(second["groups"].select("grp"), on="grp", how="semi")["rec"].unique()
        held = (first["grec"].join(purity_only.select("grp"), on="grp", how="semi")
                .with_columns(again=pl.col("rec").is_in(again.implode()))
                .group_by("grp").agg(share=pl.col("again").mean()))
        confirmed = set(held.filter(pl.col("share") >= 0.5)["grp"].to_list())
    dropped = [g for g in purity_only["grp"].to_list() if g not in confirmed]
    if dropped:
        log.info("label triggers: %d purity-only group(s) explained by a dirty-label attack's relabelling", len(dropped))
    return {**first, "groups": groups.filter(~pl.col("grp").is_in(dropped))}


def _detect_once(recs: pl.DataFrame, vocab: dict[int, str], opt: dict) -> dict | None:
    """One run of the tests over ``recs`` (columns ``label``, ``t_tok``)."""
    codes, names = label_codes(recs["label"])
    if len(names) < 2:
        return None
    N = int((codes >= 0).sum())
    table = lx.TokenTable.from_lists(recs["t_tok"], boundaries=True)
    grams = lx.doc_ngrams(table, range(1, int(opt["ngram_max"]) + 1))
    assoc = lx.label_association(grams, codes, min_support=int(opt["min_support"]))
    cand = assoc.filter((pl.col("share") >= opt["min_share"]) & (pl.col("logp") <= math.log(opt["candidate_p"])))
    cand = pl.concat([cand, foreign_candidates(assoc, cand, table, vocab, N, opt)])
    if cand.height == 0:
        return None
    cand = cand.with_row_index("cid")
    X, member = lx.membership(grams, cand, table.n_records)
    comp = lx.cooccurrence_groups(X, cand["df"].to_numpy(), cand["target"].to_numpy(), N,
                                  min_overlap=float(opt["group_min_overlap"]))
    cand = cand.with_columns(grp=pl.Series(comp))
    # group record sets (union of member records) and their label statistics
    mrows = member.select("rec", "cid").join(cand.select("cid", "grp", "target"), on="cid")
    grec = mrows.unique(["grp", "rec"])
    # inserted-sentence groups: a record belongs to the group when it holds most of the sentence
    # (not when it merely shares one of its words), for the statistics as for the findings
    min_n = max(int(opt["min_support"]), math.ceil(float(opt["min_group_share"]) * N))
    sizes = grec.group_by("grp").agg(n=pl.len())
    span_grp = long_span_groups(sizes, cand, table, grams, int(opt["clean_min_span_tokens"]), min_n, vocab)
    if span_grp:
        core = core_records(mrows.filter(pl.col("grp").is_in(span_grp))).unique(["grp", "rec"])
        grec = pl.concat([grec.filter(~pl.col("grp").is_in(span_grp)), core.select(grec.columns)])
    # rare-word groups: a record belongs to the group when it holds one of its rare words (an
    # ordinary word that happens to share records with the trigger is not part of it)
    rare = rare_members(cand, mrows, sizes, table, vocab, opt)
    rare_grp: list[int] = []
    if rare.height:
        rrecs = mrows.join(rare.select("cid"), on="cid", how="semi").unique(["grp", "rec"])
        cover = rrecs.group_by("grp").agg(r=pl.len()).join(grec.group_by("grp").agg(n=pl.len()), on="grp")
        rare_grp = [g for g in cover.filter(pl.col("r") >= 0.5 * pl.col("n"))["grp"].to_list() if g not in span_grp]
        if rare_grp:
            grec = pl.concat([grec.filter(~pl.col("grp").is_in(rare_grp)),
                              rrecs.filter(pl.col("grp").is_in(rare_grp)).select(grec.columns)])
    # phrase groups of ordinary words (a short prefix such as "quick take :"): a record belongs to
    # the group when it holds most of the phrase's n-grams, not one of its common words
    nmem = cand.group_by("grp").agg(m=pl.len())
    phrase_grp = [g for g in nmem.filter(pl.col("m") >= 4)["grp"].to_list() if g not in span_grp and g not in rare_grp]
    if phrase_grp:
        core = core_records(mrows.filter(pl.col("grp").is_in(phrase_grp))).unique(["grp", "rec"])
        grec = pl.concat([grec.filter(~pl.col("grp").is_in(phrase_grp)), core.select(grec.columns)])
    # phrases put in front of texts: a record belongs to the group when it opens with the phrase
    open_grp: list[int] = []
    if opt.get("opening_min_count") and written_text(assoc, table, vocab, int(opt["context_min_count"])):
        opening = opening_records(cand, member, grams, table, codes, opt)
        if opening.height:
            open_grp = opening["grp"].unique().to_list()
            narrow = open_grp
            core = (mrows.with_columns(pl.col("grp").cast(pl.Int64), rec_=pl.col("rec").cast(pl.Int64))
                    .join(opening.rename({"rec": "rec_"}), on=["grp", "rec_"], how="semi").drop("rec_")
                    .filter(pl.col("grp").is_in(narrow)))
            grec = pl.concat([grec.filter(~pl.col("grp").is_in(narrow)),
                              core.unique(["grp", "rec"]).select(grec.columns).cast(grec.schema)])
    grec = grec.with_columns(y=pl.Series(codes[grec["rec"].to_numpy().astype(np.int64)]))
    # unlabelled records (no label, or set aside by a second pass) say nothing about purity
    gstat = grec.filter(pl.col("y") >= 0).group_by("grp").agg(target=pl.col("target").first(), n=pl.len(),
                                                               k=(pl.col("y") == pl.col("target")).sum().cast(pl.Int64))
    prior = np.bincount(codes[codes >= 0], minlength=len(names)) / max(N, 1)
    gt = gstat["target"].to_numpy().astype(np.int64)
    gk = gstat["k"].to_numpy().astype(np.float64)
    gn = gstat["n"].to_numpy().astype(np.float64)
    gp0 = prior[gt]
    glogp = stats.binom.logsf(gk - 1, gn, gp0)
    evidence = lx.purity_evidence(gk, gn, gp0, float(opt["natural_rho"]))
    gstat = gstat.with_columns(share=pl.Series(gk / gn), p0=pl.Series(gp0), logp=pl.Series(glogp),
                               E=pl.Series(evidence),
                               z=pl.Series((gk / gn - gp0) / np.sqrt(np.maximum(gp0 * (1 - gp0), 1e-12) / gn)))
    # association itself must survive multiple testing over groups
    gstat = gstat.with_columns(assoc_ok=pl.Series(lx.benjamini_hochberg(glogp, opt["fdr"])))

    # --- clean-label evidence ------------------------------------------------------------------
    # placed, not written: a word scattered at random positions, or a phrase prefixed to texts
    placed = scattered_groups(cand, assoc, mrows, sizes, table, vocab, opt) + open_grp
    gstat = gstat.with_columns(long_span=pl.col("grp").is_in(span_grp), rare=pl.col("grp").is_in(rare_grp),
                               scattered=pl.col("grp").is_in(placed))
    if rare.height:
        gstat = gstat.join(rare.group_by("grp").agg(log_over=pl.col("log_over").max(), rz=pl.col("rz").max()),
                           on="grp", how="left")
    else:
        gstat = gstat.with_columns(log_over=pl.lit(None, dtype=pl.Float64), rz=pl.lit(None, dtype=pl.Float64))
    gstat = gstat.join(cand.group_by("grp").agg(members=pl.len()), on="grp", how="left")
    gstat = clean_label_evidence(gstat, N, opt)
    # --- dirty-label evidence ------------------------------------------------------------------
    gstat = dirty_label_evidence(gstat, grec, grams, codes, opt)

    # ordinary words: a strong natural word also "relabels" the records it appears in (annotators
    # follow it), so only an extreme and strongly contradicted group counts; its purity need not
    # be extreme: an ordinary trigger word also occurs naturally, on every label, and those
    # occurrences dilute its share (a few dozen natural ones cost a 3% attack 0.97 -> 0.96)
    common_ok = (pl.col("eligible_common") & pl.col("dirty_ok") & (pl.col("share") >= opt["common_min_share"])
                 & (pl.col("dirty_logp") <= math.log(opt["common_max_p"]))
                 & (pl.col("flip") >= 0.8 * (1 - pl.col("p0"))))
    flagged = gstat.filter((pl.col("eligible") & (pl.col("dirty_ok") | pl.col("clean_ok"))) | common_ok
                           | (pl.col("eligible_weak") & pl.col("dirty_ok") & (pl.col("flip") >= opt["weak_min_flip"])))
    return {"groups": flagged, "all_groups": gstat, "grec": grec, "cand": cand, "member": member,
            "codes": codes, "names": names, "table": table, "N": N}


def core_records(mem: pl.DataFrame) -> pl.DataFrame:
    """For inserted-sentence groups: keep the (rec, member) rows of records that hold
    at least half as many of the group's distinct member n-grams as its typical
    sentence-holding record (the 90th percentile: natural records sharing a common
    n-gram of the sentence may outnumber the poisoned ones when the target is the
    majority label). The sentence brings all its n-grams; a natural record sharing one
    of its words brings one."""
    per = mem.group_by(["grp", "rec"]).agg(k=pl.col("cid").n_unique())
    per = per.with_columns(med=pl.col("k").quantile(0.9).over("grp")).filter(pl.col("k") >= 0.5 * pl.col("med"))
    return mem.join(per.select("grp", "rec"), on=["grp", "rec"], how="semi")
