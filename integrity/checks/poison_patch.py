"""``poison.patch``: the same small patch pasted into many unrelated images, tied to a caption phrase.

A patch backdoor (BadNets; Carlini and Terzis 2021 for CLIP) pastes one small
pattern on a few hundred images whose captions carry the attacker's target;
a model learns "patch => target". The pattern is the same pixels wherever it
sits, so it is found by hashing windows of every image with a content hash
that does not depend on the position, two ways:

* *sampled windows* (:func:`integrity.analysis.images.window_hashes`): every
  textured 12 px window of the work image (reduced to at most 512 px) gets a
  hash, and a consistent 1-in-64 sample is kept, so a large patch anywhere in
  the image keeps the same few hashes in every image it is pasted on;
* *border windows* (:func:`integrity.analysis.images.border_hashes`): every
  3, 6 and 12 px window of the 20 px squares at the four corners and the four
  border midpoints, on the original pixels, that stands out from the 2 px
  around it, hashed from its coarsely quantized mean colour, structure and
  spread on two shifted grids (so JPEG noise does not split a patch's images).

Per shard, an image keeps its window hashes that recur in at least
``shard_repeat`` images of the shard, plus its ``bottom_k`` smallest (a
consistent sample that lets rare cross-shard repeats meet), with their
positions and sides, its perceptual hash and its caption.

The corpus pass keeps hashes found in at least ``min_images`` images (and at
most ``max_share`` of all images: a pattern everywhere is texture or a common
watermark, not a trigger). Hashes with the same set of images form a group
(the windows of one patch; a coarse hash that also matches unrelated windows
has another set, so groups do not chain), and each group's captions are tested
for a word n-gram tied to it: held by at least ``min_images`` and
``min_phrase_share`` of the group's images, with at least
``min_phrase_purity`` of the corpus captions holding it in the group, and
``min_phrase_lift`` times its corpus rate (one-sided binomial p-value in the
detail). Groups tied to the same phrase are one patch. Its images are those
whose caption holds the phrase, and the others that hold at least as many of
its hashes as the median phrase-holding image (a flat 3 px window of one
colour also matches some unrelated corners). The patch must be on at least
``min_distinct`` *unrelated* images (more than ``distinct_hamming`` bits apart
in perceptual hash; a duplicated image shares every window and is
``dedup.image``'s business).

Every image of a tied patch is a finding (``kind: tied_patch``): score 0.5
for a shared patch plus up to 0.5 for how strongly the phrase is tied to it
(share x purity), so warn or critical under the default policy. The detail
names the cluster, the matched area (``box``, original pixels), the patch's
image count and the tied phrase.

Common marks: a logo or watermark on more than ``max_share`` of all images is
not reported. One on fewer images with no caption phrase following it (a
site's corner logo, the glyphs of a common font, interface chrome) is not
reported by default; with ``report_untied`` it is a ``shared_mark`` finding
of score 0.5 (info), found from the sampled windows only (small border
windows are too common to stand without a phrase). A site's logo on at most
``max_share`` of the corpus that its captions name (a credit line) is a
``tied_patch`` like a trigger: to a model it is one ("logo => credit line"),
and its findings share one ``cluster`` to review once.

Coverage (``benchmarks/images.py --patch-grid``, an independent generator:
photo crops of 64, 256 and 1024 px, JPEG quality 60 and 95, 3 and 10 % of
the images per patch, checkerboard / solid / noise / logo patches 0-3 px from
a corner or border midpoint; tables in ``benchmarks/README.md``; target:
recall >= 0.8 per patch kind, precision >= 0.9). Covered, in every cell of
that grid (image size x quality x rate): 16 px patches of all four kinds,
12 px checkerboards, solid blocks and noise, 8 px checkerboards. Not
covered: 12 px logos and 8 px noise (pooled recall 0.8-1.0 per cell, but
two corpora in ten miss the patch in the weakest), 8 px solid blocks and logos (0.5-1.0: a
block whose colour is common at the corners of the corpus's own pictures, or
a logo JPEG blurs to a blob, is missed in some corpora), 6 px patches (found in most cells,
0-1.0 per kind), patches under 6 px (a patch found by border windows alone
needs windows of 6 px or more, see :func:`_enough_structure`), small patches
along a border away from its corners and midpoints (the sampled windows find
textured patches of tens of px anywhere), patches scaled or rotated per
image, patches no caption phrase follows (see ``report_untied``) and fewer
than ``min_images`` patched images. Cells outside the grid (other image
sizes and qualities, rates under 3 %) are not measured.
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
from integrity.analysis.images import BORDER_SIZES, PATCH_CELL, hamming
from integrity.checks.base import CheckOutput, CorpusContext
from integrity.checks.image_base import ImageCheck, ImageOptions

MIN_BORDER_WINDOWS = 4  # border-window hashes the median image of a border-only patch holds (see _enough_structure)
#: a border-only patch with too few windows for the two-sizes rule (a flat block, a mark JPEG blurs to a blob)
#: passes when some are at least this many px and its phrase is held by this share of its group's images
#: and this share of the phrase's images are in the group
FLAT_MIN_SIDE = 6
FLAT_MIN_TIE = 0.8
#: candidate window hashes may be on up to this many times ``max_share`` of the images: a coarse hash of a
#: patch on exactly ``max_share`` of them also matches a few unrelated windows; the patch itself (its
#: images once the phrase has picked them) is then held to ``max_share``
HASH_SHARE_SLACK = 1.25
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
        max_share: float = Field(0.1, gt=0, le=1, description="... and at most this share of all images (more is texture or a common logo/watermark)")
        group_jaccard: float = Field(0.5, gt=0, le=1, description="untied marks (report_untied): window hashes with this overlap of images form one mark")
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
        hashes = [_image_windows(a.patch[i], int(a.patch_scale[i]), a.border[i]) for i in idx]
        self._parts.append(pl.DataFrame({
            RECORD_ID: pl.Series([ids[i] for i in idx], dtype=pl.Utf8),
            ROW: pl.Series([rows[i] for i in idx], dtype=pl.Int64),
            "phash": pl.Series(a.phash[idx], dtype=pl.UInt64),
            "caption": pl.Series([(caps[i] or "")[:500] or None for i in idx], dtype=pl.Utf8),
            "h": pl.Series([w[0] for w in hashes], dtype=pl.List(pl.UInt64)),
            "x": pl.Series([w[1] for w in hashes], dtype=pl.List(pl.Int32)),
            "y": pl.Series([w[2] for w in hashes], dtype=pl.List(pl.Int32)),
            "s": pl.Series([w[3] for w in hashes], dtype=pl.List(pl.Int16)),
        }))
        return CheckOutput()

    def finish_shard(self) -> CheckOutput:
        """Keep, per image, the hashes that recur in this shard plus its ``bottom_k`` smallest."""
        if not self._parts:
            return CheckOutput()
        df = pl.concat(self._parts).with_row_index("_img")
        self._parts = []
        ex = (df.select("_img", "h", "x", "y", "s").explode(["h", "x", "y", "s"]).drop_nulls("h")
              .with_columns(_rank=pl.int_range(pl.len()).over("_img"),
                            _n=pl.col("_img").n_unique().over("h")))
        keep = ex.filter((pl.col("_n") >= int(self.options["shard_repeat"]))
                         | (pl.col("_rank") < int(self.options["bottom_k"])))
        lists = keep.group_by("_img").agg("h", "x", "y", "s")
        out = (df.drop("h", "x", "y", "s").join(lists, on="_img", how="left").sort("_img").drop("_img")
               .with_columns(uri=pl.lit(self.shard_uri, dtype=pl.Utf8)))
        return CheckOutput(features=out)

    # ------------------------------------------------------------------ corpus pass
    def corpus_pass(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame | None:
        df = features.sort(["shard_index", ROW]).collect().with_row_index("img")
        n = df.height
        if n == 0:
            return None
        ex = df.select("img", "h", "x", "y", "s").explode(["h", "x", "y", "s"]).drop_nulls("h")
        support = ex.group_by("h").agg(pl.col("img").n_unique().alias("n"))
        lo = int(self.options["min_images"])
        most = max(lo, int(float(self.options["max_share"]) * n))  # images a reported patch may be on
        hi = max(lo, int(HASH_SHARE_SLACK * float(self.options["max_share"]) * n))
        cand = support.filter((pl.col("n") >= lo) & (pl.col("n") <= hi)).with_row_index("hid")
        if cand.height == 0:
            return None
        inc = ex.join(cand.select("h", "hid"), on="h", how="inner").unique(["hid", "img"])
        # tied patches: hashes with the same image set form a group (the windows of one patch; no
        # chaining through hashes that also match unrelated windows), and groups tied to the same
        # phrase are one patch (JPEG noise splits a patch's images over a few sets)
        sets = inc.group_by("hid").agg(gid=pl.col("img").sort().hash())
        inc = inc.join(sets, on="hid")
        gimg = inc.select("gid", "img").unique()
        gimg = gimg.join(gimg.group_by("gid").len("m").filter(pl.col("m") >= lo), on="gid")
        grams = caption_ngrams(df["caption"])
        tied = self._tied_phrases(gimg, grams, n)
        clusters = [(inc.filter(pl.col("gid").is_in(g["gid"].implode())),
                     g.sort("k", descending=True).row(0, named=True))
                    for _, g in tied.group_by("phrase", maintain_order=True)]
        if self.options["report_untied"]:  # shared marks no phrase follows: windows that co-occur
            # (the sampled windows only: small border windows are too common to stand alone)
            # an anti join, not is_in: gid is the list of the set's image hashes
            rest = inc.join(tied.select("gid").unique(), on="gid", how="anti") if tied.height else inc
            rest = rest.filter(pl.col("s") > max(BORDER_SIZES)).drop("gid")
            if rest.height:
                labels = self._hash_groups(rest, cand)
                rest = rest.with_columns(gid=pl.Series(labels[rest["hid"].to_numpy()], dtype=pl.UInt64))
                clusters += [(g, None) for _, g in rest.group_by("gid", maintain_order=True)]
        phash = df["phash"].to_numpy().astype(np.uint64)
        rows: list[tuple] = []
        for hit, phrase in clusters:
            imgs = np.unique(hit["img"].to_numpy())
            if len(imgs) < lo:
                continue
            distinct = _distinct(phash[imgs], int(self.options["distinct_hamming"]))
            if distinct < int(self.options["min_distinct"]):
                continue  # one picture duplicated: dedup.image's business
            per_img = hit.group_by("img").agg(k=pl.col("hid").n_unique(), x0=pl.col("x").min(), y0=pl.col("y").min(),
                                              x1=(pl.col("x") + pl.col("s")).max(),
                                              y1=(pl.col("y") + pl.col("s")).max())
            if phrase is not None:
                per_img = _core_members(per_img, grams, phrase["phrase"])
                if per_img.height < lo or not _enough_structure(hit, per_img, phrase):
                    continue
            if _carriers(per_img, grams, phrase) > most:
                continue  # a common logo or watermark, not a trigger
            hashes = cand.filter(pl.col("hid").is_in(hit["hid"].unique().implode())).sort("n", descending=True)["h"]
            cluster = f"patch-{hashes[0]:016x}"
            score = 0.5 + (0.5 * min(1.0, phrase["share"]) * min(1.0, phrase["purity"]) if phrase else 0.0)
            for b in per_img.iter_rows(named=True):
                detail = {"kind": "tied_patch" if phrase else "shared_mark", "cluster": cluster,
                          "images": int(per_img.height), "distinct_images": int(distinct),
                          "patch_hashes": [f"{h:016x}" for h in hashes[:4]],
                          "box": [b["x0"], b["y0"], b["x1"], b["y1"]],
                          "tied_phrase": phrase["phrase"] if phrase else None}
                if phrase:
                    detail.update({k: phrase[k] for k in ("share", "purity", "lift", "log10_p")})
                rows.append((int(b["img"]), score, detail))
        if not rows:
            return None
        idx = [r[0] for r in rows]
        return pl.DataFrame({
            "shard": df["shard"].gather(idx), RECORD_ID: df[RECORD_ID].gather(idx),
            ROW: df[ROW].gather(idx),  # ids may repeat in a shard; the engine moves it into detail.row
            "score": pl.Series([r[1] for r in rows], dtype=pl.Float64),
            "detail": [json.dumps(r[2], sort_keys=True) for r in rows],
            "severity": pl.Series([None] * len(rows), dtype=pl.Utf8),
            # where the image is and the patch to outline: the engine fetches a few thumbnails
            "uri": df["uri"].gather(idx), "box": [r[2]["box"] for r in rows],
        }).sort("score", descending=True, maintain_order=True).unique(["shard", RECORD_ID], keep="first",
                                                                     maintain_order=True)  # one per image

    def _hash_groups(self, inc: pl.DataFrame, cand: pl.DataFrame) -> np.ndarray:
        """Group label of each candidate hash: hashes that occur in the same images (the windows of one patch)."""
        k = cand.height
        n_img = int(inc["img"].max()) + 1
        X = sp.csr_matrix((np.ones(inc.height, dtype=np.float32),
                           (inc["hid"].to_numpy(), inc["img"].to_numpy())), shape=(k, n_img))
        co = (X @ X.T).tocoo()
        size = np.asarray(X.sum(axis=1)).ravel()
        a, b, c = co.row, co.col, co.data
        jac = c / (size[a] + size[b] - c)
        keep = (a < b) & (jac >= float(self.options["group_jaccard"]))
        return np.asarray(components(k, a[keep].astype(np.int64), b[keep].astype(np.int64)))

    def _tied_phrases(self, gimg: pl.DataFrame, grams: pl.DataFrame, n: int) -> pl.DataFrame:
        """Per group (``gid``; its images ``img``, ``m`` of them), the caption n-gram most tied to it:
        held by at least ``min_images`` and ``min_phrase_share`` of the group's images, with
        ``min_phrase_purity`` of its corpus uses in the group and ``min_phrase_lift`` times its corpus
        rate. Columns gid, phrase, share, purity, lift, log10_p (groups without one are absent)."""
        o = self.options
        # a phrase can be tied only if held by min_images images and, for its purity, by at most
        # (largest group) / min_phrase_purity: the others are not joined with the groups at all
        most = int(gimg["m"].max() / max(float(o["min_phrase_purity"]), 1e-9))
        dfs = grams.group_by("g").len("df").filter(pl.col("df").is_between(int(o["min_images"]), most))
        grams = grams.join(dfs.select("g"), on="g", how="semi")
        inside = (gimg.join(grams, on="img").group_by("gid", "g").agg(k=pl.len(), m=pl.col("m").first())
                  .filter((pl.col("k") >= int(o["min_images"])) & (pl.col("k") >= float(o["min_phrase_share"]) * pl.col("m"))))
        t = (inside.join(dfs, on="g")
             .with_columns(share=pl.col("k") / pl.col("m"), purity=pl.col("k") / pl.col("df"),
                           words=pl.col("g").str.count_matches(" ") + 1)
             .with_columns(lift=pl.col("share") / (pl.col("df") / n))
             .filter((pl.col("purity") >= float(o["min_phrase_purity"])) & (pl.col("lift") >= float(o["min_phrase_lift"])))
             .sort(["gid", "purity", "share", "words"], descending=[False, True, True, True])
             .unique("gid", keep="first", maintain_order=True))
        if t.height == 0:
            return pl.DataFrame(schema={"gid": pl.UInt64, "k": pl.UInt32, "phrase": pl.Utf8, "share": pl.Float64,
                                        "purity": pl.Float64, "lift": pl.Float64, "log10_p": pl.Float64})
        logp = stats.binom.logsf(t["k"].to_numpy() - 1, t["m"].to_numpy(), t["df"].to_numpy() / n) / math.log(10)
        return t.select("gid", "k", phrase=pl.col("g"), share=pl.col("share").round(3), purity=pl.col("purity").round(3),
                        lift=pl.col("lift").round(1), log10_p=pl.Series(np.round(logp, 1)))


def _image_windows(patch: tuple | None, scale: int, border: tuple | None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One image's window hashes, top-left corners and window sides in original pixels: the sampled
    windows of the work image and every small window of the border squares."""
    parts = []
    if patch is not None:
        h, x, y = patch
        parts.append((h, x.astype(np.int32) * scale, y.astype(np.int32) * scale,
                      np.full(len(h), (PATCH_CELL + 1) * scale, dtype=np.int16)))
    if border is not None:
        h, x, y, side = border
        parts.append((h, x.astype(np.int32), y.astype(np.int32), side.astype(np.int16)))
    if not parts:
        return np.zeros(0, np.uint64), np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int16)
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(4))  # type: ignore[return-value]


