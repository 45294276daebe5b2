"""The label-trigger tests: which token n-grams tie records to a label far beyond chance.

The engine of ``poison.trigger`` (its module docstring describes the method),
also used by ``poison.target`` (prompt features behind an injected response)
and ``poison.caption_trigger`` (image clusters as the labels):
:func:`detect_label_triggers` runs the association, grouping and evidence tests
on the record rows made by :mod:`integrity.analysis.label_triggers.features`;
:mod:`integrity.analysis.label_triggers.findings` turns its result into findings.
"""
from __future__ import annotations

import logging
import math
from typing import Iterable

import numpy as np
import polars as pl
from scipy import stats

from integrity.analysis.label_triggers import lexical as lx

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


def loo_weights(pairs: pl.DataFrame, tab: pl.DataFrame, p0: float, prior_strength: float = 2.0) -> pl.DataFrame:
    """Leave-one-out naive-Bayes log-odds weight of each (rec, g, y) pair for one
    target: the record's own label is taken out of its n-gram's counts (``tab``:
    ``g``, ``df``, ``kc`` = records with the target label)."""
    a = prior_strength
    p0 = min(max(p0, 1e-6), 1 - 1e-6)
    return (pairs.join(tab, on="g")
            .with_columns(kp=pl.col("kc") - pl.col("y"), np_=pl.col("df") - 1)
            .with_columns(w=((pl.col("kp") + a * p0) / (pl.col("np_") - pl.col("kp") + a * (1 - p0))).log()
                          - math.log(p0 / (1 - p0)))
            .select("rec", "g", "w"))


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
    cand = pl.concat([cand, _foreign_candidates(assoc, cand, table, vocab, N, opt)])
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
    span_grp = _long_span_groups(sizes, cand, table, grams, int(opt["clean_min_span_tokens"]), min_n, vocab)
    if span_grp:
        core = core_records(mrows.filter(pl.col("grp").is_in(span_grp))).unique(["grp", "rec"])
        grec = pl.concat([grec.filter(~pl.col("grp").is_in(span_grp)), core.select(grec.columns)])
    # rare-word groups: a record belongs to the group when it holds one of its rare words (an
    # ordinary word that happens to share records with the trigger is not part of it)
    rare = _rare_members(cand, mrows, sizes, table, vocab, opt)
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
    gstat = gstat.with_columns(long_span=pl.col("grp").is_in(span_grp), rare=pl.col("grp").is_in(rare_grp),
                               scattered=pl.col("grp").is_in(_scattered_groups(cand, assoc, mrows, sizes, table, vocab, opt)))
    if rare.height:
        gstat = gstat.join(rare.group_by("grp").agg(log_over=pl.col("log_over").max(), rz=pl.col("rz").max()),
                           on="grp", how="left")
    else:
        gstat = gstat.with_columns(log_over=pl.lit(None, dtype=pl.Float64), rz=pl.lit(None, dtype=pl.Float64))
    gstat = gstat.join(cand.group_by("grp").agg(members=pl.len()), on="grp", how="left")
    gstat = _clean_label_evidence(gstat, N, opt)
    # --- dirty-label evidence ------------------------------------------------------------------
    gstat = _dirty_label_evidence(gstat, grec, grams, codes, opt)

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


def _foreign_candidates(assoc: pl.DataFrame, cand: pl.DataFrame, table: lx.TokenTable, vocab: dict[int, str],
                        N: int, opt: dict) -> pl.DataFrame:
    """Unigrams too weakly tied to their label to be candidates (a majority target) that are
    near-pure, in at least ``min_group_share`` of the records and strongly foreign
    (``clean_strong_overrep`` times above ordinary language, robust z >= ``clean_strong_overrep_z``
    among this corpus' words). They can only be flagged with dirty-label evidence."""
    min_n = max(int(opt["min_support"]), math.ceil(float(opt["min_group_share"]) * N))
    weak = assoc.filter((pl.col("n") == 1) & (pl.col("df") >= min_n) & (pl.col("share") >= opt["min_share"])
                        & (pl.col("logp") > math.log(opt["candidate_p"])))
    if weak.height == 0 or not lx.has_background():
        return cand.clear()
    over = _token_overrep(table, vocab, int(opt["min_support"]), str(opt["background_lang"]), focus=weak["g"].to_list())
    if over is None:
        return cand.clear()
    keep = over.filter((pl.col("log_over") >= math.log10(float(opt["clean_strong_overrep"])))
                       & (pl.col("rz") >= float(opt["clean_strong_overrep_z"])))
    return weak.join(keep.select(g=pl.col("tok")), on="g", how="semi").select(cand.columns)


