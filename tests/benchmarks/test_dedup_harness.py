"""benchmarks/dedup.py measures `integrity scan` as the installed command runs: its measured
process loads nothing before the CLI (Polars' allocator is set by the integrity package before
Polars is first imported) and runs no sampling thread unless a figure needs it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_the_peak_rss_helper_loads_only_the_standard_library():
    code = (f"import sys; sys.path.insert(0, {str(BENCH)!r}); import peak_rss; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'polars', 'pyarrow', 'integrity'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_measured_scan_loads_polars_only_through_the_cli(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import dedup
    finally:
        sys.path.remove(str(BENCH))
    data = tmp_path / "data"
    (data / "shards").mkdir(parents=True)
    texts = [f"the package provides tools for parsing files number {i % 7} and more" for i in range(40)]
    pl.DataFrame({"id": [f"d{i}" for i in range(40)], "text": texts}).write_parquet(data / "shards" / "p.parquet")
    out = tmp_path / "out"
    out.mkdir()
    cmd = dedup.ours_command(data, out)
    # whether anything loaded Polars before the CLI (then the integrity package's allocator
    # setting would come too late in that process)
    probe = cmd[-1].replace("from flows.cli import main; main()",
                            "print('polars' in sys.modules); from flows.cli import main; main()")
    run = subprocess.run(cmd[:-1] + [probe], capture_output=True, text=True, timeout=300)
    assert run.returncode in (0, 1, 2), run.stderr
    assert run.stdout.splitlines()[0] == "False"
    assert int((out / "peak_rss_kb").read_text()) > 0
    assert not (out / "peak_rss_kb.anon").exists()  # no sampling thread in a tool's run
    assert json.loads((out / "run" / "summary.json").read_text())["counts"]["rows"] == 40