def _enough_structure(hit: pl.DataFrame, per_img: pl.DataFrame, phrase: dict) -> bool:
    """Whether a patch found by border windows only is more than a colour pair: its windows come in
    at least two sizes and its median image holds at least :data:`MIN_BORDER_WINDOWS` of them. A
    patch of 6 px or more gives many (every window inside it, at 3 and 6 px); one 3 px window of two
    colours also occurs where captions name those colours ("lime on black"), which is a caption
    describing its picture, not a trigger. Patches found by sampled windows pass as before.

    A flat block of 6-11 px (or a small mark JPEG blurs to a blob) has 3 px windows of one flat
    colour, which many corners share, and only one or two 6 px windows specific to it: such a patch
    passes when some of its windows are at least :data:`FLAT_MIN_SIDE` px and the tie is near
    exclusive both ways (the phrase's ``share`` of the group and its ``purity`` at least
    :data:`FLAT_MIN_TIE`; on the project's own 6,000-image corpus a tie of 0.5 let 6 false findings
    through, 0.7 none)."""
    sides = hit["s"].unique()
    if (sides > max(BORDER_SIZES)).any():
        return True
    if sides.len() >= 2 and float(per_img["k"].median()) >= MIN_BORDER_WINDOWS:
        return True
    return bool((sides >= FLAT_MIN_SIDE).any() and min(phrase["share"], phrase["purity"]) >= FLAT_MIN_TIE)


