"""The peak memory of a benchmarked process, recorded by the process itself (stdlib only: a
measured ``integrity scan`` must load nothing before the CLI does, as Polars' allocator is set
by the ``integrity`` package before Polars is first imported)."""
from __future__ import annotations

import time
from pathlib import Path


def record_peak_rss(path: str, sample_anon: bool = False) -> None:
    """At exit, write this process's peak RSS (VmHWM: the high-water mark of its own
    memory map since exec; getrusage of a child would include the parent's RSS at fork)
    and, with ``sample_anon``, to ``path + '.anon'`` the peak of its anonymous memory
    (RssAnon sampled every 20 ms: RSS without the file pages of memory-mapped inputs such
    as the history). The sampling thread takes the GIL 50 times a second (a 16x dedup.near
    scan took 19.2-20.3 s with it, 18.9-19.5 s without, two runs each), so only the runs that
    report it sample."""
    import atexit
    import threading

    peak_anon = [0]

    def status(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
        return 0

    def sample() -> None:
        while True:
            peak_anon[0] = max(peak_anon[0], status("RssAnon"))
            time.sleep(0.02)

    if sample_anon:
        threading.Thread(target=sample, daemon=True).start()

    def write() -> None:
        Path(path).write_text(str(status("VmHWM")))
        if sample_anon:
            Path(path + ".anon").write_text(str(max(peak_anon[0], status("RssAnon"))))

    atexit.register(write)
