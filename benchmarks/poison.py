#!/usr/bin/env python3
"""Benchmark of poisoned-record detection on the shared poisoned sets, and of false alarms on clean corpora.

For every parquet file in ``../shared/data/poison/`` the ground-truth columns
(``poisoned``, ``attack``) are removed, ``integrity scan`` runs on the copy (the
CLI, in-process ``--runner inline``) and every record with a finding whose check
starts with ``poison.`` counts as flagged — exactly as
``../shared/tools/score_poison.py`` scores. Per file: precision, recall, F1,
FRR (clean rows flagged) and FAR (poison missed), then the macro F1.

Then the share of records flagged on clean corpora — the false-positive rate
users live with: the clean rows of each poisoned file scanned alone, and the
Debian package descriptions with ``section`` as the label.

    python benchmarks/poison.py                      # poison.trigger + poison.target
    python benchmarks/poison.py --checks all         # every check the policy enables
    python benchmarks/poison.py --checks poison.trigger,poison.target,poison.outlier
    python benchmarks/poison.py --no-debian --files 'sst2-*'
    python benchmarks/poison.py --rate 0.01 --no-clean --no-debian   # poison rate 1%

Each scan runs in its own temporary directory (fresh cache and ledger,
quarantine off), so timings include the whole scan.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

PROJECT = Path(__file__).resolve().parents[1]
DATA = PROJECT.parent / "shared" / "data"
DEFAULT_CHECKS = "poison.trigger,poison.target"


def cli_command() -> list[str]:
    """The ``integrity`` CLI of this interpreter's environment (or the module, as a fallback)."""
    exe = Path(sys.executable).with_name("integrity")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from flows.cli import main; sys.argv[0] = 'integrity'; main()"]


def scan(src: Path, columns: list[str], checks: str | None, workdir: Path, timeout: int) -> tuple[set[str], float, str]:
    """Run one scan; returns (flagged record ids, seconds, error or '')."""
    out = workdir / "run"
    args = cli_command() + ["scan", str(src), "--out", str(out), "--runner", "inline",
                            "--quarantine-mode", "off", *columns]
    if checks and checks != "all":
        args += ["--checks", checks]
    t0 = time.time()
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=workdir,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))})
    secs = time.time() - t0
    fp = out / "findings.parquet"
    if p.returncode not in (0, 1, 2) or not fp.exists():
        return set(), secs, f"rc={p.returncode}: {(p.stderr or p.stdout)[-400:]}"
    fd = pl.read_parquet(fp)
    flagged = set(fd.filter(pl.col("check").str.starts_with("poison."))["record_id"].drop_nulls().to_list())
    return flagged, secs, ""


def columns_for(df: pl.DataFrame) -> list[str]:
    if "prompt" in df.columns:
        return ["--id-column", "id", "--prompt-column", "prompt", "--response-column", "response"]
    return ["--id-column", "id", "--text-column", "text", "--label-column", "label"]


