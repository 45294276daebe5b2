"""The scan policy: which checks run, their options and severity thresholds,
the shard verdict rules and the quarantine mode.

A policy is a YAML file validated on load; every error names the file and the
dotted key that is wrong (``checks.privacy.pii.severity.warn``,
``checks.dedup.near.options.threshold``). Keys left out keep the defaults of the
shipped default policy: ``default_policy.yaml`` (enabling, severities, verdict
rules, limits, ...) with each check's ``options:`` generated from the check's
options model (:mod:`integrity.checks.options`), where every option's default,
allowed values and description are written once.

Loading a policy imports no check module unless it must: the rendered default
policy and every built-in check's validated default options are cached (keyed by
the size and modification time of every module of ``integrity`` and
``connectors``, see :func:`default_policy_data`), so a scan imports only the checks
it runs, plus those whose options the policy file sets (validated through their
model, as always). The effective policy and its ``sha256`` are the same either way.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib.util
import json
import os
import re
import tempfile
import textwrap
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from integrity.checks import registry
from integrity.checks.base import CheckConfigError

#: libyaml's loader where PyYAML has it, for the (trusted, generated) default policy: a policy
#: file itself is read with the pure-Python loader, whose error messages the errors quote
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Severity = Literal["info", "warn", "critical"]
SEVERITY_RANK = {"info": 0, "warn": 1, "critical": 2}


class PolicyError(ValueError):
    """The policy file is invalid; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SeverityThresholds(_Strict):
    critical: float | None = Field(default=None, ge=0)
    warn: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> "SeverityThresholds":
        if self.critical is not None and self.warn is not None and self.warn > self.critical:
            raise ValueError("warn threshold must not be above the critical threshold")
        return self


class CheckPolicy(_Strict):
    enabled: bool = True
    severity: Severity | SeverityThresholds | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    def severity_of(self, score: float, proposed: str | None, default: str) -> str:
        """Severity for one finding: the policy's fixed value or thresholds, else the check's."""
        if isinstance(self.severity, str):
            return self.severity
        if isinstance(self.severity, SeverityThresholds):
            if self.severity.critical is not None and score >= self.severity.critical:
                return "critical"
            if self.severity.warn is not None and score >= self.severity.warn:
                return "warn"
            return "info"
        return proposed or default


class QuarantineRules(_Strict):
    critical_share: float = Field(default=0.01, ge=0, le=1)
    any_critical_in: list[str] = Field(default_factory=list)
    any_finding_in: list[str] = Field(default_factory=list)


class WarnRules(_Strict):
    flagged_share: float = Field(default=0.01, ge=0, le=1)
    any_critical: bool = True
    shard_findings: bool = True


class VerdictRules(_Strict):
    quarantine: QuarantineRules = Field(default_factory=QuarantineRules)
    warn: WarnRules = Field(default_factory=WarnRules)


class QuarantineSettings(_Strict):
    mode: Literal["move", "copy", "mark", "off"] = "move"
    dir: str | None = None

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false: `mode: off` means the mode "off"
        return "off" if value is False else value


class ReportSettings(_Strict):
    examples_per_check: int = Field(default=5, ge=0, le=100)
    excerpt_chars: int = Field(default=400, ge=40, le=10_000)


class LimitsSettings(_Strict):
    """Read limits (see :class:`connectors.limits.ReadLimits`, whose defaults these mirror)."""

    max_shard_bytes: int = Field(default=64 << 30, ge=1)
    max_record_bytes: int = Field(default=64 << 20, ge=1)
    max_expansion_ratio: float = Field(default=200.0, gt=1)
    ratio_grace_bytes: int = Field(default=16 << 20, ge=0)
    max_json_depth: int = Field(default=100, ge=1, le=2000)

    def read_limits(self):
        """The :class:`connectors.limits.ReadLimits` a reader takes."""
        from connectors.limits import ReadLimits

        return ReadLimits(**self.model_dump())


