#!/usr/bin/env python3
"""Benchmark of poisoned-record detection on the shared poisoned sets, and of false alarms on clean corpora.

For every parquet file in ``../shared/data/poison/`` the ground-truth columns
(``poisoned``, ``attack``) are removed, ``integrity scan`` runs on the copy (the
CLI, in-process ``--runner inline``) and every record with a finding whose check
starts with ``poison.`` counts as flagged — exactly as
``../shared/tools/score_poison.py`` scores. Per file: precision, recall, F1,
FRR (clean rows flagged) and FAR (poison missed), then the macro F1.

With ``--grid SEEDS`` it also scores the attack grid of ``poison_gen.py`` (seed
0: development; seeds 1, 2 and 3: held out, never tuned on): per file F1 and FRR (clean
rows flagged), the macro F1 by seed, rate, trigger, target, mode and corpus.

Then the share of records flagged on clean corpora — the false-positive rate
users live with: the clean rows of each poisoned file scanned alone, and the
Debian package descriptions with ``section`` as the label.

    python benchmarks/poison.py                      # the poison.* checks that read text
    python benchmarks/poison.py --grid 0,1 --no-shared --no-debian   # the generated attack grid only
    python benchmarks/poison.py --checks all         # every check the policy enables
    python benchmarks/poison.py --checks poison.trigger,poison.target,poison.outlier
    python benchmarks/poison.py --no-debian --files 'sst2-*'
    python benchmarks/poison.py --rate 0.01 --no-clean --no-debian   # poison rate 1%

Each scan runs in its own temporary directory (fresh cache and ledger,
quarantine off), so timings include the whole scan. The scans run under a
generated policy that enables only the checks asked for (every other registered
check ``enabled: false``; ``poison.outlier`` without embeddings), so the full
grid (2 x 72 files) and the shared sets run end to end through the real CLI;
``--jobs N`` runs N scans at once. ``cpu`` is the scan's CPU seconds (the
figure to compare on a loaded machine, where wall seconds mean little).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
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
# every poison.* check that reads text (score_poison.py counts a record flagged by any of them)
DEFAULT_CHECKS = "poison.trigger,poison.target,poison.outlier,poison.unicode,poison.injection"


def bench_policy(checks: str) -> str:
    """A policy enabling only ``checks`` (comma-separated, or 'all'): every other registered
    check is disabled, so a scan spends its time on the checks measured. poison.outlier's
    MiniLM embeddings are evidence in the detail, not the decision: off here."""
    from integrity.checks import registry

    wanted = set(registry.available()) if checks == "all" else {c for c in checks.split(",") if c}
    lines = ["checks:"]
    for name in registry.available():
        lines.append(f"  {name}:")
        lines.append(f"    enabled: {'true' if name in wanted else 'false'}")
        if name == "poison.outlier":
            lines += ["    options:", "      embed: false"]
    return "\n".join(lines) + "\n"


def cli_command() -> list[str]:
    """The ``integrity`` CLI of this interpreter's environment (or the module, as a fallback)."""
    exe = Path(sys.executable).with_name("integrity")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from flows.cli import main; sys.argv[0] = 'integrity'; main()"]