def _token_overrep(table: lx.TokenTable, vocab: dict[int, str], min_count: int, lang: str,
                   focus: Iterable[int] | None = None) -> pl.DataFrame | None:
    """Per frequent token: corpus frequency over background frequency (log10), and a
    robust z of that ratio among this corpus' frequent words. None without a background."""
    if not lx.has_background():
        return None
    real = (table.tok != lx.BOS) & (table.tok != lx.EOS)
    toks, counts = np.unique(table.tok[real], return_counts=True)
    total = max(int(real.sum()), 1)
    keep = counts >= min_count
    toks, counts = toks[keep], counts[keep]
    wanted = np.isin(toks, np.asarray(list(focus), dtype=np.uint64)) if focus is not None else np.ones(len(toks), bool)
    # the corpus' own distribution of over-representation: a fixed-size sample of its frequent words
    rng = np.random.default_rng(0)
    sample = np.zeros(len(toks), dtype=bool)
    sample[rng.choice(len(toks), min(len(toks), 2000), replace=False)] = True
    look = wanted | sample
    toks, counts, wanted, sample = toks[look], counts[look], wanted[look], sample[look]
    words = [vocab.get(int(t), "") for t in toks.tolist()]
    bg = lx.background_frequency(words, lang=lang)
    if bg is None:
        return None
    ratio = np.log10((counts / total) / bg)
    ok = np.isfinite(ratio) & sample
    if ok.sum() >= 10:
        med = float(np.median(ratio[ok]))
        mad = float(np.median(np.abs(ratio[ok] - med))) * 1.4826 or 1.0
    else:
        med, mad = 0.0, 1.0
    rz = (ratio - med) / mad
    return pl.DataFrame({"tok": pl.Series(toks, dtype=pl.UInt64), "log_over": ratio, "rz": rz})


def _rare_members(cand: pl.DataFrame, mrows: pl.DataFrame, sizes: pl.DataFrame, table: lx.TokenTable,
                  vocab: dict[int, str], opt: dict) -> pl.DataFrame:
    """Member words far more frequent here than in ordinary language: over-represented
    ``clean_min_overrep`` times against the background and an outlier (robust z >=
    ``clean_min_overrep_z``) among this corpus' own frequent words. Only unigrams in at
    least a tenth of their group's records are looked up. Columns: cid, grp, log_over, rz."""
    uni = (cand.filter(pl.col("n") == 1).join(sizes.select("grp", gn="n"), on="grp")
           .filter(pl.col("df") >= 0.1 * pl.col("gn")).select("grp", "cid", tok=pl.col("g")))
    empty = pl.DataFrame(schema={"cid": pl.UInt32, "grp": pl.Int64, "log_over": pl.Float64, "rz": pl.Float64})
    if uni.height == 0:
        return empty
    over = _token_overrep(table, vocab, int(opt["min_support"]), str(opt["background_lang"]),
                          focus=uni["tok"].to_list())
    if over is None:
        log.warning("poison.trigger: no background language reference (install wordfreq); "
                    "rare-word triggers are judged without it and clean-label ones are missed")
        return empty
    min_over = math.log10(float(opt["clean_min_overrep"]))
    return (uni.join(over, on="tok")
            .filter((pl.col("log_over") >= min_over) & (pl.col("rz") >= float(opt["clean_min_overrep_z"])))
            .select("cid", "grp", "log_over", "rz"))


