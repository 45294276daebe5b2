"""``integrity automations create``: the Prefect automations of ``deployments/automations.yaml``
(alert on a failed scan and on every quarantined shard), posting to one webhook."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

AUTOMATIONS_FILE = Path(__file__).resolve().parents[1] / "deployments" / "automations.yaml"
WEBHOOK_BLOCK = "integrity-alerts"


def load_automations(webhook_block_id: str, path: Path = AUTOMATIONS_FILE) -> list[dict[str, Any]]:
    """The automation definitions of ``path`` with ``{{ webhook }}`` set to the block's id."""
    specs = yaml.safe_load(path.read_text())["automations"]
    for spec in specs:
        for action in spec["actions"]:
            if action.get("block_document_id") == "{{ webhook }}":
                action["block_document_id"] = webhook_block_id
    return specs


def create_automations(webhook_url: str, path: Path = AUTOMATIONS_FILE) -> list[str]:
    """Save the webhook block and create the automations of ``path`` on the configured Prefect
    server, replacing automations of the same names (so re-running changes nothing twice).
    Returns the names created."""
    from prefect.blocks.webhook import Webhook
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore

    block = Webhook(url=webhook_url, headers={"Content-Type": "application/json"})
    block_id = block.save(WEBHOOK_BLOCK, overwrite=True)
    specs = load_automations(str(block_id), path)
    with get_client(sync_client=True) as client:
        for spec in specs:
            for old in client.read_automations_by_name(spec["name"]):
                client.delete_automation(old.id)
            client.create_automation(AutomationCore.model_validate(spec))
    return [s["name"] for s in specs]


def describe(path: Path = AUTOMATIONS_FILE) -> str:
    """One line per automation: name, the event it expects and what it matches."""
    lines = []
    for spec in yaml.safe_load(path.read_text())["automations"]:
        t = spec["trigger"]
        lines.append(f"{spec['name']}: on {', '.join(t['expect'])} matching {json.dumps(t.get('match', {}))}")
    return "\n".join(lines)
