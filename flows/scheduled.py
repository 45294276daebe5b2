"""The flow that deployments schedule: plain JSON parameters, one run directory per run."""
from __future__ import annotations

from typing import Any

from prefect import flow

from flows.build import build_spec
from flows.scan import scan_flow


@flow(name="integrity-scheduled-scan", log_prints=True)
def scheduled_scan(source: str, out_root: str = "runs", policy: str | None = None,
                   columns: dict[str, str] | None = None, checks: str | None = None,
                   quarantine_mode: str | None = None, image_root: str | None = None,
                   corpus: str | None = None, shared_history: bool = False) -> dict[str, Any]:
    """Scan ``source`` into ``out_root/SCAN_ID`` (the nightly deployment's entrypoint).

    ``corpus`` names the corpus whose history the nightly runs share (default: derived from
    ``source``); ``shared_history`` matches against the history every corpus shares."""
    spec = build_spec(source, policy=policy, columns=columns, checks=checks,
                      quarantine_mode=quarantine_mode, out_root=out_root, image_root=image_root,
                      corpus=corpus, shared_history=shared_history)
    spec.runner = "threads"
    return scan_flow(spec)
