"""corpus-integrity: the engine and the checks (plain Python, no Prefect).

The Python API is :func:`integrity.scan` (see :mod:`integrity.api`), which returns a
:class:`integrity.ScanResult`. Both are imported on first use, so ``import integrity.x``
stays cheap.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from integrity.api import ScanResult, scan

__all__ = ["ScanResult", "scan"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from integrity import api

        return getattr(api, name)
    raise AttributeError(f"module 'integrity' has no attribute {name!r}")
