"""`integrity policy default` and option errors, run the way a user runs them: the CLI in a subprocess."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from integrity.checks import registry

PROJECT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_printed_default_policy_holds_every_option_with_its_description(tmp_path: Path):
    r = cli("policy", "default")
    assert r.returncode == 0, r.stderr
    text = r.stdout
    printed = yaml.safe_load(text)
    # every built-in check's options block is its model's defaults, exactly
    for name in registry.BUILTIN:
        assert printed["checks"][name]["options"] == dict(registry.get(name).default_options), name
    # each option carries its description as a comment, and the checks' explanations are kept
    assert re.search(r"\n      threshold: 0\.8 +# Jaccard similarity of the shingle sets to count as a duplicate\n", text)
    assert "# Near duplicates: MinHash over word n-grams" in text
    assert "##" not in text  # template-only notes are left out
    # the printed file is a policy a user can save, validate and scan with: it loads to the same policy
    saved = tmp_path / "policy.yaml"
    saved.write_text(text)
    v = cli("policy", "validate", str(saved))
    assert v.returncode == 0 and "valid" in v.stdout, v.stdout + v.stderr
    from integrity.policy import load_policy

    assert load_policy(saved).sha256 == load_policy(None).sha256


def test_out_of_range_option_names_the_key_and_what_is_allowed(tmp_path: Path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "text": f"plain text {i}"}) + "\n" for i in range(5)))
    policy = tmp_path / "p.yaml"
    policy.write_text(f"state_dir: {tmp_path / 'state'}\n"
                      "checks:\n  dedup.near:\n    options:\n      threshold: 1.5\n"
                      "  privacy.pii:\n    options: {max_matches: 0, colour: red}\n")
    r = cli("scan", str(corpus), "--out", str(tmp_path / "run"), "--policy", str(policy), "--runner", "inline")
    out = r.stdout + r.stderr
    assert r.returncode == 3, out
    assert "checks.dedup.near.options.threshold: must be <= 1 (got 1.5)" in out
    assert "checks.privacy.pii.options.max_matches: must be >= 1 (got 0)" in out
    assert "checks.privacy.pii.options.colour: unknown option; known options are" in out
    assert "Traceback" not in out and not (tmp_path / "run" / "summary.json").exists()
    r = cli("policy", "validate", str(policy))
    assert r.returncode == 3 and "checks.dedup.near.options.threshold" in r.stdout + r.stderr