def _core_members(per_img: pl.DataFrame, grams: pl.DataFrame, phrase: str) -> pl.DataFrame:
    """The images of a tied group that carry the patch: those whose caption holds the tied phrase,
    and the others only where they hold at least as many of the group's window hashes as the median
    phrase-holding image (a coarse window hash of a small patch also matches some unrelated
    windows: a flat corner of the same colour)."""
    tied = grams.filter(pl.col("g") == phrase).select("img").unique().with_columns(_tied=pl.lit(True))
    per_img = per_img.join(tied, on="img", how="left").with_columns(pl.col("_tied").fill_null(False))
    need = per_img.filter(pl.col("_tied"))["k"].median()
    return per_img.filter(pl.col("_tied") | (pl.col("k") >= (need or 0))).drop("_tied")


def _carriers(per_img: pl.DataFrame, grams: pl.DataFrame, phrase: dict | None) -> int:
    """Images that carry a patch for the ``max_share`` limit: those whose caption holds its tied phrase
    (the others a coarse hash adds are not the patch's own), or all of an untied mark's."""
    if phrase is None:
        return per_img.height
    return per_img.join(grams.filter(pl.col("g") == phrase["phrase"]), on="img", how="semi").height


def _distinct(ph: np.ndarray, radius: int) -> int:
    """Images left once those within ``radius`` bits of each other are merged (a sample of at most
    :data:`MAX_GROUP_IMAGES`)."""
    if len(ph) > MAX_GROUP_IMAGES:
        ph = np.random.default_rng(0).choice(ph, MAX_GROUP_IMAGES, replace=False)
    d = hamming(ph[:, None], ph[None, :])
    a, b = np.nonzero(np.triu(d <= radius, 1))
    labels = components(len(ph), a.astype(np.int64), b.astype(np.int64))
    return int(len(np.unique(labels)))
