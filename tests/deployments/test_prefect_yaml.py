"""deployments/prefect.yaml points at a real flow whose parameters it fills correctly."""
import importlib
import inspect
from pathlib import Path

import yaml
from prefect import Flow

ROOT = Path(__file__).resolve().parents[2]


def test_nightly_deployment_matches_its_flow():
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    (dep,) = [d for d in spec["deployments"] if d["name"] == "nightly"]
    path, _, name = dep["entrypoint"].partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, name)
    assert isinstance(flow, Flow)
    params = inspect.signature(flow.fn).parameters
    assert set(dep["parameters"]) <= set(params)
    assert all(p.default is not inspect.Parameter.empty for n, p in params.items() if n != "source")
    assert dep["schedules"][0]["cron"] == "0 2 * * *"
    assert dep["work_pool"]["name"]
