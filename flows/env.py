"""Environment defaults applied before Prefect is imported: quiet, offline and
self-contained (a project-local PREFECT_HOME, no analytics)."""
from __future__ import annotations

import os
from pathlib import Path


def prefect_defaults(state_dir: str | os.PathLike = ".integrity") -> None:
    """Set Prefect settings the user has not set: PREFECT_HOME under the state
    directory, analytics off, no update checks."""
    os.environ.setdefault("PREFECT_HOME", str(Path(state_dir).expanduser().absolute() / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # its SQLite file lives there
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # model loading must not draw progress bars or warnings over the scan's own output
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
