"""Turn command-line style arguments into a :class:`~integrity.engine.spec.ScanSpec` (the engine's :mod:`integrity.engine.build`,
which the Python API shares)."""
from integrity.engine.build import DEFAULT_COLUMNS, build_spec  # noqa: F401

__all__ = ["DEFAULT_COLUMNS", "build_spec"]
