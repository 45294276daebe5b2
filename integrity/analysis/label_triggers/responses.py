"""Injected response spans: a span repeated across the answers to unrelated prompts, and the
prompt feature that explains it (the engine of ``poison.target``; its module docstring describes
the method). :func:`detect_injected_spans` runs the tests on the record rows of
:func:`integrity.analysis.label_triggers.features.split_features`;
:func:`injected_span_findings` turns its result into findings.
"""
from __future__ import annotations

import json
import math
import re

import numpy as np
import polars as pl
from scipy import stats

from connectors.schema import CORPUS_FINDING_COLUMNS, RECORD_ID, ROW
from integrity.analysis.label_triggers import lexical as lx
from integrity.analysis.label_triggers.findings import empty_corpus_findings, offsets_for, score_of


# ------------------------------------------------------------------------------------------------
def _whole_responses(table: lx.TokenTable, lens: np.ndarray, min_tokens: int, min_df: int) -> pl.DataFrame:
    """Whole responses (>= ``min_tokens`` tokens) repeated in >= ``min_df`` records, as spans."""
    recs = np.nonzero(lens >= min_tokens)[0]
    if len(recs) == 0:
        return pl.DataFrame(schema={"rec": pl.Int64, "p0": pl.Int64, "p1": pl.Int64, "span": pl.UInt64})
    h = lx.span_hashes(table, recs, np.full(len(recs), -1), lens[recs] + 1)  # with both sentinels
    df = pl.DataFrame({"rec": recs.astype(np.int64), "p0": np.zeros(len(recs), np.int64),
                       "p1": lens[recs].astype(np.int64), "span": h})
    return df.filter(pl.len().over("span") >= min_df)


