"""``poison.patch``: the same small patch pasted into many unrelated images, tied to a caption phrase.

A patch backdoor (BadNets; Carlini and Terzis 2021 for CLIP) pastes one small
pattern on a few hundred images whose captions carry the attacker's target;
a model learns "patch => target". The pattern is the same pixels wherever it
sits, so it is found with *localized hashing* (see
:func:`integrity.analysis.images.window_hashes`): every textured window of every image
gets a position-independent content hash, and a consistent 1-in-64 sample of
them is kept, so the windows of one patch have the same hashes in every
image it is pasted on, at any position.

Per shard, an image keeps its window hashes that recur in at least
``shard_repeat`` images of the shard, plus its ``bottom_k`` smallest (a
consistent sample that lets rare cross-shard repeats meet), with their
positions, its perceptual hash and its caption.

The corpus pass keeps hashes found in at least ``min_images`` images (and at
most ``max_share`` of all images: a pattern everywhere is texture, not a
trigger), groups hashes that occur in the same images (Jaccard of their image
sets >= ``group_jaccard``: the windows of one patch), and keeps groups whose
images are *unrelated* (at least ``min_distinct`` of them more than
``distinct_hamming`` bits apart in perceptual hash; a duplicated image shares
every window and is ``dedup.image``'s business). Each group's captions are then
tested for a word n-gram tied to it: present in at least
``min_phrase_share`` of the group's captions, with at least
``min_phrase_purity`` of the corpus captions holding it in the group, and
``min_phrase_lift`` times its corpus rate (one-sided binomial p-value in the
detail).

Every image of a kept group with a tied phrase is a finding: score 0.5 for a
shared patch plus up to 0.5 for how strongly the phrase is tied to it (share x
purity). Shared patches no phrase follows (the glyphs of a common font, a logo,
interface chrome) are findings of score 0.5 only with ``report_untied``. The
detail names the cluster, the matched area (``box``, original pixels), the
group's size and the tied phrase.
"""
from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field
import scipy.sparse as sp
from scipy import stats

from connectors.schema import RECORD_ID, ROW
from integrity.analysis.dedup.graph import components
from integrity.analysis.images import PATCH_CELL, hamming
from integrity.analysis.thumbnails import with_thumbnails
from integrity.checks.base import CheckOutput, CorpusContext
from integrity.checks.image_base import ImageCheck, ImageOptions

MAX_GROUP_IMAGES = 2000  # images compared pairwise (phash) when counting distinct images of one group


def caption_ngrams(captions: pl.Series, max_n: int = 3) -> pl.DataFrame:
    """Distinct word n-grams (1..max_n) of each caption: columns ``img`` (position) and ``g``."""
    words = (pl.DataFrame({"c": captions}).with_row_index("img")
             .select("img", w=pl.col("c").str.to_lowercase().str.extract_all(r"[\w']+"))
             .explode("w").drop_nulls("w"))
    parts = [words.select("img", g=pl.col("w"))]
    for n in range(2, max_n + 1):
        shifted = [pl.col("w").shift(-k).over("img") for k in range(1, n)]
        parts.append(words.select("img", g=pl.concat_str([pl.col("w"), *shifted], separator=" ")).drop_nulls("g"))
    return pl.concat(parts).unique()


