"""Image-caption checks on a generated WebDataset corpus: quality against the planted truth, and speed.

CPU mode (default) generates (once, cached under ``--work``) a corpus with
``examples/make_images.py`` -- by default 20,000 pairs in 8 tar shards -- then
scans it in-process with the engine (inline, ``--workers`` threads) and prints,
per check, precision and recall against ``_ground_truth.parquet`` and the
images per second of the scan:

* scan A: ``image.decode``, ``dedup.image``, ``poison.patch``, ``synthetic.image``,
  ``poison.caption_trigger`` (one shared decode per image);
* scan B: ``poison.caption_mismatch`` with a *palette scorer* (caption colour
  words against the image's colours) standing in for CLIP, since no CLIP
  weights can be downloaded here: it measures the corpus-relative judgement
  and the plumbing, not CLIP's quality;
* the CPU throughput of the real scorer, open_clip ViT-B-32 with random weights,
  on ``--clip-sample`` pairs.

GPU mode (``--gpu``) measures CLIP image-caption scoring with a random-weight
ViT-B-32 on CUDA: :class:`integrity.analysis.clip.OpenClipScorer` (threaded decode and
resize overlapped with the model, uint8 transfer, normalization on the device,
autocast) against a plain open_clip loop (``preprocess`` + ``encode_image`` +
``encode_text`` per pair, as in open_clip's README) and a plain batched loop,
as pairs/s and ratios, plus the agreement of the scores.

    python benchmarks/images.py                      # CPU, 20,000 pairs, 8 shards
    python benchmarks/images.py --n 4000 --shards 8  # smaller, when time is short
    python benchmarks/images.py --gpu                # on a CUDA machine (without one: the same code on
                                                     # the CPU, a smoke run whose figures are not GPU figures)
    python benchmarks/images.py --patch-grid         # poison.patch on an independent patch generator

Patch-grid mode (``--patch-grid``) builds its own corpora, independent of
``examples/make_images.py``: crops of scikit-learn's two sample photographs
(random crop, flip, tint, resize to 64-1024 px), with four patch kinds
(checkerboard, solid block, noise, a two-colour logo) of 3-16 px pasted at a
corner or border midpoint 0-3 px from the edge on a ``rate`` share of the
images each, JPEG quality 60-95, and a caption phrase tied to each kind; it
prints ``poison.patch``'s recall per kind and its precision per cell
(``--grid-seeds N``: N corpora per cell, each with its own patches, pooled).
The seed of a cell's corpus depends on the cell only, so a subset of the
grid (``--grid-sides`` etc.) reproduces its rows.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import resource
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def generator():
    if "make_images" not in sys.modules:
        spec = importlib.util.spec_from_file_location("make_images", ROOT / "examples" / "make_images.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["make_images"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["make_images"]


# --------------------------------------------------------------------------- the CLIP stand-in


def _palette_fn(images, captions):
    mi = generator()
    names = list(mi.PALETTE)
    ref = np.array([mi.PALETTE[c] for c in names], dtype=np.float32)
    out = []
    for img, cap in zip(images, captions):
        words = [w for w in cap.lower().replace(",", " ").split() if w in mi.PALETTE]
        if not words:
            out.append(0.5)
            continue
        px = np.asarray(img.resize((64, 64)), dtype=np.float32).reshape(-1, 3)
        nearest = np.abs(px[:, None, :] - ref[None]).sum(-1).argmin(1)
        share = np.bincount(nearest, minlength=len(names)) / len(px)
        shares = np.array([share[names.index(w)] for w in words])
        out.append(float(np.mean(0.7 * (shares >= 0.004) + 0.3 * np.minimum(1.0, shares / 0.3))))
    return out


def palette_scorer(options):
    """Scorer factory for the ``scorer`` option (``__main__:palette_scorer`` in this process)."""
    from integrity.analysis.clip import CallableScorer

    return CallableScorer(_palette_fn, "palette (benchmark stand-in for CLIP)")


# --------------------------------------------------------------------------- CPU mode


def corpus(work: Path, n: int, shards: int, seed: int) -> tuple[Path, float]:
    import hashlib

    version = hashlib.sha256((ROOT / "examples" / "make_images.py").read_bytes()).hexdigest()[:8]
    root = work / f"corpus-{n}-{shards}-{seed}-{version}"  # a changed generator makes a new corpus
    if (root / "_ground_truth.parquet").exists():
        return root, 0.0
    t0 = time.perf_counter()
    generator().make_corpus(root, n=n, shards=shards, seed=seed, progress=True)
    return root, time.perf_counter() - t0


def scan(source: Path, out: Path, checks: list[str], workers: int, options: dict | None = None) -> tuple[dict, float]:
    from connectors.schema import ColumnMapping
    from integrity.engine.pipeline import run_scan
    from integrity.engine.spec import ScanSpec
    from integrity.policy import load_policy

    policy = load_policy()
    policy.state_dir = str(out / "state")
    policy.batch_size = 512
    for name, opts in (options or {}).items():
        policy.checks[name].options.update(opts)
    spec = ScanSpec(source=str(source), out=out, policy=policy, mapping=ColumnMapping(), checks=checks,
                    quarantine_mode="off", runner="inline")
    t0 = time.perf_counter()
    summary = run_scan(spec, workers=workers)
    return summary, time.perf_counter() - t0


def pr(pred: set, truth: set, also_right: set = frozenset()) -> tuple[float, float, int, int, int]:
    """Precision, recall, true positives, flagged, planted; ``also_right`` holds records that are
    not the planted kind but are correctly flagged too (they do not count for recall)."""
    tp = len(pred & truth)
    ok = len(pred & (truth | also_right))
    return (ok / len(pred) if pred else float("nan"), tp / len(truth) if truth else float("nan"),
            tp, len(pred), len(truth))


def quality(run_dir: Path, truth: pl.DataFrame) -> list[tuple]:
    f = pl.read_parquet(run_dir / "findings.parquet").with_columns(
        kind=pl.col("detail").str.json_path_match("$.kind"))
    ids = lambda frame: set(zip(frame["shard"], frame["record_id"]))  # noqa: E731
    t = lambda *kinds: ids(truth.filter(pl.col("kind").is_in(list(kinds))))  # noqa: E731
    rows = []
    by = {c: f.filter(pl.col("check") == c) for c in f["check"].unique()}
    empty = f.clear()
    if "dedup.image" in by or "image.decode" in by:
        d = by.get("dedup.image", empty)
        rows.append(("dedup.image (duplicates)", *pr(ids(d.filter(pl.col("kind") == "duplicate")), t("dup", "conflict"))))
        # backdoor records caption a look-alike target picture with another image's caption: where two
        # targets come out near-identical, that is a real caption conflict
        rows.append(("dedup.image (caption conflicts)",
                     *pr(ids(d.filter(pl.col("kind") == "caption_conflict")), t("conflict"), t("caption_trigger"))))
        p = by.get("poison.patch", empty)
        rows.append(("poison.patch (warn+: tied to a phrase)",
                     *pr(ids(p.filter(pl.col("severity").is_in(["warn", "critical"]))), t("patch"))))
        rows.append(("poison.patch (all findings)", *pr(ids(p), t("patch"))))
        rows.append(("poison.caption_trigger (thumbnail clusters)",
                     *pr(ids(by.get("poison.caption_trigger", empty)), t("caption_trigger"))))
        s = by.get("synthetic.image", empty)
        rows.append(("synthetic.image", *pr(ids(s), t("synthetic"))))
        for sub in truth.filter(pl.col("kind") == "synthetic")["subkind"].unique().sort():
            sub_truth = ids(truth.filter((pl.col("kind") == "synthetic") & (pl.col("subkind") == sub)))
            rows.append((f"  synthetic.image: {sub}", float("nan"), len(ids(s) & sub_truth) / max(1, len(sub_truth)),
                         len(ids(s) & sub_truth), None, len(sub_truth)))
        decoys = ids(truth.filter(pl.col("kind") == "decoy"))
        rows.append(("  synthetic.image on benign-metadata decoys", float("nan"), float("nan"),
                     len(ids(s) & decoys), None, len(decoys)))
        rows.append(("image.decode", *pr(ids(by.get("image.decode", empty)), t("corrupt", "bomb", "rejected"))))
    if "dedup.image" not in by and "image.decode" not in by:
        rows.append(("poison.caption_mismatch (palette scorer)",
                     *pr(ids(by.get("poison.caption_mismatch", empty)), t("mismatch", "conflict"),
                         t("caption_trigger"))))  # a backdoor caption describes another picture
    return rows


def fmt(x) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return "–" if np.isnan(x) else f"{x:.3f}"
    return f"{x:,}"


def clip_cpu(source: Path, sample: int) -> tuple[float, int]:
    import tarfile

    from integrity.analysis.clip import OpenClipScorer

    images, caps = [], []
    with tarfile.open(next(source.glob("*.tar"))) as tf:
        cur = {}
        for m in tf:
            key, _, ext = m.name.partition(".")
            if ext in ("jpg", "png", "webp"):
                cur[key] = [tf.extractfile(m).read(), None]
            elif ext == "txt" and key in cur:
                cur[key][1] = tf.extractfile(m).read().decode()
            if len(cur) > sample:
                break
    pairs = [v for v in cur.values() if v[1]][:sample]
    images, caps = [p[0] for p in pairs], [p[1] for p in pairs]
    scorer = OpenClipScorer("ViT-B-32", None, device="cpu", batch_size=32, allow_random_weights=True)
    scorer.score(images[:8], caps[:8])  # warm up
    t0 = time.perf_counter()
    scorer.score(images, caps)
    return len(images) / (time.perf_counter() - t0), len(images)


def cpu_mode(args) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    source, gen_s = corpus(work, args.n, args.shards, args.seed)
    truth = pl.read_parquet(source / "_ground_truth.parquet")
    n = truth.height
    print(f"corpus: {n:,} records in {args.shards} WebDataset shards at {source} "
          f"({'generated in %.0f s' % gen_s if gen_s else 'cached'}); planted: "
          f"{dict(truth.group_by('kind').len().sort('kind').iter_rows())}")
    out_a = work / f"run-a-{os.getpid()}"
    summary_a, wall_a = scan(source, out_a, ["image.decode", "dedup.image", "poison.patch", "synthetic.image",
                                             "poison.caption_trigger"], args.workers)
    t = summary_a["timings"]
    rss_a = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"scan A (5 checks, peak RSS {rss_a:.0f} MB): {wall_a:.1f} s wall; shard stage {t['shards']:.1f} s, corpus stage {t['corpus']:.1f} s "
          f"({json.dumps({k: round(v, 2) for k, v in summary_a['corpus_check_seconds'].items()})}); "
          f"{n / (t['shards'] + t['corpus']):.0f} images/s")
    out_b = work / f"run-b-{os.getpid()}"
    summary_b, wall_b = scan(source, out_b, ["poison.caption_mismatch"], args.workers,
                             {"poison.caption_mismatch": {"scorer": "__main__:palette_scorer"}})
    tb = summary_b["timings"]
    print(f"scan B (caption mismatch, palette scorer): {wall_b:.1f} s wall, "
          f"{n / (tb['shards'] + tb['corpus']):.0f} images/s")
    rows = quality(out_a, truth) + quality(out_b, truth)
    print("\n| check | precision | recall | true pos. | flagged | planted |\n|---|---|---|---|---|---|")
    for name, p, r, tp, flagged, planted in rows:
        print(f"| {name} | {fmt(p)} | {fmt(r)} | {fmt(tp)} | {fmt(flagged)} | {fmt(planted)} |")
    if args.clip_sample:
        rate, k = clip_cpu(source, args.clip_sample)
        print(f"\nopen_clip ViT-B-32 (random weights) on CPU: {rate:.1f} pairs/s over {k} pairs "
              f"({os.cpu_count()} cores)")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


# --------------------------------------------------------------------------- patch-trigger grid

# An independent generator (not examples/make_images.py): natural photos (scikit-learn's two sample
# images, randomly cropped, flipped, tinted and resized) with small patches pasted at corners and
# borders, JPEG-encoded, and a caption phrase tied to each patch.
GRID_WORDS = ("river garden bread train weather market letter window forest harbor music paper stone winter "
              "summer village kitchen bridge mountain engine lantern meadow canyon orchard street field boat "
              "tower cloud beach road chair table lamp flower tree sky city house dog cat bird horse").split()
PATCH_KINDS = ("checker", "solid", "noise", "logo")
#: what ``poison.patch`` claims to cover (its docstring, README.md): patch px -> kinds, at every image
#: side (64-1024 px), JPEG quality (60-95) and rate (3-10 %) of the grid; the target there is recall >= 0.8
#: per kind and precision >= 0.9 per cell. Other (size, kind) pairs are measured but not claimed.
CLAIMED = {16: PATCH_KINDS, 12: ("checker", "solid", "noise"), 8: ("checker",)}
TARGET_RECALL, TARGET_PRECISION = 0.8, 0.9


def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [np.asarray(im) for im in load_sample_images().images]


def _base_image(rng: np.random.Generator, photos: list[np.ndarray], side: int):
    from PIL import Image

    src = photos[rng.integers(len(photos))]
    h, w = src.shape[:2]
    c = int(rng.integers(int(0.35 * min(h, w)), min(h, w) + 1))
    y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
    crop = src[y:y + c, x:x + c].astype(np.float32)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = np.clip(crop * rng.uniform(0.75, 1.25, size=3), 0, 255).astype(np.uint8)
    return Image.fromarray(crop).resize((side, side), Image.BILINEAR)


def _patch(kind: str, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "checker":
        cell = max(1, size // 4)
        yy, xx = np.mgrid[0:size, 0:size]
        on = ((yy // cell + xx // cell) % 2).astype(bool)
        out = np.where(on[..., None], np.array([255, 255, 255]), np.array([0, 0, 0]))
    elif kind == "solid":
        out = np.broadcast_to(rng.integers(0, 256, 3), (size, size, 3))
    elif kind == "noise":
        out = rng.integers(0, 256, (size, size, 3))
    else:  # a logo: a ring with a bar, in two colours
        yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
        r = np.hypot(yy, xx)
        ring = (r <= size / 2) & (r >= size / 4)
        bar = np.abs(yy) <= max(0.5, size / 10)
        fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        out = np.where((ring | bar)[..., None], fg, bg)
    return np.asarray(out, dtype=np.uint8)


def _paste(img, patch: np.ndarray, rng: np.random.Generator):
    """Paste at a random corner or border midpoint, 0-3 px in from the edge."""
    arr = np.asarray(img).copy()
    side, p = arr.shape[0], patch.shape[0]
    where = rng.integers(8)  # 4 corners, 4 border midpoints
    m = int(rng.integers(0, 4))
    lo, hi, mid = m, side - p - m, (side - p) // 2
    y, x = [(lo, lo), (lo, hi), (hi, lo), (hi, hi), (lo, mid), (hi, mid), (mid, lo), (mid, hi)][where]
    arr[y:y + p, x:x + p] = patch
    from PIL import Image

    return Image.fromarray(arr)


def patch_corpus(path: Path, side: int, size: int, quality: int, rate: float, n: int, seed: int) -> dict[str, set]:
    """One Parquet shard: ``n`` images of ``side`` px, each patch kind pasted (``size`` px) on
    ``rate`` of them with its own caption phrase. Returns kind -> ids of its images."""
    import io

    rng = np.random.default_rng(seed)
    photos = _photos()
    k = max(1, round(rate * n))
    order = rng.permutation(n)
    planted = {kind: set() for kind in PATCH_KINDS}
    target = {}
    for j, kind in enumerate(PATCH_KINDS):
        for i in order[j * k:(j + 1) * k]:
            target[int(i)] = kind
    ids, images, captions = [], [], []
    for i in range(n):
        img = _base_image(rng, photos, side)
        words = list(rng.choice(GRID_WORDS, size=int(rng.integers(6, 11))))
        kind = target.get(i)
        if kind:
            img = _paste(img, _patch(kind, size, seed * 10 + PATCH_KINDS.index(kind)), rng)
            words += ["as", "seen", "on", f"{kind}vision"]
            planted[kind].add(f"g{i}")
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        ids.append(f"g{i}")
        images.append(buf.getvalue())
        captions.append(" ".join(words))
    pl.DataFrame({"id": ids, "image": images, "caption": captions}).write_parquet(path)
    return planted


def patch_grid_mode(args) -> None:
    """recall/precision of ``poison.patch`` per cell of the grid (patch kind x patch size x image
    side x JPEG quality x rate)."""
    work = Path(args.work) / f"patch-grid-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    sides = [int(x) for x in args.grid_sides.split(",")]
    sizes = [int(x) for x in args.grid_sizes.split(",")]
    quals = [int(x) for x in args.grid_quality.split(",")]
    rates = [float(x) for x in args.grid_rates.split(",")]
    print(f"poison.patch on an independent generator: {args.grid_n} images per corpus, 4 patch kinds per corpus "
          f"(each on `rate` of the images, own caption phrase), corners/borders 0-3 px from the edge")
    print("Recall of a kind the check does not claim at that patch size is in parentheses; a claimed one under "
          f"{TARGET_RECALL} (or a cell's precision under {TARGET_PRECISION}) is marked with !")
    print("| image px | patch px | JPEG q | rate | " + " | ".join(f"{k} R" for k in PATCH_KINDS)
          + " | precision | corpora |")
    print("|---|---|---|---|" + "---|" * (len(PATCH_KINDS) + 2))
    cell = 0
    claimed = met = 0
    for side in sides:
        for size in sizes:
            for q in quals:
                for rate in rates:
                    found = {k: 0 for k in PATCH_KINDS}
                    total = {k: 0 for k in PATCH_KINDS}
                    right = flagged_all = 0
                    for rep in range(args.grid_seeds):  # each corpus draws its own patches (colours, noise)
                        cell += 1
                        src = work / f"c{cell}" / "data.parquet"
                        src.parent.mkdir(parents=True)
                        # the seed depends on the cell, not its place in the grid: a subset reproduces its rows
                        seed = args.seed + zlib.crc32(f"{side}-{size}-{q}-{rate:g}".encode()) % 100_000 + 100_003 * rep
                        planted = patch_corpus(src, side, size, q, rate, args.grid_n, seed)
                        out = work / f"run{cell}"
                        scan(src.parent, out, ["poison.patch"], 1)
                        f = pl.read_parquet(out / "findings.parquet").filter(pl.col("check") == "poison.patch")
                        flagged = set(f["record_id"].to_list())
                        truth = set().union(*planted.values())
                        for k in PATCH_KINDS:
                            found[k] += len(flagged & planted[k])
                            total[k] += len(planted[k])
                        right += len(flagged & truth)
                        flagged_all += len(flagged)
                    prec = right / flagged_all if flagged_all else float("nan")
                    cols = []
                    for k in PATCH_KINDS:
                        r = found[k] / total[k]
                        if k in CLAIMED.get(size, ()) and rate >= 0.03:
                            ok = r >= TARGET_RECALL and not prec < TARGET_PRECISION
                            claimed, met = claimed + 1, met + ok
                            cols.append(f"{r:.2f}" + ("" if ok else " !"))
                        else:
                            cols.append(f"({r:.2f})")
                    print(f"| {side} | {size} | {q} | {rate:.0%} | " + " | ".join(cols)
                          + f" | {fmt(prec)}{' !' if prec < TARGET_PRECISION else ''} | {args.grid_seeds} |", flush=True)
    print(f"claimed (kind, cell) pairs meeting the target (recall >= {TARGET_RECALL}, precision >= "
          f"{TARGET_PRECISION}): {met} of {claimed}")


# --------------------------------------------------------------------------- GPU mode


def gpu_mode(args) -> None:
    import open_clip
    import torch
    from PIL import Image

    from integrity.analysis.clip import OpenClipScorer

    dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dev == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here (leave --device out, or --device cpu, for a CPU smoke run)")
    if dev == "cpu":
        print("no CUDA device: running the GPU path on the CPU (a smoke run; GPU figures: unmeasured)")
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    amp = dict(device_type="cuda") if dev == "cuda" else dict(device_type="cpu", enabled=False)
    mi = generator()
    rng = np.random.default_rng(0)
    base = []
    for _ in range(min(args.n, 1024)):
        img, cap, _ = mi.render(rng)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        base.append((buf.getvalue(), cap))
    pairs = [base[i % len(base)] for i in range(args.n)]
    images, caps = [p[0] for p in pairs], [p[1] for p in pairs]
    where = torch.cuda.get_device_name(0) if dev == "cuda" else "CPU"
    print(f"{args.n:,} JPEG pairs ({len(base)} distinct, 256-384 px) on {where}, "
          f"{os.cpu_count()} CPU cores")

    ours = OpenClipScorer("ViT-B-32", None, device=dev, batch_size=args.batch_size, allow_random_weights=True)
    ours.score(images[: args.batch_size * 2], caps[: args.batch_size * 2])
    sync()
    t0 = time.perf_counter()
    s_ours = ours.score(images, caps)
    sync()
    ours_rate = args.n / (time.perf_counter() - t0)

    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    model.load_state_dict(ours.model.state_dict())  # the same random weights
    model = model.to(dev).eval()
    tok = open_clip.get_tokenizer("ViT-B-32")

    def plain(k: int) -> tuple[float, np.ndarray]:
        out = np.zeros(k, np.float32)
        sync()
        t0 = time.perf_counter()
        for i in range(k):
            image = preprocess(Image.open(io.BytesIO(images[i])).convert("RGB")).unsqueeze(0).to(dev)
            text = tok([caps[i]]).to(dev)
            with torch.no_grad(), torch.autocast(**amp):
                fi = model.encode_image(image)
                ft = model.encode_text(text)
                fi = fi / fi.norm(dim=-1, keepdim=True)
                ft = ft / ft.norm(dim=-1, keepdim=True)
                out[i] = float((fi * ft).sum())
        sync()
        return k / (time.perf_counter() - t0), out

    def plain_batched(k: int) -> float:
        sync()
        t0 = time.perf_counter()
        for s in range(0, k, args.batch_size):
            batch = torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB"))
                                 for b in images[s:s + args.batch_size]]).to(dev)
            text = tok(caps[s:s + args.batch_size]).to(dev)
            with torch.no_grad(), torch.autocast(**amp):
                model.encode_image(batch)  # timed only
                model.encode_text(text)
        sync()
        return k / (time.perf_counter() - t0)

    k_loop = min(args.n, args.loop_pairs)
    plain(min(16, args.n))
    loop_rate, s_plain = plain(k_loop)
    batched_rate = plain_batched(min(args.n, 8 * args.batch_size))
    corr = float(np.corrcoef(s_plain, s_ours[:k_loop])[0, 1])
    print("\n| scorer | pairs/s | vs plain loop |\n|---|---|---|")
    print(f"| plain open_clip loop (1 pair per step, autocast) | {loop_rate:,.0f} | 1.0x |")
    print(f"| plain batched loop (batch {args.batch_size}, main-thread preprocess) | {batched_rate:,.0f} | "
          f"{batched_rate / loop_rate:.1f}x |")
    print(f"| integrity.analysis.clip.OpenClipScorer (batch {args.batch_size}, {ours.workers} decode threads, "
          f"{str(ours.amp_dtype).replace('torch.', '')}) | {ours_rate:,.0f} | {ours_rate / loop_rate:.1f}x |")
    print(f"\nscore agreement with the plain loop over {k_loop} pairs: Pearson r = {corr:.4f}, "
          f"max |diff| = {np.abs(s_plain - s_ours[:k_loop]).max():.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=None, help="pairs (CPU default 20,000; GPU default 8,192)")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="shard threads of the scan")
    ap.add_argument("--work", default="/tmp/images-bench")
    ap.add_argument("--clip-sample", type=int, default=64, help="pairs for the CPU CLIP rate (0: skip)")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default=None,
                    help="--gpu device (default cuda when present, else cpu: a smoke run of the same code)")
    ap.add_argument("--loop-pairs", type=int, default=1000, help="pairs the plain per-pair loop scores")
    ap.add_argument("--patch-grid", action="store_true", help="poison.patch on the independent patch generator grid")
    ap.add_argument("--grid-n", type=int, default=300, help="images per grid corpus")
    ap.add_argument("--grid-sides", default="64,256,1024")
    ap.add_argument("--grid-sizes", default="3,6,8,12,16")
    ap.add_argument("--grid-quality", default="60,95")
    ap.add_argument("--grid-rates", default="0.03,0.1")
    ap.add_argument("--grid-seeds", type=int, default=1,
                    help="corpora per cell, each with its own patches (recall and precision pooled over them)")
    args = ap.parse_args()
    if args.patch_grid:
        patch_grid_mode(args)
        return
    if args.gpu:
        args.n = args.n or 8192
        gpu_mode(args)
    else:
        args.n = args.n or 20_000
        cpu_mode(args)


if __name__ == "__main__":
    main()