class Policy(_Strict):
    version: Literal[1] = 1
    state_dir: str = ".integrity"
    batch_size: int = Field(default=8192, ge=1, le=1_000_000)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    checks: dict[str, CheckPolicy] = Field(default_factory=dict)
    verdict: VerdictRules = Field(default_factory=VerdictRules)
    quarantine: QuarantineSettings = Field(default_factory=QuarantineSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)
    #: where it came from ("default" or a path) and the hash of its effective content
    source: str = "default"
    sha256: str = ""

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, checks: dict[str, CheckPolicy]) -> dict[str, CheckPolicy]:
        for name in checks:
            registry.check_known(name)  # raises UnknownCheckError with the list of known checks
        return checks

    def enabled_checks(self, only: list[str] | None = None) -> list[str]:
        """Names of the checks to run: the enabled ones, or the subset ``only``."""
        if only:
            unknown = [c for c in only if c not in self.checks]
            for c in unknown:
                registry.get(c)  # unknown name -> clear error
            return list(dict.fromkeys(only))
        return [name for name, cp in self.checks.items() if cp.enabled]

    def check_policy(self, name: str) -> CheckPolicy:
        return self.checks.get(name) or CheckPolicy()

    def quarantine_dir(self) -> Path:
        return Path(self.quarantine.dir) if self.quarantine.dir else Path(self.state_dir) / "quarantine"


def _deep_merge(base: dict, override: Mapping) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict) and k != "severity":
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def default_policy_template() -> str:
    """``default_policy.yaml`` as shipped: the default policy without the checks' ``options:`` blocks."""
    return resources.files("integrity").joinpath("default_policy.yaml").read_text(encoding="utf-8")


def default_policy_text() -> str:
    """The documented default policy: the shipped template with every check's
    ``options:`` block generated from its options model, each option commented
    with its description (what ``integrity policy default`` prints)."""
    return default_policy_data()["text"]


#: cache file names: ``default_policy.<fingerprint>.json``
_CACHE_PREFIX = "default_policy."


def _package_dir(name: str) -> Path | None:
    """The folder of a top-level package, found without importing it."""
    spec = importlib.util.find_spec(name)
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


