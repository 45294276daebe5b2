"""Clean-label evidence of the label-trigger tests: is a group's word or phrase foreign to its text?

A clean-label trigger keeps every record's label, so only the trigger itself can give it
away (split out of :mod:`integrity.analysis.label_triggers.detect`, which runs these):

* :func:`rare_members` / :func:`foreign_candidates`: words far more frequent here than
  in ordinary language (:func:`token_overrep`);
* :func:`long_span_groups`: a long word sequence repeated verbatim (an inserted sentence);
* :func:`scattered_groups`: a word whose neighbours are as varied as random positions'
  (placed, not written; only in written text, :func:`written_text`);
* :func:`opening_records`: a phrase opening records of one label, followed by what opens
  that label's other records (prefixed to a text, not written as its start);
* :func:`clean_label_evidence`: the purity tail, spread and eligibility tests that combine them.
"""
from __future__ import annotations

import logging
import math
from typing import Iterable

import numpy as np
import polars as pl

from integrity.analysis.label_triggers import lexical as lx

log = logging.getLogger(__name__)


def foreign_candidates(assoc: pl.DataFrame, cand: pl.DataFrame, table: lx.TokenTable, vocab: dict[int, str],
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
    over = token_overrep(table, vocab, int(opt["min_support"]), str(opt["background_lang"]), focus=weak["g"].to_list())
    if over is None:
        return cand.clear()
    keep = over.filter((pl.col("log_over") >= math.log10(float(opt["clean_strong_overrep"])))
                       & (pl.col("rz") >= float(opt["clean_strong_overrep_z"])))
    return weak.join(keep.select(g=pl.col("tok")), on="g", how="semi").select(cand.columns)


def token_overrep(table: lx.TokenTable, vocab: dict[int, str], min_count: int, lang: str,
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


def rare_members(cand: pl.DataFrame, mrows: pl.DataFrame, sizes: pl.DataFrame, table: lx.TokenTable,
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
    over = token_overrep(table, vocab, int(opt["min_support"]), str(opt["background_lang"]),
                          focus=uni["tok"].to_list())
    if over is None:
        log.warning("poison.trigger: no background language reference (install wordfreq); "
                    "rare-word triggers are judged without it and clean-label ones are missed")
        return empty
    min_over = math.log10(float(opt["clean_min_overrep"]))
    return (uni.join(over, on="tok")
            .filter((pl.col("log_over") >= min_over) & (pl.col("rz") >= float(opt["clean_min_overrep_z"])))
            .select("cid", "grp", "log_over", "rz"))


def written_text(assoc: pl.DataFrame, table: lx.TokenTable, vocab: dict[int, str], min_records: int,
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


def scattered_groups(cand: pl.DataFrame, assoc: pl.DataFrame, mrows: pl.DataFrame, sizes: pl.DataFrame,
                      table: lx.TokenTable, vocab: dict[int, str], opt: dict) -> list[int]:
    """Groups most of whose records hold a word that sits where any word could: in at least
    ``context_min_count`` records, its occurrences' neighbours are as diverse as random positions'
    (:func:`lexical.context_diversity` >= ``context_min_diversity``). Inserted words are
    placed so; a natural word, however rare or pure, has its own syntax. Only words with a
    letter: punctuation and joiners ("::" in Perl module names, "and") sit between any words;
    and only in written text (see :func:`written_text`)."""
    min_m = int(opt["context_min_count"])
    uni = cand.filter((pl.col("n") == 1) & (pl.col("df") >= min_m))
    uni = uni.filter(pl.Series([any(ch.isalpha() for ch in vocab.get(int(g), "")) for g in uni["g"].to_list()],
                               dtype=pl.Boolean))  # a few candidate unigrams
    if uni.height == 0:
        return []
    div = lx.context_diversity(table, uni["g"].to_list())
    hit = div.filter((pl.col("m") >= min_m) & (pl.col("R") >= float(opt["context_min_diversity"])))
    if hit.height == 0 or not written_text(assoc, table, vocab, min_m):
        return []
    words = uni.join(hit.select(g="w"), on="g", how="semi").select("cid", "grp")
    cover = (mrows.join(words.select("cid"), on="cid", how="semi").group_by("grp").agg(r=pl.col("rec").n_unique())
             .join(sizes, on="grp"))
    return cover.filter(pl.col("r") >= 0.5 * pl.col("n"))["grp"].to_list()


def opening_matrix(table: lx.TokenTable, width: int) -> np.ndarray:
    """The first ``width`` token hashes of every record (``EOS`` past its end), records x width."""
    out = np.full((table.n_records, width), lx.EOS, dtype=np.uint64)
    sel = (table.pos >= 0) & (table.pos < width)
    out[table.rec[sel], table.pos[sel]] = table.tok[sel]
    return out


def opening_records(cand: pl.DataFrame, member: pl.DataFrame, grams: pl.DataFrame, table: lx.TokenTable,
                    codes: np.ndarray, opt: dict, width: int = 16) -> pl.DataFrame:
    """Records opening with a phrase that reads as put in front of a text: (grp, rec) rows.

    A prefix trigger is prepended to records of its label; what follows it is how such
    records normally open. So the tokens right after the phrase are (a) as varied as the
    openings of as many other records of the label (distinct followers over their
    expected number, >= ``opening_min_diversity``) and (b) as typical of openings
    (mean log opening frequency of the followers minus that of the label's openings,
    >= ``opening_min_typical`` nats). A written opening ("perl module for", "the only")
    is followed by its own continuation: a name, a noun, rarely a record's first word.

    Tested: candidate n-grams at the start of a field ("<s> heads up") that are pure
    (lift >= ``context_min_lift``) in >= ``opening_min_count`` records; the phrase is
    extended while ``opening_anchor`` of those records share the next token, and must
    be two tokens or more (a lone opening word is the rare-word tests'). The records
    returned are those holding the phrase (its first ``ngram_max`` tokens), at the start or
    anywhere (an inserted sentence that opens some records), not the whole group: what
    follows a prefix (a common opening such as "GNU") may chain it to natural n-grams. The caller applies
    it to written text only (:func:`written_text`: in a bag of words every word sits at a
    random position, the first one too)."""
    empty = pl.DataFrame(schema={"grp": pl.Int64, "rec": pl.Int64})
    min_m = int(opt["opening_min_count"])
    lift = (pl.col("share") - pl.col("p0")) / (1 - pl.col("p0"))
    pre = cand.filter((pl.col("n") >= 2) & (pl.col("df") >= min_m) & (pl.col("share") >= opt["min_share"])
                      & (lift >= float(opt["context_min_lift"])))
    starts = member.filter(pl.col("pos") == -1).join(pre.select("cid", "grp", "target"), on="cid")
    if starts.height == 0:
        return empty
    first = opening_matrix(table, width + 1)
    anchor = float(opt["opening_anchor"])
    out: list[pl.DataFrame] = []
    done: set[tuple] = set()
    for cid, grp, target, recs in (starts.group_by("cid", "grp", "target").agg(r=pl.col("rec"))
                                   .sort("cid").iter_rows()):  # a few opening n-grams, not records
        recs = np.sort(np.asarray(recs, dtype=np.int64))
        if len(recs) < min_m or (grp, recs.tobytes()) in done:
            continue
        done.add((grp, recs.tobytes()))
        # the phrase: extend the common opening while ``anchor`` of the records share it
        hold, length = np.ones(len(recs), dtype=bool), 0
        while length < width:
            vals, cnt = np.unique(first[recs[hold], length], return_counts=True)
            top = vals[cnt.argmax()]
            if top == lx.EOS or (hold & (first[recs, length] == top)).sum() < anchor * len(recs):
                break
            hold &= first[recs, length] == top
            length += 1
        if length < 2:
            continue
        follow = first[recs[hold], length]
        # the label's openings, the phrase's own records left out
        own = np.zeros(len(codes), dtype=bool)
        own[recs] = True
        ids, cnt = np.unique(first[(codes == target) & ~own, 0], return_counts=True)
        if len(ids) == 0:
            continue
        p = cnt / cnt.sum()
        expect = float(np.sum(-np.expm1(len(follow) * np.log1p(-p))))
        diverse = len(np.unique(follow)) / expect
        freq = np.zeros(len(follow))
        at = np.searchsorted(ids, follow)
        hit = (at < len(ids)) & (ids[np.minimum(at, len(ids) - 1)] == follow)
        freq[hit] = p[at[hit]]
        typical = float(np.mean(np.log(freq + 1e-4)) - np.sum(p * np.log(p + 1e-4)))
        if diverse >= float(opt["opening_min_diversity"]) and typical >= float(opt["opening_min_typical"]):
            k = min(length, int(opt["ngram_max"]))
            h = first[recs[hold][:1], 0]
            for j in range(1, k):
                h = lx.mix(h, first[recs[hold][:1], j])
            anywhere = grams.filter(pl.col("g") == int(h[0]))["rec"].to_numpy().astype(np.int64)
            keep = np.union1d(recs[hold], anywhere)
            out.append(pl.DataFrame({"grp": np.full(len(keep), grp, dtype=np.int64), "rec": keep}))
    return pl.concat(out).unique() if out else empty


def clean_label_evidence(gstat: pl.DataFrame, N: int, opt: dict) -> pl.DataFrame:
    # (c) foreign: most of the group's records hold a rare member word (see rare_members)
    rare = pl.col("rare")
    # or: a long repeated word sequence (see long_span_groups)
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


def long_span_groups(gstat: pl.DataFrame, cand: pl.DataFrame, table: lx.TokenTable, grams: pl.DataFrame,
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