def run_cli(args: list[str], workdir: Path, timeout: int) -> tuple[int, str, float, float]:
    """Run the CLI; returns (exit code, output tail, wall seconds, CPU seconds of the scan process)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))}
    log = workdir / "cli.log"
    t0 = time.time()
    with open(log, "w") as fh:
        p = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, cwd=workdir, env=env)
        deadline = t0 + timeout
        while True:  # wait4: this child's own CPU time (threads running other scans have theirs)
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                p.kill()
                pid, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.2)
        p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, log.read_text()[-400:], time.time() - t0, usage.ru_utime + usage.ru_stime


def scan(src: Path, columns: list[str], checks: str | None, workdir: Path, timeout: int) -> tuple[set[str], dict, str]:
    """Run one scan; returns (flagged record ids, {"seconds", "cpu"}, error or '')."""
    out = workdir / "run"
    args = cli_command() + ["scan", str(src), "--out", str(out), "--runner", "inline",
                            "--quarantine-mode", "off", *columns]
    if checks and checks != "all":
        args += ["--checks", checks]
    rc, tail, secs, cpu = run_cli(args, workdir, timeout)
    cost = {"seconds": secs, "cpu": cpu}
    fp = out / "findings.parquet"
    if rc not in (0, 1, 2) or not fp.exists():
        return set(), cost, f"rc={rc}: {tail}"
    fd = pl.read_parquet(fp)
    flagged = set(fd.filter(pl.col("check").str.starts_with("poison."))["record_id"].drop_nulls().to_list())
    return flagged, cost, ""


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


def evaluate(df: pl.DataFrame, name: str, checks: str, tmp_root: Path, timeout: int,
             policy: Path | None = None, clean_scan: bool = False) -> tuple[dict, dict | None]:
    """Scan one poisoned file (ground truth dropped) and score it; optionally scan its clean rows alone."""
    truth = dict(zip(df["id"].to_list(), df["poisoned"].to_list()))
    work = tmp_root / name
    work.mkdir()
    src = work / f"{name}.parquet"
    df.drop("poisoned", "attack").write_parquet(src)
    extra = ["--policy", str(policy)] if policy else []
    flagged, cost, err = scan(src, columns_for(df) + extra, checks, work, timeout)
    if err:
        print(f"# {name}: scan failed {err}", file=sys.stderr)
        res = {"file": name, "failed": True, **cost}
    else:
        res = {"file": name, **cost, **score(truth, flagged)}
    shutil.rmtree(work, ignore_errors=True)
    cres = None
    if clean_scan:
        cwork = tmp_root / f"{name}-clean"
        cwork.mkdir()
        csrc = cwork / f"{name}-clean.parquet"
        cdf = df.filter(~pl.col("poisoned"))
        cdf.drop("poisoned", "attack").write_parquet(csrc)
        cflag, ccost, cerr = scan(csrc, columns_for(cdf) + extra, checks, cwork, timeout)
        cres = {"corpus": f"{name} (clean rows)", "rows": cdf.height,
                "flagged": None if cerr else len(cflag), **ccost}
        shutil.rmtree(cwork, ignore_errors=True)
    return res, cres


def print_files(results: list[dict], width: int = 32) -> float:
    print(f"{'file':{width}s} {'prec':>6s} {'rec':>6s} {'F1':>6s} {'FRR':>6s} {'FAR':>6s} {'cpu s':>6s}")
    for r in results:
        if r.get("failed"):
            print(f"{r['file']:{width}s} {'FAILED':>6s}")
            continue
        print(f"{r['file']:{width}s} {r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f} "
              f"{r['frr'] * 100:5.1f}% {r['far'] * 100:5.1f}% {r['cpu']:6.1f}")
    f1s = [0.0 if r.get("failed") else r["f1"] for r in results]
    macro = sum(f1s) / max(len(f1s), 1)
    frrs = [r["frr"] for r in results if not r.get("failed")]
    print(f"macro F1 over {len(results)} files: {macro:.3f}; clean rows flagged: max {max(frrs, default=0) * 100:.2f}%, "
          f"files over 2%: {sum(f > 0.02 for f in frrs)}")
    return macro


def run_grid(seeds: list[int], a: argparse.Namespace, tmp_root: Path) -> list[dict]:
    """Generate the attack grid of each seed (benchmarks/poison_gen.py), scan and score every file
    (``a.jobs`` scans at once)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import poison_gen

    corpora = [c for c in a.grid_corpora.split(",") if c] or None

    def one(seed: int, spec, df: pl.DataFrame) -> dict:
        df = df.with_columns(pl.col("id").cast(pl.Utf8))
        res, _ = evaluate(df, f"s{seed}-{spec.name}", a.checks, tmp_root, a.timeout, a.policy)
        res.update(seed=seed, corpus=spec.corpus, trigger=spec.trigger, target=spec.target, mode=spec.mode,
                   rate=spec.rate)
        print(f"# {res['file']}: F1 {res.get('f1', 0):.3f} FRR {res.get('frr', 0) * 100:.2f}% "
              f"cpu {res['cpu']:.1f}s", file=sys.stderr, flush=True)
        return res

    with cf.ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        futures = [pool.submit(one, seed, spec, df) for seed in seeds
                   for spec, df in poison_gen.generate(seed, a.data, corpora)
                   if fnmatch.fnmatch(spec.name, a.grid_files)]
        return [f.result() for f in futures]


