"""What a scan is asked to do, in a small serializable form that tasks can receive."""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from integrity.checks import registry
from integrity.checks.base import Check
from integrity.policy import Policy
from integrity.schema import ColumnMapping

#: bump when the engine's per-shard output format changes (invalidates the cache)
ENGINE_VERSION = 2  # 2: per-record findings carry detail.row


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

    @property
    def state_dir(self) -> Path:
        return Path(self.policy.state_dir).expanduser().absolute()

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
