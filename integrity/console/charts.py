"""The console's trend charts across nights (static SVG from :mod:`integrity.report.plots`), cached per ledger state."""
from __future__ import annotations

import threading
from collections import OrderedDict

from markupsafe import Markup

from integrity.console.queries import ConsoleData, ScanRow
from integrity.report import plots

TRENDS = {
    "findings": "Findings per check",
    "quarantined": "Quarantined shards",
    "synthetic": "Synthetic share of records",
    "drift": "Drift findings",
}
MAX_CHECK_SERIES = 6
_CACHE_SIZE = 64


def _labels(scans: list[ScanRow]) -> list[str]:
    return [s.started_at[:10] for s in scans]


def _check_total(s: ScanRow, prefix: str) -> int:
    return sum(n for c, n in s.by_check.items() if c == prefix or c.startswith(prefix + "."))


def render_trend(kind: str, scans: list[ScanRow]) -> Markup:
    """One trend chart over ``scans`` (oldest first)."""
    x = _labels(scans)
    title = f"{TRENDS[kind]} (last {len(scans)} scan{'s' if len(scans) != 1 else ''})"
    if kind == "findings":
        totals: dict[str, int] = {}
        for s in scans:
            for c, n in s.by_check.items():
                totals[c] = totals.get(c, 0) + n
        top = sorted(totals, key=lambda c: (-totals[c], c))[:MAX_CHECK_SERIES]
        series = {c: [s.by_check.get(c, 0) for s in scans] for c in top} or {"findings": [0] * len(scans)}
        return plots.line_chart(x, series, title=title, ylabel="findings", integer=True)
    if kind == "quarantined":
        series = {"quarantined": [s.verdicts.get("quarantine", 0) for s in scans],
                  "unreadable": [s.verdicts.get("unreadable", 0) for s in scans]}
        return plots.line_chart(x, series, title=title, ylabel="shards", integer=True)
    if kind == "synthetic":
        share = [(_check_total(s, "synthetic") / s.rows) if s.rows else None for s in scans]
        return plots.line_chart(x, {"synthetic": share}, title=title, ylabel="share of records", percent=True)
    if kind == "drift":
        return plots.line_chart(x, {"distribution.drift": [_check_total(s, "distribution.drift") for s in scans]},
                                title=title, ylabel="findings", integer=True)
    raise KeyError(kind)


class TrendCache:
    """Rendered trend SVGs keyed by (kind, source, nights, ledger state); thread-safe, LRU."""

    def __init__(self, data: ConsoleData):
        self.data = data
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple, str] = OrderedDict()

    def get(self, kind: str, source: str | None, nights: int) -> str:
        key = (kind, *self.data.trend_key(source, nights))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        svg = str(render_trend(kind, self.data.trend(source=source, nights=nights)))
        svg = '<?xml version="1.0" encoding="utf-8"?>\n' + svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1) \
            if 'xmlns="http://www.w3.org/2000/svg"' not in svg else '<?xml version="1.0" encoding="utf-8"?>\n' + svg
        with self._lock:
            self._cache[key] = svg
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return svg
