from pathlib import Path

import pytest

from integrity.policy import PolicyError, load_policy


def test_default_policy_loads_with_documented_checks():
    p = load_policy(None)
    assert p.source == "default"
    assert {"dedup.exact", "privacy.pii", "privacy.secret"} <= set(p.enabled_checks())
    assert p.quarantine.mode == "move"
    assert len(p.sha256) == 64


def test_partial_policy_merges_over_default(tmp_path: Path):
    f = tmp_path / "p.yaml"
    f.write_text("checks:\n  privacy.pii:\n    enabled: false\nverdict:\n  warn:\n    flagged_share: 0.2\n")
    p = load_policy(f)
    assert "privacy.pii" not in p.enabled_checks()
    assert p.verdict.warn.flagged_share == 0.2
    assert p.verdict.quarantine.critical_share == 0.01  # default kept
    assert p.sha256 != load_policy(None).sha256


@pytest.mark.parametrize(
    "text, where",
    [
        ("verdict:\n  quarantine:\n    critical_share: 2\n", "verdict.quarantine.critical_share"),
        ("checks:\n  privacy.pii:\n    severity: {critical: high}\n", "checks.privacy.pii.severity"),
        ("checks:\n  privacy.pii:\n    severity: {critical: 0.2, warn: 0.5}\n", "checks.privacy.pii.severity"),
        ("checks:\n  dedup.exact:\n    options: {min_charz: 3}\n", "checks.dedup.exact.options"),
        ("checks:\n  dedup.fuzzy:\n    enabled: true\n", "unknown check 'dedup.fuzzy'"),
        ("quarantine:\n  mode: delete\n", "quarantine.mode"),
        ("verdikt: {}\n", "verdikt"),
        ("verdict:\n  quarantine:\n    any_critical_in: [privacy.secrets]\n", "verdict.quarantine.any_critical_in"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("checks: [\n", "not valid YAML"),
    ],
)
def test_invalid_policy_names_the_file_and_key(tmp_path: Path, text: str, where: str):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(PolicyError) as e:
        load_policy(f)
    assert str(f) in str(e.value)
    assert where in str(e.value)


def test_missing_policy_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load_policy(tmp_path / "nope.yaml")


def test_severity_thresholds_map_scores():
    cp = load_policy(None).check_policy("privacy.pii")
    assert cp.severity_of(1.0, None, "warn") == "critical"
    assert cp.severity_of(0.5, None, "warn") == "warn"
    assert cp.severity_of(0.3, None, "warn") == "info"


def test_bare_yaml_off_is_the_off_mode(tmp_path: Path):
    p = tmp_path / "p.yaml"
    p.write_text("quarantine:\n  mode: off\n")  # YAML 1.1 reads a bare off as false
    assert load_policy(p).quarantine.mode == "off"
    p.write_text("quarantine:\n  mode: true\n")
    with pytest.raises(PolicyError, match="quarantine.mode"):
        load_policy(p)
