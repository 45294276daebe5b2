"""The README's promise: a check is one module plus one registry line, and the report shows its
findings in the section it declares (a plug-in named by import path as well)."""
from __future__ import annotations

import html
import json
import textwrap
from pathlib import Path

import polars as pl
import pytest

import integrity
from integrity.checks import registry
from integrity.report.model import SECTIONS, Block, generic_section, report_section

#: the whole check: one module, written as a user would
CHECK_MODULE = textwrap.dedent('''
    """``style.shouting``: records written in capitals."""
    import polars as pl
    import pyarrow as pa

    from integrity.checks.base import Check, CheckOutput, findings_frame


    class ShoutingCheck(Check):
        name = "style.shouting"
        description = "records written in capitals"
        report_section = "shouting"

        def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
            frame = pl.from_arrow(batch).select("record_id", "text")
            loud = frame.filter(pl.col("text").str.contains("[A-Z]")
                                & (pl.col("text") == pl.col("text").str.to_uppercase()))
            return CheckOutput(findings=findings_frame(loud["record_id"], [1.0] * loud.height,
                                                       [{"kind": "capitals"}] * loud.height))
''')

TEXTS = ["a calm sentence about the weather", "STOP WRITING IN CAPITALS", "another quiet line",
         "THIS ONE SHOUTS TOO", "lower case again"]


@pytest.fixture
def shouting_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The check's module importable as ``shouting_check``, and its section registered."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "shouting_check.py").write_text(CHECK_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))

    @report_section("shouting")
    def shouting_section(data):
        sec = generic_section(data)
        sec.blocks.insert(0, Block(kind="note", text="shouting section: records in capitals"))
        return sec

    yield "shouting_check:ShoutingCheck"
    del SECTIONS["shouting"]


def _section(doc: str, check: str) -> str:
    start = doc.index(f'id="check-{check.replace(".", "-")}"')
    return doc[start:doc.index("</section>", start)]


def _scan(tmp_path: Path, check: str) -> integrity.ScanResult:
    frame = pl.DataFrame({"id": [f"r{i}" for i in range(len(TEXTS))], "text": TEXTS})
    return integrity.scan(frame, checks=[check], out=tmp_path / "run", state_dir=tmp_path / "state")


def test_a_builtin_check_is_one_module_plus_one_registry_line(tmp_path, shouting_module, monkeypatch):
    monkeypatch.setitem(registry.BUILTIN, "style.shouting", shouting_module)  # the one registry line
    result = _scan(tmp_path, "style.shouting")
    found = result.findings.filter(pl.col("check") == "style.shouting")
    assert sorted(found["record_id"]) == ["r1", "r3"]
    assert json.loads((result.run_dir / "summary.json").read_text())["checks"] == ["style.shouting"]
    section = html.unescape(_section(result.report_path.read_text(), "style.shouting"))
    assert "shouting section: records in capitals" in section  # the section the check declares
    assert "STOP WRITING IN CAPITALS" in section  # its examples, with the excerpt


def test_a_plugin_named_by_import_path_gets_its_declared_section(tmp_path, shouting_module):
    assert "style.shouting" not in registry.available()
    result = _scan(tmp_path, shouting_module)
    assert sorted(result.findings.filter(pl.col("check") == "style.shouting")["record_id"]) == ["r1", "r3"]
    section = _section(result.report_path.read_text(), "style.shouting")
    assert "shouting section: records in capitals" in section


def test_a_plugins_policy_entry_by_import_path_sets_its_severity(tmp_path, shouting_module):
    """The policy names the plug-in by its import path, its findings carry the class's name:
    the entry's severity still applies, and the report does not list the check as clean."""
    frame = pl.DataFrame({"id": [f"r{i}" for i in range(len(TEXTS))], "text": TEXTS})
    policy = {"checks": {shouting_module: {"enabled": True, "severity": "critical"}}}
    result = integrity.scan(frame, checks=[shouting_module], policy=policy, out=tmp_path / "run",
                            state_dir=tmp_path / "state")
    found = result.findings.filter(pl.col("check") == "style.shouting")
    assert found["severity"].to_list() == ["critical", "critical"]
    assert result.verdict == "fail"
    doc = result.report_path.read_text()
    assert "Checks with no findings" not in doc  # the one check that ran had findings
