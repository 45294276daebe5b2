"""Specialised report sections, one module per check family; importing this package registers them."""
from integrity.report.sections import drift  # noqa: F401  (distribution.drift, synthetic.text, provenance.changed)
from integrity.report.sections import dedup_risk  # noqa: F401  (dedup.*, memorization.risk, contamination.eval)
from integrity.report.sections import images  # noqa: F401  (image checks: see IMAGE_CHECKS)