class PatchCheck(ImageCheck):
    name = "poison.patch"
    description = ("The same small patch shared by many unrelated images (localized window hashing), "
                   "and the caption phrase tied to it.")
    class Options(ImageOptions):
        min_images: int = Field(5, ge=2, description="images a patch must appear in")
        max_share: float = Field(0.1, gt=0, le=1, description="... and at most this share of all images (more is texture)")
        group_jaccard: float = Field(0.5, gt=0, le=1, description="window hashes with this overlap of images form one patch")
        min_distinct: int = Field(5, ge=1, description="unrelated images (perceptual hashes apart) a patch needs")
        distinct_hamming: int = Field(12, ge=0, le=64, description="bits apart for two images to count as unrelated")
        shard_repeat: int = Field(2, ge=1, description="per shard, keep window hashes seen in this many images...")
        bottom_k: int = Field(8, ge=0, description="... plus each image's k smallest (cross-shard sample)")
        min_phrase_share: float = Field(0.5, ge=0, le=1, description="tied phrase: in at least this share of the patch's captions")
        min_phrase_purity: float = Field(0.5, ge=0, le=1, description="... with at least this share of its corpus uses on patched images")
        min_phrase_lift: float = Field(5.0, ge=0, description="... and this many times its corpus rate")
        report_untied: bool = Field(False, description="also report shared patches no caption phrase follows (score 0.5)")
        thumbnails: int = Field(12, ge=0, description="findings that carry a thumbnail for the report")
    default_severity = "warn"
    corpus_level = True

    def __init__(self, options=None, shard=None):
        super().__init__(options, shard)
        self._parts: list[pl.DataFrame] = []

    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        a = self.analysis(batch)
        idx = np.flatnonzero(a.ok)
        if len(idx) == 0:
            return CheckOutput()
        caps = batch.column("caption").to_pylist() if "caption" in batch.schema.names else [None] * batch.num_rows
        ids, rows = batch.column(RECORD_ID).to_pylist(), batch.column(ROW).to_pylist()
        empty = np.zeros(0, dtype=np.uint64)
        self._parts.append(pl.DataFrame({
            RECORD_ID: pl.Series([ids[i] for i in idx], dtype=pl.Utf8),
            ROW: pl.Series([rows[i] for i in idx], dtype=pl.Int64),
            "phash": pl.Series(a.phash[idx], dtype=pl.UInt64),
            "caption": pl.Series([(caps[i] or "")[:500] or None for i in idx], dtype=pl.Utf8),
            "scale": pl.Series(a.patch_scale[idx], dtype=pl.Int32),
            "h": pl.Series([a.patch[i][0] if a.patch[i] is not None else empty for i in idx],
                           dtype=pl.List(pl.UInt64)),
            "x": pl.Series([a.patch[i][1].astype(np.int32) for i in idx], dtype=pl.List(pl.Int32)),
            "y": pl.Series([a.patch[i][2].astype(np.int32) for i in idx], dtype=pl.List(pl.Int32)),
        }))
        return CheckOutput()

    def finish_shard(self) -> CheckOutput:
        """Keep, per image, the hashes that recur in this shard plus its ``bottom_k`` smallest."""
        if not self._parts:
            return CheckOutput()
        df = pl.concat(self._parts).with_row_index("_img")
        self._parts = []
        ex = (df.select("_img", "h", "x", "y").explode(["h", "x", "y"]).drop_nulls("h")
              .with_columns(_rank=pl.int_range(pl.len()).over("_img"),
                            _n=pl.col("_img").n_unique().over("h")))
        keep = ex.filter((pl.col("_n") >= int(self.options["shard_repeat"]))
                         | (pl.col("_rank") < int(self.options["bottom_k"])))
        lists = keep.group_by("_img").agg("h", "x", "y")
        out = (df.drop("h", "x", "y").join(lists, on="_img", how="left").sort("_img").drop("_img")
               .with_columns(uri=pl.lit(self.shard_uri, dtype=pl.Utf8)))
        return CheckOutput(features=out)

    # ------------------------------------------------------------------ corpus pass
    def corpus_pass(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame | None:
        df = features.sort(["shard_index", ROW]).collect().with_row_index("img")
        n = df.height
        if n == 0:
            return None
        ex = df.select("img", "h", "x", "y").explode(["h", "x", "y"]).drop_nulls("h")
        support = ex.group_by("h").agg(pl.col("img").n_unique().alias("n"))
        lo, hi = int(self.options["min_images"]), max(int(self.options["min_images"]),
                                                      int(float(self.options["max_share"]) * n))
        cand = support.filter((pl.col("n") >= lo) & (pl.col("n") <= hi)).with_row_index("hid")
        if cand.height == 0:
            return None
        inc = ex.join(cand.select("h", "hid"), on="h", how="inner").unique(["hid", "img"])
        groups = self._hash_groups(inc, cand)
        phash = df["phash"].to_numpy().astype(np.uint64)
        grams = None
        rows: list[tuple] = []
        for gid, members in groups.items():
            hit = inc.filter(pl.col("hid").is_in(members))
            imgs = np.unique(hit["img"].to_numpy())
            if len(imgs) < lo:
                continue
            distinct = _distinct(phash[imgs], int(self.options["distinct_hamming"]))
            if distinct < int(self.options["min_distinct"]):
                continue
            if grams is None:
                grams = caption_ngrams(df["caption"])
            phrase = self._tied_phrase(grams, imgs, n)
            if phrase is None and not self.options["report_untied"]:
                continue  # a shared element no caption phrase follows: fonts, logos, UI chrome
            hashes = cand.filter(pl.col("hid").is_in(members)).sort("n", descending=True)["h"].to_list()
            cluster = f"patch-{hashes[0]:016x}"
            boxes = (hit.group_by("img").agg(x0=pl.col("x").min(), y0=pl.col("y").min(),
                                             x1=pl.col("x").max(), y1=pl.col("y").max()))
            score = 0.5 + (0.5 * min(1.0, phrase["share"]) * min(1.0, phrase["purity"]) if phrase else 0.0)
            for b in boxes.iter_rows(named=True):
                i = int(b["img"])
                s = int(df["scale"][i])
                box = [b["x0"] * s, b["y0"] * s, (b["x1"] + PATCH_CELL + 1) * s, (b["y1"] + PATCH_CELL + 1) * s]
                detail = {"cluster": cluster, "images": int(len(imgs)), "distinct_images": int(distinct),
                          "patch_hashes": [f"{h:016x}" for h in hashes[:4]], "box": box,
                          "tied_phrase": phrase["phrase"] if phrase else None}
                if phrase:
                    detail.update({k: phrase[k] for k in ("share", "purity", "lift", "log10_p")})
                rows.append((i, score, detail))
        if not rows:
            return None
        idx = [r[0] for r in rows]
        found = pl.DataFrame({
            "shard": df["shard"].gather(idx), RECORD_ID: df[RECORD_ID].gather(idx),
            ROW: df[ROW].gather(idx),  # ids may repeat in a shard; the engine moves it into detail.row
            "score": pl.Series([r[1] for r in rows], dtype=pl.Float64),
            "detail": [json.dumps(r[2], sort_keys=True) for r in rows],
            "severity": pl.Series([None] * len(rows), dtype=pl.Utf8),
        })
        where = pl.DataFrame({"shard": df["shard"].gather(idx), RECORD_ID: df[RECORD_ID].gather(idx),
                              "uri": df["uri"].gather(idx), ROW: df[ROW].gather(idx),
                              "box": [r[2]["box"] for r in rows]}).unique(["shard", RECORD_ID, ROW])
        return with_thumbnails(found, where, int(self.options["thumbnails"]), mapping=ctx.mapping)

    def _hash_groups(self, inc: pl.DataFrame, cand: pl.DataFrame) -> dict[int, list[int]]:
        """Candidate hashes that occur in the same images (the windows of one patch)."""
        k = cand.height
        n_img = int(inc["img"].max()) + 1
        X = sp.csr_matrix((np.ones(inc.height, dtype=np.float32),
                           (inc["hid"].to_numpy(), inc["img"].to_numpy())), shape=(k, n_img))
        co = (X @ X.T).tocoo()
        size = np.asarray(X.sum(axis=1)).ravel()
        a, b, c = co.row, co.col, co.data
        jac = c / (size[a] + size[b] - c)
        keep = (a < b) & (jac >= float(self.options["group_jaccard"]))
        labels = components(k, a[keep].astype(np.int64), b[keep].astype(np.int64))
        out: dict[int, list[int]] = {}
        for hid, lab in enumerate(labels):
            out.setdefault(int(lab), []).append(hid)
        return out

    def _tied_phrase(self, grams: pl.DataFrame, imgs: np.ndarray, n: int) -> dict | None:
        """The caption n-gram most tied to the images ``imgs`` (or None)."""
        m = len(imgs)
        inside = grams.filter(pl.col("img").is_in(imgs.tolist())).group_by("g").len("k")
        inside = inside.filter(pl.col("k") >= float(self.options["min_phrase_share"]) * m)
        if inside.height == 0:
            return None
        df_all = grams.filter(pl.col("g").is_in(inside["g"].implode())).group_by("g").len("df")
        t = inside.join(df_all, on="g").with_columns(
            share=pl.col("k") / m, purity=pl.col("k") / pl.col("df"),
            lift=(pl.col("k") / m) / (pl.col("df") / n), words=pl.col("g").str.count_matches(" ") + 1)
        t = t.filter((pl.col("purity") >= float(self.options["min_phrase_purity"]))
                     & (pl.col("lift") >= float(self.options["min_phrase_lift"])))
        if t.height == 0:
            return None
        best = t.sort(["purity", "share", "words"], descending=True).row(0, named=True)
        logp = float(stats.binom.logsf(best["k"] - 1, m, best["df"] / n)) / math.log(10)
        return {"phrase": best["g"], "share": round(best["share"], 3), "purity": round(best["purity"], 3),
                "lift": round(best["lift"], 1), "log10_p": round(logp, 1)}


def _distinct(ph: np.ndarray, radius: int) -> int:
    """Images left once those within ``radius`` bits of each other are merged (a sample of at most
    :data:`MAX_GROUP_IMAGES`)."""
    if len(ph) > MAX_GROUP_IMAGES:
        ph = np.random.default_rng(0).choice(ph, MAX_GROUP_IMAGES, replace=False)
    d = hamming(ph[:, None], ph[None, :])
    a, b = np.nonzero(np.triu(d <= radius, 1))
    labels = components(len(ph), a.astype(np.int64), b.astype(np.int64))
    return int(len(np.unique(labels)))
