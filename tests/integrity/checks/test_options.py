"""Options models: every built-in check declares its options once (default, range, description);
a plug-in check with a plain ``default_options`` dict keeps working."""
from __future__ import annotations

from pathlib import Path

import pytest

from integrity.checks import registry
from integrity.checks.base import Check, CheckConfigError, CheckOptions
from integrity.policy import PolicyError, load_policy


@pytest.mark.parametrize("name", sorted(registry.BUILTIN))
def test_builtin_check_declares_typed_options(name):
    cls = registry.get(name)
    assert issubclass(cls.Options, CheckOptions) and cls.Options is not CheckOptions
    defaults = cls.Options.defaults()
    assert defaults and dict(cls.default_options) == defaults
    missing = [k for k, d in cls.Options.descriptions().items() if not d.strip()]
    assert not missing, f"{name}: options without a description: {missing}"
    check = cls()  # the defaults validate
    assert check.options == defaults and isinstance(check.settings, cls.Options)
    with pytest.raises(CheckConfigError, match="unknown option"):
        cls({"no_such_option": 1})


def test_errors_name_the_key_the_bound_and_the_value():
    near = registry.get("dedup.near")
    with pytest.raises(CheckConfigError) as e:
        near({"threshold": 1.5, "ngram": True})
    assert e.value.check == "dedup.near"
    assert ("threshold", "must be <= 1 (got 1.5)") in e.value.problems
    assert ("ngram", "must be a number, not true") in e.value.problems  # YAML true is not the number 1
    assert "option 'threshold': must be <= 1 (got 1.5)" in str(e.value)
    assert near({"threshold": 1}).options["threshold"] == 1.0


def test_changed_options_give_a_new_cache_key():
    near = registry.get("dedup.near")
    assert near().fingerprint() == near({"threshold": 0.8}).fingerprint()
    assert near().fingerprint() != near({"threshold": 0.9}).fingerprint()


class LegacyCheck(Check):
    """A plug-in written before options models: a plain dict of defaults."""

    name = "tests.legacy"
    default_options = {"limit": 3, "words": ["a", "b"], "json": None}


def test_plugin_with_plain_default_options_dict_keeps_working(tmp_path: Path):
    c = LegacyCheck()
    assert c.options == {"limit": 3, "words": ["a", "b"], "json": None}
    assert LegacyCheck({"limit": "any value"}).options["limit"] == "any value"  # no types: values as given
    c.options["words"].append("c")  # defaults are copied, not shared between instances
    assert LegacyCheck().options["words"] == ["a", "b"]
    with pytest.raises(CheckConfigError, match="unknown option"):
        LegacyCheck({"limt": 4})
    # named in a policy by import path, its options are validated and kept
    p = tmp_path / "p.yaml"
    p.write_text(f"checks:\n  {__name__}:LegacyCheck:\n    options: {{limit: 7}}\n")
    assert load_policy(p).checks[f"{__name__}:LegacyCheck"].options == {"limit": 7, "words": ["a", "b"], "json": None}
    p.write_text(f"checks:\n  {__name__}:LegacyCheck:\n    options: {{limt: 7}}\n")
    with pytest.raises(PolicyError, match=rf"checks\.{__name__}:LegacyCheck\.options\.limt: unknown option"):
        load_policy(p)
