"""The opaque-token heuristics (integrity.engine.random_runs): random runs of any format
against words, names and paths built from words."""
from __future__ import annotations

import random
import string

import pytest

from integrity.engine.random_runs import OPAQUE, class_switch_rate, entropy, looks_opaque, vowel_share


def _random_run(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


@pytest.mark.parametrize("alphabet", [string.ascii_letters + string.digits, string.ascii_lowercase + string.digits,
                                      "0123456789abcdef"])
def test_random_runs_look_opaque(alphabet):
    rng = random.Random(7)
    runs = [_random_run(rng, alphabet, 32) for _ in range(200)]
    # a run of one character class now and then (all letters, all digits) is not judged random
    assert sum(looks_opaque(r) for r in runs) >= 190


@pytest.mark.parametrize("run", ["internationalization", "libxml-libxml-perl", "usr/lib/x86_64-linux-gnu",
                                 "JavaScriptFrameworkGuide", "counterrevolutionaries", "python3-setuptools-scm",
                                 "2026-12-04T10-15-00"])
def test_words_and_names_built_from_words_do_not(run):
    assert OPAQUE.fullmatch(run) or len(run) < 16
    assert not looks_opaque(run)


def test_the_measures_behind_it():
    assert entropy("aaaa") == 0.0 and entropy("abcd") == pytest.approx(2.0)
    assert class_switch_rate("a1b2c3d4") == pytest.approx(1.0) and class_switch_rate("abcdefgh") == 0.0
    assert vowel_share(list("banana")) == pytest.approx(0.5)
