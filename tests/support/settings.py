"""A sandbox's configuration for one test."""

from __future__ import annotations

import uuid

from temporalio.testing import WorkflowEnvironment

from mailmove.base.config import Settings, load_settings
from mailmove.sandbox.world import Sandbox
from mailmove.store.db import upgrade
from tests.support.payloads import PAYLOAD_KEY


def settings_for(world: Sandbox, env: WorkflowEnvironment | None = None, **config) -> Settings:
    """The sandbox's config, pointed at `env`'s Temporal on a task queue of the test's own."""
    address = env.client.service_client.config.target_host if env else ""
    config.setdefault("task_queue", f"tq-{uuid.uuid4()}")
    if env:
        config.setdefault("payload_keys", [str(PAYLOAD_KEY)])
    settings = load_settings(world.write_config(temporal_address=address, **config))
    upgrade(settings.database.url)
    return settings
