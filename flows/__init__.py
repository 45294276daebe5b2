"""Orchestration only: Prefect flows and tasks that call the plain-Python engine in ``integrity``."""
# ``integrity`` first: it sets Polars' allocator options, which only count before Polars is imported
import integrity  # noqa: F401