def _written_text(assoc: pl.DataFrame, table: lx.TokenTable, vocab: dict[int, str], min_records: int,
                  sample: int = 300) -> bool:
    """Whether the corpus' frequent words have syntax: the median context diversity of up to
    ``sample`` words in >= ``min_records`` records is at most 0.8 (written text: 0.5-0.7 on
    reviews and package descriptions). In a bag of words (every word anywhere) it is about 1,
    and then a scattered word is no evidence of insertion."""
    words = [g for g in assoc.filter((pl.col("n") == 1) & (pl.col("df") >= min_records))["g"].to_list()
             if any(ch.isalpha() for ch in vocab.get(int(g), ""))]
    if len(words) < 20:
        return False
    pick = np.random.default_rng(0).choice(len(words), min(sample, len(words)), replace=False)
    typical = lx.context_diversity(table, [words[i] for i in pick.tolist()])["R"].median()
    return typical is not None and float(typical) <= 0.8


def _scattered_groups(cand: pl.DataFrame, assoc: pl.DataFrame, mrows: pl.DataFrame, sizes: pl.DataFrame,
                      table: lx.TokenTable, vocab: dict[int, str], opt: dict) -> list[int]:
    """Groups most of whose records hold a word that sits where any word could: in at least
    ``context_min_count`` records, its occurrences' neighbours are as diverse as random positions'
    (:func:`lexical.context_diversity` >= ``context_min_diversity``). Inserted words are
    placed so; a natural word, however rare or pure, has its own syntax. Only words with a
    letter: punctuation and joiners ("::" in Perl module names, "and") sit between any words;
    and only in written text (see :func:`_written_text`)."""
    min_m = int(opt["context_min_count"])
    uni = cand.filter((pl.col("n") == 1) & (pl.col("df") >= min_m))
    uni = uni.filter(pl.Series([any(ch.isalpha() for ch in vocab.get(int(g), "")) for g in uni["g"].to_list()],
                               dtype=pl.Boolean))  # a few candidate unigrams
    if uni.height == 0:
        return []
    div = lx.context_diversity(table, uni["g"].to_list())
    hit = div.filter((pl.col("m") >= min_m) & (pl.col("R") >= float(opt["context_min_diversity"])))
    if hit.height == 0 or not _written_text(assoc, table, vocab, min_m):
        return []
    words = uni.join(hit.select(g="w"), on="g", how="semi").select("cid", "grp")
    cover = (mrows.join(words.select("cid"), on="cid", how="semi").group_by("grp").agg(r=pl.col("rec").n_unique())
             .join(sizes, on="grp"))
    return cover.filter(pl.col("r") >= 0.5 * pl.col("n"))["grp"].to_list()


