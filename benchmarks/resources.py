"""Peak memory of reading and scanning big shards: many short lines, and one huge record.

Issue 13 measured 1.65 GB peak RSS scanning a 300 MB shard of short lines and
2.6 GB for a 300 MB single-record shard (about 8x the record). This script
writes both shards (JSONL) and prints, for each, the peak RSS of a child
process that only reads the shard (``ShardReader``) and of one that scans it
with the CLI (``integrity scan --runner inline``), under the default read
limits and with ``limits.max_record_bytes`` raised past the record (what a
user who trusts the data would do).

    .venv/bin/python benchmarks/resources.py [--mb 300] [--checks dedup.exact,privacy.pii,privacy.secret] [--only "single record"]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("river", "garden", "spring", "bread", "train", "weather", "stone", "light", "paper", "window")


def write_short_lines(path: Path, mb: int) -> int:
    """~``mb`` MB of ~100-byte JSON lines; returns the record count."""
    n, size = 0, 0
    with path.open("w") as f:
        while size < mb * 1_000_000:
            words = " ".join(WORDS[(n * 7 + k) % 10] for k in range(8 + n % 5))
            line = json.dumps({"id": n, "text": f"record {n}: {words}"}) + "\n"
            f.write(line)
            size += len(line)
            n += 1
    return n


def write_single_record(path: Path, mb: int) -> None:
    """One JSON line whose text is ~``mb`` MB of words."""
    chunk = " ".join(WORDS) + " "
    with path.open("w") as f:
        f.write('{"id": "only", "text": "')
        for _ in range(mb * 1_000_000 // len(chunk)):
            f.write(chunk)
        f.write('"}\n')


def peak_of(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """(peak RSS MiB, wall s, exit code, output tail) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, time.perf_counter() - t0, proc.returncode, out.strip()[-300:]


READ_ONLY = """
import sys
from connectors import ShardReader, ShardReadError, list_shards
from connectors.limits import ReadLimits
from connectors.schema import ColumnMapping
[ref] = list_shards(sys.argv[1])
rows = 0
try:
    for batch in ShardReader(ref, ColumnMapping(), limits=ReadLimits(max_record_bytes=int(sys.argv[2]))):
        rows += batch.num_rows
    print("read", rows, "rows")
except ShardReadError as e:
    print("refused:", str(e)[-160:])
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=300, help="size of each shard in MB")
    ap.add_argument("--checks", default="dedup.exact,privacy.pii,privacy.secret")
    ap.add_argument("--only", choices=("short lines", "single record"), help="run one of the two shards only")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    raised = (args.mb + 64) << 20  # max_record_bytes past the single record
    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        short, single = tmp_p / "short" / "lines.jsonl", tmp_p / "single" / "record.jsonl"
        short.parent.mkdir()
        single.parent.mkdir()
        n = write_short_lines(short, args.mb if args.only != "single record" else 0)
        write_single_record(single, args.mb)
        print(f"shards: {short.stat().st_size / 1e6:.0f} MB of {n:,} short lines; "
              f"{single.stat().st_size / 1e6:.0f} MB single record; checks {args.checks}")
        print("| shard | limits | run | peak RSS MiB | wall s | result |")
        print("|---|---|---|---|---|---|")
        for name, path in (("short lines", short), ("single record", single)):
            if args.only and name != args.only:
                continue
            for label, record_limit in (("default", 64 << 20), (f"max_record_bytes {raised >> 20} MiB", raised)):
                if name == "short lines" and record_limit != 64 << 20:
                    continue
                policy = tmp_p / f"policy-{record_limit}.yaml"
                policy.write_text(f"state_dir: {tmp_p / 'state'}\nlimits:\n  max_record_bytes: {record_limit}\n")
                runs = {
                    "read only": [sys.executable, "-c", READ_ONLY, str(path), str(record_limit)],
                    "scan": [sys.executable, "-m", "flows.cli", "scan", str(path), "--out",
                             str(tmp_p / f"run-{name[:5]}-{record_limit}"), "--policy", str(policy),
                             "--runner", "inline", "--checks", args.checks],
                }
                for run, cmd in runs.items():
                    peak, wall, rc, out = peak_of(cmd, env)
                    result = out.splitlines()[-1] if run == "read only" else _scan_result(tmp_p, name, record_limit, rc)
                    print(f"| {name} | {label} | {run} | {peak:,.0f} | {wall:.1f} | {result} |", flush=True)


def _scan_result(tmp: Path, name: str, record_limit: int, rc: int) -> str:
    summary = tmp / f"run-{name[:5]}-{record_limit}" / "summary.json"
    if not summary.exists():
        return f"rc {rc}, no summary"
    s = json.loads(summary.read_text())
    if s.get("unreadable"):
        return "unreadable: " + s["unreadable"][0]["error"].split(": ", 1)[-1][:90]
    return f"{s['verdict']}, {s['counts']['rows']:,} rows, {s['counts']['findings']:,} findings"


if __name__ == "__main__":
    main()
