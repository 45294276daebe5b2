"""This process's own peak memory, for tests that bound what a child process may use.

``getrusage(RUSAGE_SELF).ru_maxrss`` is no such figure in a child: Linux starts it at the
parent's high-water mark and keeps it across fork and exec, so a child of a pytest
process that has grown to 2 GB reports at least 2 GB whatever it does itself (and a
before/after difference inside it reads 0). ``VmHWM`` belongs to the process's own
memory map, which exec replaces: it is the child's own peak.
"""
from __future__ import annotations

import resource


def own_peak_rss_mib() -> int:
    """Peak resident memory of this process since it was exec'd, in MiB (``VmHWM`` from
    ``/proc/self/status``; ``ru_maxrss`` where there is no ``/proc``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