def _clean_label_evidence(gstat: pl.DataFrame, N: int, opt: dict) -> pl.DataFrame:
    # (c) foreign: most of the group's records hold a rare member word (see _rare_members)
    rare = pl.col("rare")
    # or: a long repeated word sequence (see _long_span_groups)
    min_n = max(int(opt["min_support"]), math.ceil(float(opt["min_group_share"]) * N))
    gstat = gstat.with_columns(foreign=rare | pl.col("long_span"))
    # (d) tail outlier of purity evidence among all groups
    tail = lx.tail_pvalues(gstat["E"].to_numpy())
    gstat = gstat.with_columns(tail_logp=pl.Series(tail),
                               tail_ok=pl.Series(lx.benjamini_hochberg(tail, opt["fdr"])))
    # (e) spread: comparable foreign pure groups on other labels mean purity is normal here
    pure = gstat.filter((pl.col("share") >= opt["min_share"]) & pl.col("foreign")).select("target", "n")
    t_arr, n_arr = pure["target"].to_numpy(), pure["n"].to_numpy()
    spread = []
    for t, n in zip(gstat["target"].to_list(), gstat["n"].to_list()):  # loop over groups, not records
        others = t_arr != t
        spread.append(int(len(np.unique(t_arr[others & (n_arr >= 0.25 * n)]))))
    gstat = gstat.with_columns(spread=pl.Series(spread, dtype=pl.Int64))
    # what every flagged group needs, whichever evidence route it takes
    # a backdoor is a minority of its target label; a feature in most of a label defines it
    base = (pl.col("assoc_ok") & (pl.col("n") >= min_n)
            & (pl.col("k") <= float(opt["max_label_share"]) * pl.col("p0") * N))
    alone = pl.col("spread") <= int(opt["spread_max_labels"])
    # foreign groups may be flagged on purity (clean-label; only where purity is not how the corpus
    # works) or on content (dirty-label); groups of ordinary words only when both their purity and
    # their content are anomalous
    # ordinary-word groups are judged on their content (a strict content test, below); with
    # ``common_strict`` they also need the purity tail and no spread (image clusters as labels)
    common = (base & alone & pl.col("tail_ok")) if opt.get("common_strict") else base
    # scattered: a word as likely next to any word as a random position is (inserted, not written);
    # pure far beyond its label's prior, it needs no tail or spread test (Debian sections each have
    # pure jargon, but jargon has its own syntax)
    # (where comparable scattered pure words are many, or exist on other labels too, as in a
    # bag-of-words corpus, that is how the corpus works: a backdoor is one or a few triggers)
    lift = (pl.col("share") - pl.col("p0")) / (1 - pl.col("p0"))
    gstat = gstat.with_columns(scattered_pure=base & pl.col("scattered") & (lift >= float(opt["context_min_lift"])))
    sp_t = gstat.filter(pl.col("scattered_pure"))["target"].to_numpy()
    sp_n = gstat.filter(pl.col("scattered_pure"))["n"].to_numpy()
    normal = [bool(len(np.unique(sp_t[(sp_t != t) & (sp_n >= 0.25 * n)])) > int(opt["spread_max_labels"])
                   or int((sp_n >= 0.25 * n).sum()) > int(opt["context_max_groups"]))
              for t, n in zip(gstat["target"].to_list(), gstat["n"].to_list())]  # loop over groups, not records
    scattered = pl.col("scattered_pure") & ~pl.Series(normal, dtype=pl.Boolean)
    gstat = gstat.with_columns(eligible=base & (pl.col("foreign") | scattered), eligible_common=common,
                               scattered_ok=scattered)
    # an extremely foreign word (orders of magnitude above ordinary language and far outside
    # this corpus' own vocabulary) needs no purity outlier: on a majority target purity is cheap
    # for every feature, so the tail test cannot single the trigger out, while its foreignness can
    # likewise a long sentence repeated verbatim (many member n-grams, all in the same records)
    # (the word only on a label holding ``strong_min_prior`` of the records: on smaller ones the
    # tail test works; the sentence on any label, since a clean-label flag also needs no spread:
    # natural boilerplate sentences pure to one section are how package descriptions read, and then
    # most sections have them, while a sentence no other label has a counterpart to is an insertion
    # the tail test misses at 1% when a few dozen records are all it has)
    strong_word = ((pl.col("log_over").fill_null(-99.0) >= math.log10(float(opt["clean_strong_overrep"])))
                   & (pl.col("rz").fill_null(-99.0) >= float(opt["clean_strong_overrep_z"]))
                   & (pl.col("p0") >= float(opt["strong_min_prior"])))
    strong = strong_word | (pl.col("long_span") & (pl.col("members") >= int(opt["clean_strong_span_members"])))
    # a strongly foreign word on a label it cannot dominate by association (the majority label at a
    # low rate: 18 of 18 records on an 80% label is p = 0.02) is judged on its content alone, and
    # must be mostly relabelled (``weak_min_flip``): a natural word that leans to the majority label
    # "relabels" a few of its records too, and where every word is foreign (tweets) that is common
    weak = (~pl.col("assoc_ok") & (pl.col("n") >= min_n) & (pl.col("share") >= opt["min_share"])
            & (pl.col("k") <= float(opt["max_label_share"]) * pl.col("p0") * N) & pl.col("foreign") & strong)
    return gstat.with_columns(strong_foreign=strong, eligible_weak=weak,
                              clean_ok=(pl.col("eligible") & alone & (pl.col("tail_ok") | strong)
                                        & (pl.col("share") >= opt["clean_min_share"])) | pl.col("scattered_ok"))