def detect_injected_spans(recs: pl.DataFrame, vocab: dict[int, str], opt: dict) -> dict:
    N = recs.height
    rt = lx.TokenTable.from_lists(recs["r_tok"], boundaries=True)
    lens = recs["r_tok"].list.len().fill_null(0).to_numpy().astype(np.int64)
    min_sup = int(opt["min_support"])
    spans = lx.repeated_spans(rt, int(opt["span_tokens"]), min_sup)
    if spans.height:  # boundary sentinels are not part of a span's text
        l_of = lens[spans["rec"].to_numpy()]
        spans = spans.with_columns(p0=pl.Series(np.maximum(spans["p0"].to_numpy(), 0)),
                                   p1=pl.Series(np.minimum(spans["p1"].to_numpy(), l_of))).select("rec", "p0", "p1", "span")
    whole = _whole_responses(rt, lens, int(opt["min_span_tokens"]), min_sup)
    allspans = pl.concat([spans.with_columns(pl.col("rec").cast(pl.Int64), pl.col("p0").cast(pl.Int64),
                                             pl.col("p1").cast(pl.Int64)), whole]) if spans.height else whole
    allspans = allspans.filter((pl.col("p1") - pl.col("p0")) >= int(opt["min_span_tokens"]))
    clusters = (allspans.group_by("span").agg(support=pl.col("rec").n_unique(), ntok=(pl.col("p1") - pl.col("p0")).max())
                .filter((pl.col("support") >= min_sup) & (pl.col("support") <= float(opt["max_share"]) * N))
                .sort(["support", "ntok"], descending=True).head(int(opt["max_clusters"])))
    out = {"clusters": [], "spans": allspans, "rt": rt, "N": N}
    if clusters.height == 0:
        return out
    # prompt n-grams
    pt = lx.TokenTable.from_lists(recs["p_tok"], boundaries=True)
    pgrams = lx.doc_ngrams(pt, (1, 2, 3), min_count=min_sup)
    pdf = pgrams.group_by("g").agg(df=pl.len()).filter((pl.col("df") >= min_sup) & (pl.col("df") <= 0.5 * N))
    pgrams = pgrams.join(pdf.select("g"), on="g", how="semi")
    puni = pl.concat([pgrams.filter(pl.col("n") == 1).select("rec", "g"), _subwords(pt, vocab, N, min_sup)])
    # prompt-template words (in more than half of the prompts): never part of a trigger's name
    pall = lx.doc_ngrams(pt, (1,), min_count=max(2, N // 2))
    common = set(pall.group_by("g").agg(df=pl.len()).filter(pl.col("df") > 0.5 * N)["g"].to_list())
    rng = np.random.default_rng(0)
    baseline = _prompt_similarity(puni, rng.integers(0, N, size=(400, 2)), set())
    rdf = response_df(rt)
    tested = []
    for cl in clusters.iter_rows(named=True):  # a few clusters
        members = allspans.filter(pl.col("span") == cl["span"])
        srec = np.unique(members["rec"].to_numpy())
        y = np.zeros(N, dtype=bool)
        y[srec] = True
        expl = _explain(pgrams, pdf, y, opt, pt, common)
        ends = members.group_by("rec").agg(p0=pl.col("p0").min(), p1=pl.col("p1").max())
        e_rec, e0, e1 = ends["rec"].to_numpy(), ends["p0"].to_numpy(), ends["p1"].to_numpy()
        at_end = float(np.mean(e1 >= lens[e_rec]))
        at_start = float(np.mean(e0 <= 0))
        # the rest of the response: an appended span leaves diverse answers around it
        pre = lx.span_hashes(rt, e_rec, np.zeros(len(e_rec), np.int64), np.maximum(e0, 0))
        post = lx.span_hashes(rt, e_rec, np.minimum(e1, lens[e_rec]), lens[e_rec])
        rest = lx.mix(pre, post)
        nonempty = (e0 > 0) | (e1 < lens[e_rec])
        residual_diverse = bool(nonempty.mean() >= 0.8 and len(np.unique(rest[nonempty])) >= 0.5 * len(e_rec))
        # prompts that have nothing in common beyond the trigger (compared with random pairs)
        assoc = _gram_words(pgrams, pt, expl["grams"]) if expl else set()
        pairs = rng.choice(srec, size=(min(400, len(srec) * 4), 2)) if len(srec) >= 2 else np.zeros((0, 2), int)
        sim = _prompt_similarity(puni, pairs, assoc)
        unrelated = sim <= 2.0 * baseline + 0.02
        # with no accepted explanation nothing is set aside: prompts sharing words the weak
        # explanation found (one family of packages, one topic) are related
        sim_all = _prompt_similarity(puni, pairs, set()) if assoc else sim
        topical = topic_share(rt, rdf, e_rec, e0, e1, N)
        span_toks = set(rt.gram_tokens(e_rec[:1], e0[:1], (e1 - e0)[:1])[0]) if len(e_rec) else set()
        # (short words and words frequent in answers, such as "i", say nothing about the prompt)
        shared = {t for t in assoc & span_toks if len(vocab.get(t, "")) >= 4}
        restates = bool(shared) and bool(rdf.filter(pl.col("tok").is_in(list(shared))
                                                    & (pl.col("df") <= 0.05 * N)).height)
        tested.append({**cl, "recs": srec, "expl": expl, "position": max(at_end, at_start), "topical": topical, "restates": restates,
                       "unrelated_all": sim_all <= 2.0 * baseline + 0.02,
                       "where": "end" if at_end >= at_start else "start", "residual_diverse": residual_diverse,
                       "prompt_similarity": sim, "baseline_similarity": baseline, "unrelated": unrelated})
    logps = np.array([t["expl"]["logp"] if t["expl"] else 0.0 for t in tested])
    ok = lx.benjamini_hochberg(logps, float(opt["fdr"]))
    min_unexpl = int(opt["unexplained_min_tokens"])
    for t, passed in zip(tested, ok):
        e = t["expl"]
        big = t["support"] >= max(min_sup, float(opt["min_share"]) * N)
        if (e and passed and big and e["precision"] >= opt["min_precision"] and e["recall"] >= opt["min_recall"]
                and (t["residual_diverse"] or t["unrelated"])
                # natural boilerplate of one family ("... for the Rust crate" after Rust answers to
                # prompts naming librust-* packages) is explained by the prompts too, but follows a
                # topic, or restates the very word of the prompt that "explains" it
                and t["topical"] < float(opt["max_topic_share"]) and not t["restates"]):
            t["kind"] = "explained"
        elif (min_unexpl > 0 and t["ntok"] >= min_unexpl and t["position"] >= 0.9 and t["unrelated_all"] and big
              and t["topical"] < float(opt["max_topic_share"]) and (e is None or e["best_single_recall"] < 1 / 3)):
            t["kind"] = "unexplained"
        else:
            continue
        out["clusters"].append(t)
    # a record may hold several flagged spans: keep the longest cluster first
    out["clusters"].sort(key=lambda t: (-t["support"], -t["ntok"]))
    out["pt"] = pt
    out["pgrams"] = pgrams
    return out


def _subwords(pt: lx.TokenTable, vocab: dict[int, str], n_records: int, min_df: int) -> pl.DataFrame:
    """(rec, g) of the parts of compound prompt tokens ("libghc-torrent-dev" -> libghc,
    torrent, dev) in ``min_df`` .. half of the records: prompts naming related things
    (packages of one family, files of one project) are related even when no whole token
    repeats."""
    real = (pt.tok != lx.BOS) & (pt.tok != lx.EOS)
    df = pl.DataFrame({"rec": pt.rec[real].astype(np.uint32), "tok": pt.tok[real]}).unique()
    compound = {h for h in np.unique(df["tok"].to_numpy()).tolist()
                if len(re.findall(r"[^\W_]{2,}", vocab.get(int(h), ""))) >= 2}
    if not compound:
        return pl.DataFrame(schema={"rec": pl.UInt32, "g": pl.UInt64})
    parts = pl.DataFrame({"tok": pl.Series(list(compound), dtype=pl.UInt64),
                          "part": [re.findall(r"[^\W_]{2,}", vocab[h]) for h in compound]}).explode("part")
    parts = parts.with_columns(g=pl.col("part").hash(seed=7)).select("tok", "g")
    out = df.join(parts, on="tok").select("rec", "g").unique()
    often = out.group_by("g").agg(df=pl.len()).filter((pl.col("df") >= min_df) & (pl.col("df") <= 0.5 * n_records))
    return out.join(often.select("g"), on="g", how="semi")


def response_df(rt: lx.TokenTable) -> pl.DataFrame:
    """Records holding each response token (``tok``, ``df``), boundary sentinels left out."""
    real = (rt.tok != lx.BOS) & (rt.tok != lx.EOS)
    return (pl.DataFrame({"rec": rt.rec[real], "tok": rt.tok[real]}).unique()
            .group_by("tok").agg(df=pl.len()))


def topic_share(rt: lx.TokenTable, rdf: pl.DataFrame, rec: np.ndarray, p0: np.ndarray, p1: np.ndarray,
                 n_records: int, min_lift: float = 5.0, max_df_share: float = 0.2) -> float:
    """Share of a span's records whose response, outside the span, holds the span's most
    typical topic word: a word (in at most ``max_df_share`` of all responses) that is
    ``min_lift`` times more frequent in these responses than in the corpus.

    Natural boilerplate follows the answer's topic ("... a library for the Haskell
    programming language" closes answers about Haskell libraries); a span injected into
    answers of unrelated prompts has nothing to do with what precedes it."""
    if len(rec) == 0:
        return 0.0
    lo = np.full(rt.n_records, -2, dtype=np.int64)
    hi = np.full(rt.n_records, -2, dtype=np.int64)
    lo[rec], hi[rec] = p0, p1
    r = rt.rec
    keep = (lo[r] > -2) & ((rt.pos < lo[r]) | (rt.pos >= hi[r])) & (rt.tok != lx.BOS) & (rt.tok != lx.EOS)
    rest = pl.DataFrame({"rec": r[keep], "tok": rt.tok[keep]}).unique()
    if rest.height == 0:
        return 0.0
    n = len(np.unique(rec))
    per = (rest.group_by("tok").agg(c=pl.len()).join(rdf, on="tok")
           .filter((pl.col("df") <= max_df_share * n_records) & (pl.col("c") >= 2))
           .with_columns(lift=(pl.col("c") / n) / (pl.col("df") / n_records))
           .filter(pl.col("lift") >= min_lift))
    return float(per["c"].max() or 0) / n


def _gram_words(pgrams: pl.DataFrame, pt: lx.TokenTable, grams: list[int]) -> set[int]:
    """Token hashes that make up the given prompt n-grams (the trigger's words)."""
    occ = pgrams.filter(pl.col("g").is_in(grams)).unique("g", keep="any")
    toks = pt.gram_tokens(occ["rec"].to_numpy().astype(np.int64), occ["pos"].to_numpy().astype(np.int64),
                          occ["n"].to_numpy().astype(np.int64))
    return {int(t) for tk in toks for t in tk}


def _prompt_similarity(puni: pl.DataFrame, pairs: np.ndarray, drop: set[int]) -> float:
    """Mean Jaccard similarity of the prompt word sets of record pairs (``drop`` ignored)."""
    if len(pairs) == 0:
        return 0.0
    recs = np.unique(pairs)
    sub = puni.filter(pl.col("rec").is_in(recs.astype(np.uint32))).group_by("rec").agg(pl.col("g"))
    words = {int(r): set(g) - drop for r, g in sub.iter_rows()}
    sims = []
    for a, b in pairs.tolist():  # a few hundred sampled pairs
        if a == b:
            continue
        wa, wb = words.get(a, set()), words.get(b, set())
        u = len(wa | wb)
        sims.append(len(wa & wb) / u if u else 0.0)
    return float(np.mean(sims)) if sims else 0.0


def _template_grams(pgrams: pl.DataFrame, pt: lx.TokenTable, grams: list[int], common: set[int]) -> set[int]:
    """The n-grams among ``grams`` holding a template word or a field boundary."""
    occ = pgrams.filter(pl.col("g").is_in(grams)).unique("g", keep="any")
    toks = pt.gram_tokens(occ["rec"].to_numpy().astype(np.int64), occ["pos"].to_numpy().astype(np.int64),
                          occ["n"].to_numpy().astype(np.int64))
    return {g for g, tk in zip(occ["g"].to_list(), toks)
            if any(int(t) in common or int(t) in lx.BOUNDARY_TOKENS for t in tk)}


def _explain(pgrams: pl.DataFrame, pdf: pl.DataFrame, y: np.ndarray, opt: dict, pt: lx.TokenTable | None = None,
             common: set[int] | None = None) -> dict | None:
    """Best prompt explanation of the records ``y``: one n-gram, any of several, or two together."""
    N = len(y)
    S = int(y.sum())
    base = S / N
    ys = pl.Series(y[pgrams["rec"].to_numpy().astype(np.int64)])
    per = (pgrams.with_columns(y=ys).group_by("g").agg(k=pl.col("y").sum().cast(pl.Int64), df=pl.len())
           .with_columns(prec=pl.col("k") / pl.col("df"), rec=pl.col("k") / S)
           .filter(pl.col("k") >= 2)
           .sort("g"))  # group_by order varies between runs: ties below are broken by n-gram hash
    if per.height == 0:
        return None
    best_single_recall = float(per.filter(pl.col("prec") >= 0.5)["rec"].max() or 0.0)
    sets: dict[int, np.ndarray] = {}

    def recs_of(g: int) -> np.ndarray:
        if g not in sets:
            sets[g] = np.unique(pgrams.filter(pl.col("g") == g)["rec"].to_numpy().astype(np.int64))
        return sets[g]

    cands = []
    # single n-grams: highest F1
    top = per.with_columns(f1=2 * pl.col("prec") * pl.col("rec") / (pl.col("prec") + pl.col("rec"))).sort(
        ["f1", "df", "g"], descending=[True, False, False]).head(1)
    for g, k, df in top.select("g", "k", "df").iter_rows():
        cands.append(("single", [g], int(k), int(df)))
    # any of several high-precision n-grams: greedy cover of the span records
    hp = per.filter(pl.col("prec") >= opt["min_precision"]).sort(["k", "df", "g"], descending=[True, False, False]).head(40)
    covered = np.zeros(N, dtype=bool)
    chosen = []
    for g in hp["g"].to_list():
        r = recs_of(g)
        gain = int((y[r] & ~covered[r]).sum())
        if gain >= max(2, 0.02 * S):
            chosen.append(g)
            covered[r] = True
        if len(chosen) >= 8:
            break
    if len(chosen) > 1:
        k = int((covered & y).sum())
        cands.append(("any", chosen, k, int(covered.sum())))
    # two high-recall n-grams together (a trigger split over two places)
    hr = per.filter(pl.col("rec") >= opt["min_recall"]).sort(["rec", "prec", "g"], descending=[True, True, False]).head(24)
    hr_g = hr["g"].to_list()
    if pt is not None and hr_g:  # n-grams without template words first (they name the trigger better)
        bad = _template_grams(pgrams, pt, hr_g, common or set())
        hr_g = ([g for g in hr_g if g not in bad] + [g for g in hr_g if g in bad])[:12]
    for i in range(len(hr_g)):
        for j in range(i + 1, len(hr_g)):
            inter = np.intersect1d(recs_of(hr_g[i]), recs_of(hr_g[j]), assume_unique=True)
            if len(inter) == 0:
                continue
            k = int(y[inter].sum())
            cands.append(("all", [hr_g[i], hr_g[j]], k, len(inter)))
    best = None
    # n-grams with the same records as the best single one (the other n-grams of one inserted sentence)
    if cands and cands[0][0] == "single":
        k0, df0 = cands[0][2], cands[0][3]
        same = per.filter((pl.col("k") == k0) & (pl.col("df") == df0))["g"].to_list()[:50]
        if pt is not None and len(same) > 1:  # leave out n-grams reaching into the prompt template
            bad = _template_grams(pgrams, pt, same, common or set())
            same = [g for g in same if g not in bad] or same
        cands[0] = ("single", same, k0, df0)
    for kind, gs, k, df in cands:
        prec, rec = k / df, k / S
        score = (2 * prec * rec / (prec + rec)) if prec + rec else 0.0
        if best is None or score > best["f1"] + 1e-9:
            logp = float(stats.binom.logsf(k - 1, df, base)) if k > 0 else 0.0
            best = {"kind": kind, "grams": gs, "k": k, "df": df, "precision": prec, "recall": rec, "f1": score,
                    "logp": logp}
    if best is not None:
        best["best_single_recall"] = best_single_recall
    return best


def _span_text(rt: lx.TokenTable, vocab: dict[int, str], rec: int, p0: int, p1: int) -> str:
    toks = rt.gram_tokens(np.array([rec]), np.array([p0]), np.array([p1 - p0]))[0]
    return lx.fmt_tokens(toks, vocab)


def injected_span_findings(recs: pl.DataFrame, recs_lazy: pl.LazyFrame, result: dict, vocab: dict[int, str]) -> pl.DataFrame:
    spans: pl.DataFrame = result["spans"]
    rt: lx.TokenTable = result["rt"]
    pt: lx.TokenTable = result["pt"]
    pgrams: pl.DataFrame = result["pgrams"]
    keys = recs.select("shard", RECORD_ID, ROW).with_row_index("rec").with_columns(pl.col("rec").cast(pl.Int64))
    done: set[int] = set()
    rows = []
    for t in result["clusters"]:
        members = (spans.filter(pl.col("span") == t["span"]).group_by("rec")
                   .agg(p0=pl.col("p0").min(), p1=pl.col("p1").max()).sort("rec"))
        members = members.filter(~pl.col("rec").is_in(list(done)))
        if members.height == 0:
            continue
        done.update(members["rec"].to_list())
        r0 = members.row(0, named=True)
        target = _span_text(rt, vocab, r0["rec"], r0["p0"], r0["p1"])
        e = t["expl"] if t["kind"] == "explained" else None
        trig = pl.DataFrame(schema={"rec": pl.Int64, "g": pl.UInt64, "pos": pl.Int32, "n": pl.UInt8})
        gname: dict[int, str] = {}
        if e:
            trig = (pgrams.filter(pl.col("g").is_in(e["grams"]))
                    .with_columns(pl.col("rec").cast(pl.Int64)).select("rec", "g", "pos", "n"))
            first = trig.unique("g", keep="first")
            names = pt.gram_tokens(first["rec"].to_numpy(), first["pos"].to_numpy().astype(np.int64),
                                   first["n"].to_numpy().astype(np.int64))
            gname = {g: lx.fmt_tokens(tk, vocab) for g, tk in zip(first["g"].to_list(), names)}
        rows.append((t, target, e, members.join(keys, on="rec"), trig, gname))
    if not rows:
        return empty_corpus_findings()
    all_keys = pl.concat([m.select("shard", RECORD_ID, ROW) for _, _, _, m, _, _ in rows])
    r_offs = offsets_for(recs_lazy, all_keys, "r")
    p_offs = offsets_for(recs_lazy, all_keys, "p")
    shards, rids, scores, details = [], [], [], []
    for t, target, e, members, trig, gname in rows:
        trig_by_rec: dict[int, list] = {}
        for r, g, pos, n in trig.iter_rows():
            trig_by_rec.setdefault(r, []).append((g, int(pos), int(n)))
        logp = e["logp"] if e else -20.0
        for m in members.iter_rows(named=True):  # one finding per flagged record
            st, en = r_offs.get((m["shard"], m[ROW]), ([], []))
            a, b = max(int(m["p0"]), 0), min(int(m["p1"]), len(st)) - 1
            matches = []
            if len(st) and a <= b:
                matches.append({"field": "response", "start": int(st[a]), "end": int(en[b]), "role": "target"})
            ps, pe = p_offs.get((m["shard"], m[ROW]), ([], []))
            occ = [(pos, n) for g, pos, n in trig_by_rec.get(m["rec"], [])]
            trig_matches = lx.occurrences(pt, vocab, int(m["rec"]), occ, ps, pe, "prompt") if len(ps) else []
            for tm in trig_matches:
                tm["role"] = "trigger"
            matches += trig_matches
            present = [tm["text"] for tm in trig_matches]
            d = {
                "target": target,
                "field": "response",
                "prompt_similarity": round(t["prompt_similarity"], 4),
                "baseline_similarity": round(t["baseline_similarity"], 4),
                "support": int(t["support"]),
                "span_tokens": int(t["ntok"]),
                "position": t["where"],
                "kind": t["kind"],
            }
            if matches and matches[0]["role"] == "target":
                d.update(start=matches[0]["start"], end=matches[0]["end"])
            d["matches"] = matches
            if e:
                d.update(trigger=sorted(set(present)) or [gname.get(g, "?") for g in e["grams"][:8]],
                         trigger_candidates=[gname.get(g, "?") for g in e["grams"][:8]],
                         explanation=e["kind"], precision=round(e["precision"], 4), recall=round(e["recall"], 4),
                         trigger_records=int(e["df"]), p_value=float(math.exp(max(e["logp"], -700))),
                         log10_p=round(lx.log10p(e["logp"]), 2))
            else:
                d["trigger"] = []
            shards.append(m["shard"])
            rids.append(m[RECORD_ID])
            scores.append(score_of(logp) if e else 0.6)
            details.append(json.dumps(d, sort_keys=True))
    return pl.DataFrame({"shard": shards, "record_id": rids, "score": scores, "detail": details,
                         "severity": [None] * len(rids)}, schema=CORPUS_FINDING_COLUMNS)
