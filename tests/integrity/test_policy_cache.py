"""Loading a policy imports only the checks it must: the rendered default policy and the
built-in checks' validated default options come from a cache (see integrity.policy)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from integrity import policy as P
from integrity.policy import PolicyError, load_policy

ROOT = Path(__file__).resolve().parents[2]

#: what a scan with ``--checks dedup.near`` must not import just to load its policy
HEAVY = ("scipy.stats", "scipy.sparse", "faiss", "torch", "sklearn", "integrity.analysis.images",
         "integrity.analysis.label_triggers", "integrity.analysis.embeddings")

LOAD = """
import json, sys
from integrity.engine.build import build_spec
spec = build_spec({source!r}, out={out!r}, policy={policy!r}, checks="dedup.near")
from integrity.checks.registry import BUILTIN
check_modules = {{path.split(":")[0] for path in BUILTIN.values()}} | {{"integrity.checks.image_base"}}
mods = sorted(m for m in sys.modules if m in check_modules or m in {heavy!r})
print(json.dumps({{"checks": spec.checks, "sha256": spec.policy.sha256, "modules": mods,
                   "near": spec.policy.checks["dedup.near"].options,
                   "pii": spec.policy.checks["privacy.pii"].options}}))
"""


def _load_in_subprocess(tmp_path: Path, cache: Path, policy: Path) -> dict:
    env = {**os.environ, "INTEGRITY_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    code = LOAD.format(source=str(tmp_path), out=str(tmp_path / "run"), policy=str(policy), heavy=HEAVY)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_scan_with_one_check_loads_its_policy_without_importing_the_others(tmp_path):
    """A fresh process loading a policy for ``--checks dedup.near``: the first one renders
    the default policy (every check imported) and caches it; the next one imports no check
    module and no heavy library, and gets the same effective policy and sha256."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("checks:\n  dedup.near:\n    options:\n      threshold: 0.85\n"
                      "  privacy.pii:\n    enabled: false\n")
    cache = tmp_path / "cache"
    cold = _load_in_subprocess(tmp_path, cache, policy)
    assert "integrity.checks.image_base" in cold["modules"]  # rendered: every check imported
    assert len(list(cache.glob("default_policy.*.json"))) == 1
    warm = _load_in_subprocess(tmp_path, cache, policy)
    # the one check whose options the file sets is validated through its model (so imported)
    assert warm["modules"] == ["integrity.checks.dedup_near"], warm["modules"]
    assert warm["checks"] == ["dedup.near"]
    assert warm["sha256"] == cold["sha256"]
    assert warm["near"] == cold["near"] and warm["near"]["threshold"] == 0.85
    assert warm["pii"] == cold["pii"] and warm["pii"]  # a check left alone keeps all its defaults


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A fresh, empty cache for this test (and no in-process copy of an earlier one)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("INTEGRITY_CACHE_DIR", str(folder))
    P.default_policy_data.cache_clear()
    yield folder
    P.default_policy_data.cache_clear()


def test_cached_and_rendered_policies_are_identical(cache_dir, tmp_path):
    rendered = load_policy(None)
    assert list(cache_dir.glob("default_policy.*.json"))
    P.default_policy_data.cache_clear()
    cached = load_policy(None)
    assert cached.model_dump() == rendered.model_dump()
    assert cached.sha256 == rendered.sha256
    assert P.default_policy_text() == P.render_policy(P.default_policy_template())


def test_option_error_names_the_key_with_a_warm_cache(cache_dir, tmp_path):
    """A check whose options come from the cache is still validated when the file sets them."""
    load_policy(None)  # warm
    P.default_policy_data.cache_clear()
    bad = tmp_path / "bad.yaml"
    bad.write_text("checks:\n  image.decode:\n    enabled: false\n    options:\n      max_pixels: -1\n")
    with pytest.raises(PolicyError) as e:
        load_policy(bad)
    assert f"{bad}: checks.image.decode.options.max_pixels: must be >= 1" in str(e.value)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("checks:\n  dedup.near:\n    options:\n      treshold: 0.9\n")
    with pytest.raises(PolicyError, match=r"checks\.dedup\.near\.options\.treshold: unknown option"):
        load_policy(unknown)
    with pytest.raises(PolicyError, match="unknown check 'dedup.nearr'"):
        (tmp_path / "name.yaml").write_text("checks:\n  dedup.nearr:\n    enabled: true\n")
        load_policy(tmp_path / "name.yaml")


def test_a_damaged_cache_is_rendered_again(cache_dir):
    expected = load_policy(None).sha256
    (path,) = cache_dir.glob("default_policy.*.json")
    path.write_text('{"text": ')
    P.default_policy_data.cache_clear()
    assert load_policy(None).sha256 == expected
    assert json.loads(path.read_text())["options"]["dedup.near"]["threshold"] == 0.8


def test_without_a_writable_cache_the_policy_still_loads(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("INTEGRITY_CACHE_DIR", str(blocker / "cache"))
    P.default_policy_data.cache_clear()
    try:
        assert load_policy(None).checks["dedup.near"].options["threshold"] == 0.8
    finally:
        P.default_policy_data.cache_clear()


def test_fingerprint_follows_the_sources(tmp_path, monkeypatch):
    """Any change of a module of integrity or connectors (size or time) makes a new cache key."""
    pkg = tmp_path / "integrity"
    (pkg / "checks").mkdir(parents=True)
    module = pkg / "checks" / "some_check.py"
    module.write_text("X = 1\n")
    monkeypatch.setattr(P, "_package_dir", lambda name: pkg if name == "integrity" else None)
    before = P._sources_fingerprint()
    assert P._sources_fingerprint() == before
    os.utime(module, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns + 1_000_000))
    assert P._sources_fingerprint() != before


def test_a_check_registered_under_a_builtin_name_is_validated_by_its_own_model(cache_dir):
    """A class registered under a built-in name (a plug-in replacing it) is not handed the
    shipped options from the cache: its own model validates them (and here refuses the
    built-in's options, as it did before the cache)."""
    from integrity.checks import registry
    from integrity.checks.base import Check, CheckOptions

    class Replacement(Check):
        name = "dedup.span"

        class Options(CheckOptions):
            min_words: int = 7

    load_policy(None)  # warm, with the built-in
    registry.register(Replacement)
    try:
        with pytest.raises(PolicyError, match=r"checks\.dedup\.span\.options\.span_tokens: unknown option; "
                                              r"known options are \['min_words'\]"):
            load_policy(None)
    finally:
        registry._extra.pop("dedup.span", None)
