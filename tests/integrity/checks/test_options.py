"""Options models: every built-in check declares its options once (default, range, description);
a plug-in check with a plain ``default_options`` dict keeps working."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

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


class BannedWords(Check):
    """The README's "Writing a check" example."""

    name = "tests.banned_words"

    class Options(CheckOptions):
        words: list[str] = Field(default_factory=list, description="words that make a finding")
        min_count: int = Field(1, ge=1, description="occurrences a record needs to be reported")
        mode: Literal["word", "substring"] = Field("word", description="word | substring match")


def test_readme_options_example(tmp_path: Path):
    c = BannedWords({"words": ["x"], "min_count": 2})
    assert c.options == {"words": ["x"], "min_count": 2, "mode": "word"} and c.settings.min_count == 2
    assert BannedWords.default_options == {"words": [], "min_count": 1, "mode": "word"}
    p = tmp_path / "p.yaml"
    p.write_text(f"checks:\n  {__name__}:BannedWords:\n    options: {{mode: regex, min_count: 0}}\n")
    with pytest.raises(PolicyError) as e:
        load_policy(p)
    assert f"checks.{__name__}:BannedWords.options.mode: must be 'word' or 'substring' (got 'regex')" in str(e.value)
    assert f"checks.{__name__}:BannedWords.options.min_count: must be >= 1 (got 0)" in str(e.value)