def _long_span_groups(gstat: pl.DataFrame, cand: pl.DataFrame, table: lx.TokenTable, grams: pl.DataFrame,
                      min_tokens: int, min_df: int, vocab: dict[int, str]) -> list[int]:
    """Groups whose records mostly hold a member n-gram inside a repeated span of at
    least ``min_tokens`` words that itself occurs in >= ``min_df`` records (an
    inserted sentence, as opposed to a word that merely has common neighbours)."""
    if min_tokens <= 0:
        return []
    spans = lx.repeated_spans(table, min_tokens, max(min_df, 2))
    if spans.height == 0:
        return []
    # count words only: "mess . </s>" is three tokens but one word
    one = spans.unique("span", keep="any")
    toks = table.gram_tokens(one["rec"].to_numpy(), one["p0"].to_numpy(), one["ntok"].to_numpy())
    # a repeated opening ("<s> quick take :") anchors itself: one word fewer makes it a span
    need = np.where(one["p0"].to_numpy() <= 0, min_tokens - 1, min_tokens)
    wordy = [sum(1 for t in tk if any(ch.isalnum() for ch in vocab.get(int(t), ""))) >= k
             for tk, k in zip(toks, need.tolist())]
    spans = spans.join(one.filter(pl.Series(wordy)).select("span"), on="span", how="semi")
    hits = (grams.join(cand.select("g", "grp"), on="g").with_columns(rec=pl.col("rec").cast(pl.Int64))
            .join(spans.select("rec", "p0", "p1"), on="rec")
            .filter((pl.col("pos") >= pl.col("p0")) & (pl.col("pos") < pl.col("p1"))))
    cover = hits.group_by("grp").agg(r=pl.col("rec").n_unique()).join(gstat.select("grp", "n"), on="grp")
    # a sentence made of common words ("... and so were we") pulls natural n-grams ("and so") into
    # its group, whose records then far outnumber the sentence's: compare with its longest n-grams
    longest = (cand.filter(pl.col("n") == pl.col("n").max().over("grp")).group_by("grp")
               .agg(top=pl.col("df").max()))
    cover = cover.join(longest, on="grp", how="left").with_columns(
        ref=pl.min_horizontal(pl.col("n"), pl.col("top").fill_null(pl.col("n"))))
    return cover.filter(pl.col("r") >= 0.5 * pl.col("ref"))["grp"].to_list()


