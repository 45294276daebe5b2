"""``report.html``: the human report of one scan, rendered from its run dir.

:func:`write_report` reads only the files of a run dir (``summary.json``,
``shards.parquet``, ``findings.parquet`` and, when present,
``examples.parquet``), so any past run can be re-rendered with
``integrity report RUN_DIR``. The output is one self-contained HTML file:
inline CSS, inline SVG charts drawn here in Python (see
:mod:`integrity.report.charts`), a few lines of optional inline JS for sorting and
filtering the shard table, nothing loaded from the network.

Everything that comes from the scanned data (shard names, record ids,
excerpts, details, error messages) is untrusted: the template is rendered
with autoescape on and no value is ever marked safe here except the SVG
that :mod:`integrity.report.charts` builds with its own escaping.

Per-check sections are produced by *section renderers*
(:mod:`integrity.report.model`; formatting helpers and colours are in
:mod:`integrity.report.format`). A check names its section in its
``report_section`` class attribute; any check that names none, including
plug-ins, gets :func:`~integrity.report.model.generic_section` (counts, score histogram, examples with
highlighted evidence, top findings). A new section is a function registered
under a name in a module of :mod:`integrity.report.sections`, e.g.::

    @report_section("poison")
    def poison_section(data: CheckData) -> Section:
        sec = generic_section(data)
        sec.blocks.append(Block(kind="note", title="…", text="…"))
        return sec

and a check shows its findings there with ``report_section = "poison"``.

This module writes the HTML; :mod:`integrity.report.context` builds what the
template shows and :mod:`integrity.report.read` reads the run dir's files.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from connectors.atomic import atomic_output
from integrity.report import charts
from integrity.report.context import MAX_SHARD_ROWS, build_context
from integrity.report.format import fmt_duration, fmt_int, fmt_score, human_bytes
from integrity.report.read import SHARD_COLUMNS

__all__ = ["EXAMPLES_SHOWN", "MAX_SHARD_ROWS", "SHARD_COLUMNS", "build_context", "render_report", "write_report"]

EXAMPLES_SHOWN = 2  # per check; the rest are folded under "N more examples"


# --------------------------------------------------------------------------- rendering


def _finalize(value: Any) -> Any:
    """Every ``{{ value }}``: plain strings (data) get bidi/zero-width/control
    characters shown as ⟨U+XXXX⟩; Markup (our SVG) is left alone."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return charts.reveal_invisible(value)
    return value


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
    )
    env.filters.update(
        human_bytes=human_bytes,
        fmt_int=fmt_int,
        fmt_duration=fmt_duration,
        fmt_score=fmt_score,
    )
    env.globals["EXAMPLES_SHOWN"] = EXAMPLES_SHOWN
    return env


def _template() -> jinja2.Template:
    text = resources.files("integrity.report").joinpath("templates/report.html").read_text(encoding="utf-8")
    return _environment().from_string(text)


def render_report(run_dir: Path) -> str:
    """The report of ``run_dir`` as an HTML string."""
    return _template().render(**build_context(Path(run_dir)))


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Render ``run_dir``'s report to ``out`` (default ``run_dir/report.html``); return the path.

    Written to a temporary file first and renamed, so a crash never leaves a
    half-written report behind.
    """
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    html = render_report(run_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:  # a full disk leaves no truncated report, and the error names it
        tmp.write_text(html, encoding="utf-8")
    return out