def score(truth: dict[str, bool], flagged: set[str]) -> dict:
    tp = sum(1 for k, v in truth.items() if v and k in flagged)
    fp = sum(1 for k, v in truth.items() if not v and k in flagged)
    pos = sum(truth.values())
    neg = len(truth) - pos
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / pos if pos else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"precision": prec, "recall": rec, "f1": f1, "frr": fp / neg if neg else 0.0, "far": 1 - rec,
            "tp": tp, "fp": fp, "positives": pos, "rows": len(truth)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA, help="shared data directory (default: ../shared/data)")
    ap.add_argument("--checks", default=DEFAULT_CHECKS, help="checks to run, or 'all' for the policy's (default: %(default)s)")
    ap.add_argument("--files", default="*", help="glob on the poison file names (default: all)")
    ap.add_argument("--no-clean", action="store_true", help="skip the clean rows of the poisoned files")
    ap.add_argument("--no-debian", action="store_true", help="skip the Debian descriptions")
    ap.add_argument("--rate", type=float, default=None,
                    help="keep every clean row and sample the poisoned ones down to this share (e.g. 0.01)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the --rate sample")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    a = ap.parse_args()

    files = sorted(p for p in (a.data / "poison").glob("*.parquet") if fnmatch.fnmatch(p.stem, a.files))
    if not files:
        print(f"no poisoned files under {a.data / 'poison'}", file=sys.stderr)
        return 3
    results, clean = [], []
    tmp_root = Path(tempfile.mkdtemp(prefix="poison-bench-"))
    try:
        for f in files:
            df = pl.read_parquet(f).with_columns(pl.col("id").cast(pl.Utf8))
            if a.rate is not None:
                clean_rows = df.filter(~pl.col("poisoned"))
                k = int(round(a.rate * clean_rows.height / (1 - a.rate)))
                df = pl.concat([clean_rows, df.filter(pl.col("poisoned")).sample(n=k, seed=a.seed)])
            truth = dict(zip(df["id"].to_list(), df["poisoned"].to_list()))
            work = tmp_root / f.stem
            work.mkdir()
            src = work / f.name
            df.drop("poisoned", "attack").write_parquet(src)
            flagged, secs, err = scan(src, columns_for(df), a.checks, work, a.timeout)
            if err:
                print(f"# {f.name}: scan failed {err}", file=sys.stderr)
                results.append({"file": f.stem, "failed": True, "seconds": secs})
            else:
                results.append({"file": f.stem, "seconds": secs, **score(truth, flagged)})
            if not a.no_clean:
                cwork = tmp_root / f"{f.stem}-clean"
                cwork.mkdir()
                csrc = cwork / f"{f.stem}-clean.parquet"
                cdf = df.filter(~pl.col("poisoned"))
                cdf.drop("poisoned", "attack").write_parquet(csrc)
                cflag, csecs, cerr = scan(csrc, columns_for(cdf), a.checks, cwork, a.timeout)
                clean.append({"corpus": f"{f.stem} (clean rows)", "rows": cdf.height,
                              "flagged": None if cerr else len(cflag), "seconds": csecs})
            shutil.rmtree(work, ignore_errors=True)
        debian = a.data / "debian" / "descriptions.parquet"
        if not a.no_debian and debian.exists():
            dwork = tmp_root / "debian"
            dwork.mkdir()
            rows = pl.scan_parquet(debian).select(pl.len()).collect().item()
            dflag, dsecs, derr = scan(debian, ["--id-column", "id", "--text-column", "text", "--label-column", "section"],
                                      a.checks, dwork, a.timeout)
            if derr:
                print(f"# debian: scan failed {derr}", file=sys.stderr)
            clean.append({"corpus": "debian/descriptions (section as label)", "rows": rows,
                          "flagged": None if derr else len(dflag), "seconds": dsecs})
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)

    print(f"checks: {a.checks}" + (f"; poisoned rows sampled to {a.rate:.1%}" if a.rate is not None else ""))
    print(f"{'file':32s} {'prec':>6s} {'rec':>6s} {'F1':>6s} {'FRR':>6s} {'FAR':>6s} {'secs':>6s}")
    for r in results:
        if r.get("failed"):
            print(f"{r['file']:32s} {'FAILED':>6s}")
            continue
        print(f"{r['file']:32s} {r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f} "
              f"{r['frr'] * 100:5.1f}% {r['far'] * 100:5.1f}% {r['seconds']:6.1f}")
    f1s = [0.0 if r.get("failed") else r["f1"] for r in results]
    macro = sum(f1s) / max(len(f1s), 1)
    print(f"macro F1 over {len(results)} files: {macro:.3f}")
    if clean:
        print()
        print(f"{'clean corpus':48s} {'rows':>7s} {'flagged':>8s} {'share':>7s} {'secs':>6s}")
        for c in clean:
            if c["flagged"] is None:
                print(f"{c['corpus']:48s} {c['rows']:7d} {'FAILED':>8s}")
                continue
            print(f"{c['corpus']:48s} {c['rows']:7d} {c['flagged']:8d} {c['flagged'] / max(c['rows'], 1) * 100:6.2f}% "
                  f"{c['seconds']:6.1f}")
    if a.json:
        a.json.write_text(json.dumps({"checks": a.checks, "files": results, "macro_f1": macro, "clean": clean}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