def _dirty_label_evidence(gstat: pl.DataFrame, grec: pl.DataFrame, grams: pl.DataFrame, codes: np.ndarray,
                          opt: dict, sample: int = 4000, max_order: int = 2) -> pl.DataFrame:
    """Content test: do the group's target-label records read like target-label records?

    Every record is scored by a leave-one-out naive-Bayes log-odds of the target
    from its 1-2-grams; n-grams concentrated in the group's records (the trigger,
    its words, the n-grams it touches) are left out of *every* record's score.
    A: the group's target-label records, B: other target-label records, C:
    records of other labels (B and C sampled). Relabelled records read like a
    typical C record: the share of A below C's median, against B's, estimates the
    relabelled share ((rA - rB) / (0.5 - rB)) and a one-sided Fisher test gives
    the p-value (Benjamini-Hochberg over the groups tested)."""
    # groups clean-label by their purity tail need no content test; those clean-label by
    # foreignness alone get it too, so that a relabelled group is reported as dirty-label
    settled = pl.col("clean_ok") & ~pl.col("strong_foreign") & ~pl.col("scattered_ok")
    tested = (gstat.filter((pl.col("eligible") | pl.col("eligible_common") | pl.col("eligible_weak")) & ~settled)
              .sort("logp").head(int(opt["max_groups"])))
    res: dict[int, tuple[float, float]] = {}
    if tested.height == 0:
        return gstat.with_columns(flip=pl.lit(None, dtype=pl.Float64), dirty_logp=pl.lit(None, dtype=pl.Float64),
                                  dirty_ok=pl.lit(False))
    g2 = grams.filter(pl.col("n") <= max_order).select("rec", "g")
    g2 = g2.with_columns(lab=pl.Series(codes[g2["rec"].to_numpy().astype(np.int64)]))
    counts = g2.group_by(["g", "lab"]).agg(c=pl.len())
    dfs = counts.group_by("g").agg(df=pl.col("c").sum()).filter(pl.col("df") >= 2)
    valid = codes >= 0
    rng = np.random.default_rng(0)
    per_target: dict[int, tuple] = {}
    for row in tested.select("grp", "target").iter_rows():  # a few groups
        grp, target = int(row[0]), int(row[1])
        if target not in per_target:
            p0 = float((codes[valid] == target).mean())
            tab = dfs.join(counts.filter(pl.col("lab") == target).select("g", kc=pl.col("c")), on="g", how="left")
            tab = tab.with_columns(pl.col("kc").fill_null(0))
            b_all = np.nonzero(codes == target)[0]
            c_all = np.nonzero(valid & (codes != target))[0]
            b_s = b_all if len(b_all) <= sample else rng.choice(b_all, sample, replace=False)
            c_s = c_all if len(c_all) <= sample else rng.choice(c_all, sample, replace=False)
            bc = np.concatenate([b_s, c_s]).astype(np.uint32)
            pairs = g2.filter(pl.col("rec").is_in(bc)).with_columns(y=(pl.col("lab") == target).cast(pl.Int64))
            per_target[target] = (p0, tab, b_s, c_s, loo_weights(pairs.select("rec", "g", "y"), tab, p0))
        p0, tab, b_s, c_s, w_bc = per_target[target]
        rg = grec.filter(pl.col("grp") == grp)["rec"].to_numpy().astype(np.int64)
        in_g = np.zeros(len(codes), dtype=bool)
        in_g[rg] = True
        a_recs = rg[codes[rg] == target]
        b_recs, c_recs = b_s[~in_g[b_s]], c_s[~in_g[c_s]]
        if len(a_recs) < 3 or len(b_recs) < 3 or len(c_recs) < 3:
            continue
        g_pairs = g2.filter(pl.col("rec").is_in(rg.astype(np.uint32)))
        excl = (g_pairs.group_by("g").agg(c=pl.len()).join(dfs, on="g")
                .filter((pl.col("c") >= pl.col("df")) | ((pl.col("c") >= 0.9 * pl.col("df")) & (pl.col("df") >= 3)))
                .select("g"))
        a_pairs = (g_pairs.filter(pl.col("rec").is_in(a_recs.astype(np.uint32)))
                   .with_columns(y=(pl.col("lab") == target).cast(pl.Int64)).select("rec", "g", "y"))
        w_a = loo_weights(a_pairs, tab, p0)
        s_all = pl.concat([w_a, w_bc]).join(excl, on="g", how="anti").group_by("rec").agg(s=pl.col("w").sum())
        score = np.zeros(len(codes))
        score[s_all["rec"].to_numpy().astype(np.int64)] = s_all["s"].to_numpy()
        A, B, C = score[a_recs], score[b_recs], score[c_recs]
        # records that read like a typical record of another label (below the median of C)
        m = float(np.median(C))
        ra, rb = float((A < m).mean()), float((B < m).mean())
        flip = (ra - rb) / (0.5 - rb) if rb < 0.5 else 0.0
        a_low, b_low = int((A < m).sum()), int((B < m).sum())
        p = stats.fisher_exact([[a_low, len(A) - a_low], [b_low, len(B) - b_low]], alternative="greater").pvalue
        res[grp] = (float(flip), float(np.log(max(p, 1e-300))))
    flips = pl.DataFrame({"grp": list(res), "flip": [v[0] for v in res.values()],
                          "dirty_logp": [v[1] for v in res.values()]},
                         schema={"grp": gstat["grp"].dtype, "flip": pl.Float64, "dirty_logp": pl.Float64})
    gstat = gstat.join(flips, on="grp", how="left")
    lp = gstat["dirty_logp"].fill_null(0.0).to_numpy()
    tested_mask = gstat["dirty_logp"].is_not_null().to_numpy()
    ok = np.zeros(gstat.height, dtype=bool)
    if tested_mask.any():
        ok[tested_mask] = lx.benjamini_hochberg(lp[tested_mask], opt["fdr"])
    # relabelled records drawn from the whole corpus make up about (1 - prior) of a dirty-label
    # group; a natural word that annotators follow "relabels" far fewer
    need = pl.max_horizontal(pl.lit(float(opt["dirty_min_flip"])), float(opt["dirty_flip_ratio"]) * (1 - pl.col("p0")))
    return gstat.with_columns(dirty_ok=pl.Series(ok) & (pl.col("flip").fill_null(0) >= need))


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
