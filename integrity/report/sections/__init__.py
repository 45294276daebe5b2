"""Report sections by name; importing this package registers them.

A check names the section that shows its findings in its ``report_section`` class attribute
(:class:`integrity.checks.base.Check`); the report looks the class up through the check
registry, importing only the checks present in the run, and falls back to the generic
``"findings"`` section for a check that names none, names an unknown section, or no longer
imports (an old run dir, a plug-in not installed here).
"""
from __future__ import annotations

from typing import Iterable

from integrity.checks import registry
from integrity.report.model import GENERIC_SECTION, SectionRenderer, section_named
from integrity.report.sections import drift  # noqa: F401  (drift, synthetic_text, provenance)
from integrity.report.sections import dedup_risk  # noqa: F401  (dedup, memorization, contamination)
from integrity.report.sections import images  # noqa: F401  (images, dedup_images)


def section_name(check: str, run_checks: Iterable[str] = ()) -> str:
    """The section ``check`` declares (``run_checks``: the scan's checks, to find plug-ins by import path)."""
    cls = registry.find(check, run_checks)
    return getattr(cls, "report_section", GENERIC_SECTION) if cls is not None else GENERIC_SECTION


def renderer_for(check: str, run_checks: Iterable[str] = ()) -> SectionRenderer:
    """The renderer of the section ``check`` declares."""
    return section_named(section_name(check, run_checks))
