"""The worker process: hosts the workflows and the activities on the configured task queue.

`python worker.py [--config FILE]` (or `mailmove worker`); `mailmove up` runs it in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.audit import AuditActivities
from activities.dns import DnsActivities
from activities.portal import PortalActivities
from activities.smtp_probe import ProbeActivities
from mailmove.config import Settings, load_settings
from mailmove.processes import stop_on_signals
from mailmove.temporal import connect
from store.db import upgrade
from workflows.domain_move import DomainMoveWorkflow

WORKFLOWS = [DomainMoveWorkflow]


def activities(settings: Settings) -> list:
    dns = DnsActivities(settings)
    audit = AuditActivities(settings.database.url)
    portal = PortalActivities(settings.portal, settings.database.url)
    probe = ProbeActivities(settings.smtp, dns)
    return [
        dns.inspect_zone,
        dns.host_addresses,
        dns.apply_mx,
        dns.poll_authoritative,
        dns.observe_resolvers,
        audit.record_transition,
        portal.file_request,
        portal.request_status,
        probe.probe_rcpt,
    ]


def build_worker(client: Client, settings: Settings, task_queue: str | None = None) -> Worker:
    return Worker(
        client,
        task_queue=task_queue or settings.temporal.task_queue,
        workflows=WORKFLOWS,
        activities=activities(settings),
        graceful_shutdown_timeout=timedelta(seconds=10),
        # heartbeats carry cancellation: a cancelled polling activity stops within ~2 s
        max_heartbeat_throttle_interval=timedelta(seconds=2),
    )


async def run(settings: Settings, stop: asyncio.Event) -> None:
    await asyncio.to_thread(upgrade, settings.database.url)
    client = await connect(settings)
    async with build_worker(client, settings):
        logging.info("worker polling %s on %s", settings.temporal.task_queue, settings.temporal.address or "embedded")
        await stop.wait()


async def serve(settings: Settings) -> None:
    """Until SIGINT or SIGTERM."""
    await run(settings, stop_on_signals())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="TOML configuration (default: $MAILMOVE_CONFIG)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(load_settings(args.config)))


if __name__ == "__main__":
    main()
