"""Start-up benchmark: wall time of `integrity gate` on an unchanged (fully cached) corpus.

Times the gate as a user runs it (a fresh process each time), after a warm-up run that fills
the cache, for: the default runner with no Prefect server configured or running, the inline
runner, and the default runner with a Prefect server running (the scan then shows in its UI).
Prints the median wall and CPU seconds of --repeat runs per case.

    .venv/bin/python benchmarks/startup.py [--corpus DIR] [--repeat 3] [--code-root DIR]

--code-root runs another checkout's code (e.g. an older commit) with the same corpus and
settings, for before/after figures. The corpus defaults to the demo corpus (examples/corpus).
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.server import free_port, start_local_server  # noqa: E402


def gate_seconds(code_root: Path, corpus: Path, policy: Path, env: dict[str, str], runner: str | None,
                 out: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system, of the gate and the processes it waited for,
    such as a temporary Prefect server) and exit code of one `integrity gate` process. On a
    shared machine the CPU seconds are the steadier figure."""
    cmd = [sys.executable, "-m", "flows.cli", "gate", str(corpus), "--policy", str(policy), "--out", str(out)]
    if runner:
        cmd += ["--runner", runner]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=code_root, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode not in (0, 1, 2):
        sys.exit(f"gate could not run ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), p.returncode


def case(name: str, code_root: Path, corpus: Path, work: Path, env: dict[str, str], runner: str | None,
         repeat: int) -> None:
    policy = work / f"policy-{len(list(work.glob('policy-*')))}.yaml"
    # state (cache, history, ledger) of its own per case; mark: the corpus stays unchanged
    policy.write_text(f"state_dir: {policy.with_suffix('.state')}\nquarantine:\n  mode: mark\n")
    gate_seconds(code_root, corpus, policy, env, runner, work / "warmup")
    times, cpus, code = [], [], None
    for i in range(repeat):
        wall, cpu, code = gate_seconds(code_root, corpus, policy, env, runner, work / f"run-{name}-{i}")
        times.append(wall)
        cpus.append(cpu)
    print(f"{name:46s} wall median {statistics.median(times):5.1f} s, CPU median {statistics.median(cpus):5.1f} s "
          f"(wall: {', '.join(f'{t:.1f}' for t in times)}; exit {code})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=ROOT / "examples" / "corpus")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--code-root", type=Path, default=ROOT)
    args = ap.parse_args()
    code_root = args.code_root.absolute()
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    try:
        corpus = work / "corpus"
        shutil.copytree(args.corpus, corpus)
        home = work / "prefect-home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        # nothing answers at the profile's server address (the machine may run other servers on 4200)
        env.update(PREFECT_HOME=str(home), PYTHONPATH=str(code_root), PREFECT_SERVER_API_PORT=str(free_port()),
                   PREFECT_SERVER_ANALYTICS_ENABLED="false", HF_HUB_OFFLINE="1",
                   # older code starts Prefect's ephemeral server per scan: give it time on a busy machine
                   PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180")
        print(f"code {code_root}, corpus {args.corpus} ({sum(f.stat().st_size for f in corpus.rglob('*') if f.is_file()):,} bytes), "
              f"{os.cpu_count()} CPUs", flush=True)
        case("gate, default runner, no Prefect server", code_root, corpus, work, env, None, args.repeat)
        case("gate --runner inline", code_root, corpus, work, env, "inline", args.repeat)
        os.environ["PREFECT_HOME"] = str(home)
        with start_local_server(port=free_port()) as server:
            case("gate, default runner, Prefect server running", code_root, corpus, work,
                 {**env, "PREFECT_API_URL": server.api_url}, None, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