def _sources_fingerprint() -> str:
    """What the rendered default policy depends on: the template, every module of
    ``integrity`` and ``connectors`` (an option's default may be a constant of any of
    them; path, size, modification time) and the versions of pydantic and PyYAML."""
    import pydantic

    h = hashlib.sha256(default_policy_template().encode())
    h.update(f"{pydantic.VERSION}\0{yaml.__version__}\n".encode())
    for name in ("integrity", "connectors"):
        root = _package_dir(name)
        if root is None:
            continue
        for path in sorted(root.rglob("*.py")):
            st = path.stat()
            h.update(f"{name}/{path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _cache_dirs() -> list[Path]:
    """Where the default policy may be cached, first choice first: ``$INTEGRITY_CACHE_DIR``
    when set (the only choice then), else next to the package's bytecode (as Python caches
    it), else the user's cache folder (a read-only install)."""
    if os.environ.get("INTEGRITY_CACHE_DIR"):
        return [Path(os.environ["INTEGRITY_CACHE_DIR"])]
    dirs = []
    root = _package_dir("integrity")
    if root is not None:
        dirs.append(root / "__pycache__")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    dirs.append(Path(base) / "corpus-integrity")
    return dirs


def _render_default_data() -> dict[str, Any]:
    """The rendered default policy and each built-in check's validated default options
    (imports every check module)."""
    text = render_policy(default_policy_template())
    checks = yaml.safe_load(text).get("checks") or {}
    options = {name: registry.get(name)((cp or {}).get("options") or {}).options
               for name, cp in checks.items() if name in registry.BUILTIN}
    # a round trip through JSON now, so a cached copy and a fresh one are the same values
    return json.loads(json.dumps({"text": text, "options": options}))


def _read_cache(key: str) -> dict[str, Any] | None:
    for folder in _cache_dirs():
        try:
            data = json.loads((folder / f"{_CACHE_PREFIX}{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("text"), str) and isinstance(data.get("options"), dict):
            return data
    return None


def _write_cache(key: str, data: dict[str, Any]) -> None:
    """Atomically, in the first folder that takes it (none: no cache, nothing else changes);
    older versions of the cache there are removed."""
    for folder in _cache_dirs():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".default_policy.", suffix=".tmp", dir=folder)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, folder / f"{_CACHE_PREFIX}{key}.json")
        except OSError:
            continue
        for old in folder.glob(f"{_CACHE_PREFIX}*.json"):
            if old.name != f"{_CACHE_PREFIX}{key}.json":
                with contextlib.suppress(OSError):  # another process may remove it first
                    old.unlink()
        return


@functools.cache
def default_policy_data() -> dict[str, Any]:
    """``{"text": the default policy (see :func:`default_policy_text`), "options": built-in
    check -> its validated default options}``, from the cache when the sources it was made
    from are unchanged, else rendered (importing every check module) and cached."""
    key = _sources_fingerprint()
    data = _read_cache(key)
    if data is None:
        data = _render_default_data()
        _write_cache(key, data)
    return data


COMMENT_COLUMN = 32  # where an option's trailing description starts, as in the rest of the file
WIDTH = 118


def _option_lines(key: str, value: Any, description: str, indent: int) -> list[str]:
    """One option as YAML lines with its description as a comment (trailing when the value
    fits on one line, else on the line before)."""
    pad = " " * indent
    # block style for the key, flow style ([a, b], {k: v}) for a list or mapping value
    flow = None if isinstance(value, (list, dict)) and value else False
    dumped = yaml.safe_dump({key: value}, default_flow_style=flow, sort_keys=False, allow_unicode=True,
                            width=WIDTH - indent - 24).rstrip("\n").split("\n")
    body = [pad + line for line in dumped]
    if not description:
        return body
    if len(body) > 1 or len(body[0]) > WIDTH - 40:
        wrapped = textwrap.wrap(description, WIDTH - indent - 2)
        return [f"{pad}# {line}" for line in wrapped] + body
    column = max(COMMENT_COLUMN, len(body[0]) + 2)
    wrapped = textwrap.wrap(description, max(40, WIDTH - column - 2))
    first = f"{body[0].ljust(column)}# {wrapped[0]}"
    return [first] + [f"{' ' * column}# {line}" for line in wrapped[1:]]


def options_block(check: str, indent: int = 4) -> list[str]:
    """The ``options:`` block of one check, generated from its options model."""
    model = registry.get(check).Options
    defaults, descriptions = model.defaults(), model.descriptions()
    if not defaults:
        return [" " * indent + "options: {}"]
    lines = [" " * indent + "options:"]
    for key, value in defaults.items():
        lines += _option_lines(key, value, descriptions.get(key, ""), indent + 2)
    return lines


_CHECK_HEADER = re.compile(r"^  ([A-Za-z0-9_.:]+):\s*$")


def render_policy(template: str) -> str:
    """``template`` with an ``options:`` block appended to each check under ``checks:``
    (after the check's last indented line) and its ``##`` lines left out."""
    lines = [line for line in template.split("\n") if not line.startswith("##")]
    out: list[str] = []
    in_checks, current = False, None

    def close() -> None:
        nonlocal current
        if current is not None:
            # after the check's last body line, before blank lines and the next check's comments
            at = len(out)
            while at > 0 and (not out[at - 1].strip() or not out[at - 1].startswith("    ")):
                at -= 1
            out[at:at] = options_block(current)
            current = None

    for line in lines:
        if re.match(r"^\S", line) and not line.startswith("#"):
            close()
            in_checks = line.startswith("checks:")
        elif in_checks and _CHECK_HEADER.match(line):
            close()
            current = _CHECK_HEADER.match(line).group(1)
        out.append(line)
    close()
    return "\n".join(out)


def _format_loc(loc: tuple) -> str:
    # pydantic puts union member names into the location; drop them
    parts = [str(p) for p in loc if not (isinstance(p, str) and (p.startswith("literal[") or p in {
        "SeverityThresholds", "str", "function-after[_ordered(), SeverityThresholds]"}))]
    return ".".join(parts) or "(top level)"


MAX_POLICY_BYTES = 1 << 20  # a policy is a few KB; anything this big is not one
MAX_POLICY_DEPTH = 32  # nesting levels (the deepest real key is about 6 levels down)


def _depth(value: Any) -> int:
    """Nesting depth of parsed YAML, iteratively (a hostile file cannot exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, Mapping):
            children = list(v.values())
        elif isinstance(v, list):
            children = v
        else:
            continue
        deepest = max(deepest, d)
        if d > MAX_POLICY_DEPTH:
            break
        stack.extend((c, d + 1) for c in children)
    return deepest


def _read_yaml(path: Path, where: str) -> Any:
    """The parsed policy file, or a :class:`PolicyError` saying what is wrong with it."""
    try:
        if path.stat().st_size > MAX_POLICY_BYTES:
            raise PolicyError(f"{where}: {path.stat().st_size:,} bytes is too large for a policy file "
                              f"(at most {MAX_POLICY_BYTES:,}); check the --policy path")
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PolicyError(f"{where}: cannot read the policy file ({e.strerror}); check the --policy path") from e
    except UnicodeDecodeError as e:
        raise PolicyError(f"{where}: not a YAML text file (byte {e.start} is not UTF-8); "
                          "check the --policy path") from None
    if "\x00" in text:
        raise PolicyError(f"{where}: not a YAML text file (it holds NUL bytes); check the --policy path")
    try:
        user = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise PolicyError(f"{where}: not valid YAML: {e}") from e
    except RecursionError:
        raise PolicyError(f"{where}: nested too deeply to be a policy (more than {MAX_POLICY_DEPTH} levels)") from None
    if _depth(user) > MAX_POLICY_DEPTH:
        raise PolicyError(f"{where}: nested too deeply to be a policy (more than {MAX_POLICY_DEPTH} levels)")
    return user


def load_policy(path: str | Path | None = None) -> Policy:
    """Load and validate a policy (``None``: the shipped default).

    The file's keys are merged over the default, so a policy may hold only what
    it changes. Raises :class:`PolicyError` naming the file and the bad key.
    """
    shipped = default_policy_data()
    default = yaml.load(shipped["text"], Loader=_SafeLoader)
    where = "default policy"
    data: dict = default
    user: Any = {}
    if path is not None:
        where = str(path)
        user = _read_yaml(Path(path), where)
        if not isinstance(user, Mapping):
            raise PolicyError(f"{where}: the top level must be a mapping of keys (version, checks, verdict, ...)")
        data = _deep_merge(default, user)
    try:
        policy = Policy.model_validate(data)
    except ValidationError as e:
        lines = [f"{where}: {_format_loc(err['loc'])}: {err['msg']}" for err in e.errors()]
        raise PolicyError("invalid policy:\n  " + "\n  ".join(lines)) from None
    except registry.UnknownCheckError as e:
        raise PolicyError(f"{where}: checks: {e}") from None
    user_checks = user.get("checks") if isinstance(user, Mapping) else None
    user_options = {name for name, cp in (user_checks or {}).items() if isinstance(cp, Mapping) and "options" in cp}
    bad: list[str] = []
    for name, cp in policy.checks.items():
        if name not in user_options and registry.is_shipped(name) and name in shipped["options"]:
            # the shipped defaults, validated when the cache was made: no need to import the check
            cp.options = copy.deepcopy(shipped["options"][name])
            continue
        try:
            # validated through the check's options model; the policy keeps the complete options
            cp.options = registry.get(name)(cp.options).options
        except CheckConfigError as e:
            problems = e.problems or [("", str(e))]
            bad += [f"{where}: checks.{name}.options{'.' + key if key else ''}: {problem}" for key, problem in problems]
    if bad:
        raise PolicyError("invalid policy:\n  " + "\n  ".join(bad))
    for rule, names in (("any_critical_in", policy.verdict.quarantine.any_critical_in),
                        ("any_finding_in", policy.verdict.quarantine.any_finding_in)):
        for n in names:
            if n not in registry.available():
                raise PolicyError(f"{where}: verdict.quarantine.{rule}: unknown check {n!r}")
    policy.source = "default" if path is None else str(path)
    policy.sha256 = hashlib.sha256(yaml.safe_dump(policy.model_dump(exclude={"source", "sha256"}), sort_keys=True).encode()).hexdigest()
    return policy
