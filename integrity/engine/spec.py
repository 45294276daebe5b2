"""What a scan is asked to do, in a small serializable form that tasks can receive."""
from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from connectors.schema import ColumnMapping
from integrity.checks import registry
from integrity.checks.base import Check
from integrity.policy import Policy

#: bump when the engine's per-shard output format changes (invalidates the cache)
ENGINE_VERSION = 3  # 2: per-record findings carry detail.row; 3: cached features masked as display text


@dataclass
class ScanSpec:
    """Everything a shard task needs, small and picklable (sent to Dask workers)."""

    source: str
    out: Path
    policy: Policy
    mapping: ColumnMapping = field(default_factory=ColumnMapping)
    checks: list[str] = field(default_factory=list)
    storage_options: dict[str, Any] | None = None
    reference: str | None = None
    quarantine_mode: str | None = None  # overrides the policy's mode when set
    scan_id: str = field(default_factory=lambda: new_scan_id())
    runner: str = "local"
    #: the corpus this scan belongs to: its history and ledger entries are kept apart from other corpora's
    corpus: str = ""
    #: match against (and add to) the history shared by every corpus scanned with this option
    shared_history: bool = False
    #: the run directory when it is an fsspec URL (``s3://bucket/run``): the flow process writes
    #: its outputs to ``out`` (a local staging directory) and uploads them there at the end, and
    #: the corpus passes' partition tasks exchange their files under it (``work_url``)
    out_url: str | None = None

    def __post_init__(self) -> None:
        self.corpus = check_corpus_name(self.corpus) if self.corpus else default_corpus_name(self.source)

    @property
    def state_dir(self) -> Path:
        return Path(self.policy.state_dir).expanduser().absolute()

    @property
    def history_dir(self) -> Path:
        """Where the checks keep what they remember between scans (dedup history, drift and
        synthetic-share history, approved content): per corpus, or the state directory's
        shared history with ``shared_history``."""
        return self.state_dir if self.shared_history else corpus_state_dir(self.state_dir, self.corpus)

    @property
    def run_location(self) -> str:
        """Where the run directory's outputs end up: ``out_url``, else the local ``out``."""
        return self.out_url or str(self.out)

    @property
    def work_url(self) -> str:
        """Where partition tasks of the corpus passes read and write their files: the run
        directory's ``.work`` (every worker reaches it: a shared disk or an object store)."""
        return f"{self.out_url}/.work/{self.scan_id}" if self.out_url else str(self.out / ".work")

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "cache"

    @property
    def mode(self) -> str:
        return self.quarantine_mode or self.policy.quarantine.mode

    def check_instance(self, name: str, shard=None) -> Check:
        return registry.get(name)(self.policy.check_policy(name).options, shard)

    def cache_key(self) -> str:
        """Key of the per-shard results besides the shard's SHA-256: checks, their
        options and versions, the column mapping, and the engine version."""
        blob = json.dumps(
            {
                "engine": ENGINE_VERSION,
                "checks": sorted(self.check_instance(n).fingerprint() for n in self.checks),
                "mapping": self.mapping.to_dict(),
                "limits": self.policy.limits.model_dump(),
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:20]


_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_corpus_name(name: str) -> str:
    """``name`` if it can name a corpus (letters, digits, ``.``, ``_``, ``-``; it becomes a directory name)."""
    if not _NAME_OK.match(name) or name in (".", ".."):
        raise ValueError(f"corpus name {name!r} is not usable: use letters, digits, '.', '_' and '-' "
                         f"(at most 128, starting with a letter or digit), e.g. --corpus web-crawl")
    return name


def canonical_source(source: str) -> str:
    """The source as an absolute, normalized string: the same corpus gives the same text from any
    working directory (``data/``, ``./data`` and ``/abs/data`` alike)."""
    text = str(source).strip()
    if "://" in text:
        return text.rstrip("/")
    return os.path.normpath(os.path.abspath(os.path.expanduser(text)))


def default_corpus_name(source: str) -> str:
    """A stable name derived from the source: its last path component (glob characters and
    extensions left out) and 8 hex digits of the SHA-256 of :func:`canonical_source`, e.g.
    ``corpus-1f3a9c0d``. Two different sources never share a name, so their histories never meet."""
    canon = canonical_source(source)
    digest = hashlib.sha256(canon.encode()).hexdigest()[:8]
    parts = [p for p in re.split(r"[/\\]", canon.split("://", 1)[-1]) if p and not re.search(r"[*?\[]", p)]
    stem = parts[-1].split(".")[0] if parts else ""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_")[:40]
    return f"{stem or 'corpus'}-{digest}"


def corpus_state_dir(state_dir: Path, corpus: str) -> Path:
    """``STATE_DIR/corpora/NAME``: what the checks remember about one corpus."""
    return Path(state_dir) / "corpora" / check_corpus_name(corpus)


def new_scan_id() -> str:
    """Sortable, unique scan id: UTC time plus a random suffix."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def corpus_order(names: list[str]) -> list[str]:
    """Corpus-level checks in an order where each runs after the checks it reads."""
    ordered: list[str] = []
    pending = [n for n in names if registry.get(n).corpus_level]

    def visit(n: str, stack: tuple[str, ...] = ()) -> None:
        if n in ordered or n not in pending:
            return
        if n in stack:
            raise ValueError(f"checks depend on each other in a cycle: {' -> '.join(stack + (n,))}")
        for dep in registry.get(n).after:
            visit(dep, stack + (n,))
        ordered.append(n)

    for n in pending:
        visit(n)
    return ordered