def print_grid(grid: list[dict]) -> None:
    print()
    print("attack grid (benchmarks/poison_gen.py; seed 0 development, seeds 1 and up held out)")
    print_files(grid, width=50)
    ok = [r for r in grid if not r.get("failed")]

    def macro(rows: list[dict]) -> str:
        return f"{sum(r['f1'] for r in rows) / len(rows):.3f} ({len(rows)})" if rows else "-"
    seeds = sorted({r["seed"] for r in grid})
    groups = [(f"seed {seed} ({'development' if seed == 0 else 'held out'})", [r for r in grid if r["seed"] == seed])
              for seed in seeds]
    held_out = [s for s in seeds if s != 0]
    if len(held_out) > 1:  # the held-out grids pooled: one figure over every held-out file
        groups.append((f"held-out seeds {', '.join(map(str, held_out))} pooled", [r for r in grid if r["seed"] != 0]))
    for label, rows in groups:
        f1 = [0.0 if r.get("failed") else r["f1"] for r in rows]
        one = [0.0 if r.get("failed") else r["f1"] for r in rows if r["rate"] == 0.01]
        frr = max((r["frr"] for r in rows if not r.get("failed")), default=0.0)
        print(f"{label}: macro F1 {sum(f1) / len(f1):.3f} over {len(f1)} files, at 1% "
              f"{sum(one) / max(len(one), 1):.3f} ({len(one)}); most clean rows flagged in one file {frr * 100:.2f}%")
    print("macro F1 by", end="")
    for key in ("seed", "rate", "trigger", "target", "mode", "corpus"):
        vals = sorted({r[key] for r in ok}, key=str)
        print(f"\n  {key:8s} " + "  ".join(f"{v}: {macro([r for r in ok if r[key] == v])}" for v in vals), end="")
    print()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA, help="shared data directory (default: ../shared/data)")
    ap.add_argument("--checks", default=DEFAULT_CHECKS, help="checks to run, or 'all' for the policy's (default: %(default)s)")
    ap.add_argument("--policy", type=Path, default=None,
                    help="policy file for every scan (default: generated, only --checks enabled, "
                         "poison.outlier without embeddings)")
    ap.add_argument("--jobs", type=int, default=1, help="scans run at once (default: %(default)s)")
    ap.add_argument("--files", default="*", help="glob on the poison file names (default: all)")
    ap.add_argument("--no-shared", action="store_true", help="skip the shared poisoned sets")
    ap.add_argument("--no-clean", action="store_true", help="skip the clean rows of the poisoned files")
    ap.add_argument("--no-debian", action="store_true", help="skip the Debian descriptions")
    ap.add_argument("--rate", type=float, default=None,
                    help="keep every clean row and sample the poisoned ones down to this share (e.g. 0.01)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the --rate sample")
    ap.add_argument("--grid", default="", help="also score the generated attack grid of these seeds, e.g. '0,1' "
                                               "(0: development, 1 and up: held out)")
    ap.add_argument("--grid-files", default="*", help="glob on the grid's file names")
    ap.add_argument("--grid-corpora", default="", help="comma-separated subset of the grid's corpora")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    a = ap.parse_args()

    files = [] if a.no_shared else sorted(p for p in (a.data / "poison").glob("*.parquet")
                                          if fnmatch.fnmatch(p.stem, a.files))
    if not files and not a.grid:
        print(f"no poisoned files under {a.data / 'poison'}", file=sys.stderr)
        return 3
    results, clean, grid = [], [], []
    tmp_root = Path(tempfile.mkdtemp(prefix="poison-bench-"))
    if a.policy is None:
        a.policy = tmp_root / "policy.yaml"
        a.policy.write_text(bench_policy(a.checks))
    try:
        def shared(f: Path) -> tuple[dict, dict | None]:
            df = pl.read_parquet(f).with_columns(pl.col("id").cast(pl.Utf8))
            if a.rate is not None:
                clean_rows = df.filter(~pl.col("poisoned"))
                k = int(round(a.rate * clean_rows.height / (1 - a.rate)))
                df = pl.concat([clean_rows, df.filter(pl.col("poisoned")).sample(n=k, seed=a.seed)])
            return evaluate(df, f.stem, a.checks, tmp_root, a.timeout, a.policy, clean_scan=not a.no_clean)

        with cf.ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
            for res, cres in pool.map(shared, files):
                results.append(res)
                if cres:
                    clean.append(cres)
        debian = a.data / "debian" / "descriptions.parquet"
        if not a.no_debian and debian.exists():
            dwork = tmp_root / "debian"
            dwork.mkdir()
            rows = pl.scan_parquet(debian).select(pl.len()).collect().item()
            extra = ["--policy", str(a.policy)] if a.policy else []
            dflag, dcost, derr = scan(debian, ["--id-column", "id", "--text-column", "text", "--label-column", "section",
                                               *extra], a.checks, dwork, a.timeout)
            if derr:
                print(f"# debian: scan failed {derr}", file=sys.stderr)
            clean.append({"corpus": "debian/descriptions (section as label)", "rows": rows,
                          "flagged": None if derr else len(dflag), **dcost})
        if a.grid:
            grid = run_grid([int(s) for s in a.grid.split(",")], a, tmp_root)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)

    print(f"checks: {a.checks}" + (f"; poisoned rows sampled to {a.rate:.1%}" if a.rate is not None else ""))
    macro = print_files(results) if results else None
    if clean:
        print()
        print(f"{'clean corpus':48s} {'rows':>7s} {'flagged':>8s} {'share':>7s} {'cpu s':>6s}")
        for c in clean:
            if c["flagged"] is None:
                print(f"{c['corpus']:48s} {c['rows']:7d} {'FAILED':>8s}")
                continue
            print(f"{c['corpus']:48s} {c['rows']:7d} {c['flagged']:8d} {c['flagged'] / max(c['rows'], 1) * 100:6.2f}% "
                  f"{c['cpu']:6.1f}")
    if grid:
        print_grid(grid)
    if a.json:
        a.json.write_text(json.dumps({"checks": a.checks, "files": results, "macro_f1": macro, "clean": clean,
                                      "grid": grid}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
