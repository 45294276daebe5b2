"""Orchestration only: Prefect flows and tasks that call the plain-Python engine in ``integrity``."""
