"""The ops console: scans over nights, findings drill-down and the quarantine queue, served on the ledger.

``integrity console --state-dir DIR`` serves :func:`create_app` with uvicorn
(loopback by default). Server-rendered Jinja2 pages on Starlette, no CDN,
no Prefect import. Roles: ``viewer`` (reads) and ``operator`` (also
releases and restores quarantined shards). See :mod:`integrity.console.auth`
for credentials, sessions and CSRF, and :mod:`integrity.console.queries`
for what each page reads.
"""
from integrity.console.app import create_app  # noqa: F401
from integrity.console.auth import BindError, add_user, check_binding, is_loopback  # noqa: F401

__all__ = ["BindError", "add_user", "check_binding", "create_app", "is_loopback"]
