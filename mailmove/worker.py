"""The worker process: hosts the workflows and the activities on the configured task queue.

`python worker.py [--config FILE]` (or `mailmove worker`); `mailmove up` runs it in-process.
With `--host FQDN` it is the host agent on that mail server instead: it polls that host's own
task queue and runs only what must happen on the machine itself (firewall, Postfix check,
relay test from the server's own address).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.audit import AuditActivities
from activities.check import CheckActivities
from activities.dns import DnsActivities
from activities.firewall import FirewallActivities, NftTarget
from activities.guard import GuardActivities
from activities.notify import NotifyActivities
from activities.portal import PortalActivities
from activities.postfix import PostfixActivities
from activities.relay_test import RelayTestActivities
from activities.smtp_probe import ProbeActivities
from activities.wave import WaveActivities
from mailmove.base.config import Settings, load_settings
from mailmove.base.fingerprint import check_task_queue, identity
from mailmove.base.names import to_alabel
from mailmove.base.processes import stop_on_signals
from mailmove.base.temporal import Role, admit_moves_in_clear, connect, host_queue
from mailmove.store.db import upgrade
from workflows.domain_move import DomainMoveWorkflow
from workflows.guard import GuardWorkflow
from workflows.server_move import ServerMoveWorkflow
from workflows.wave import WaveWorkflow

WORKFLOWS = [DomainMoveWorkflow, ServerMoveWorkflow, WaveWorkflow, GuardWorkflow]
# On SIGTERM the worker polls no more; an activity that waits on the network hands its attempt
# back at once (activities/heartbeat.py: failed as `WorkerShutdown`, retried on another worker
# within a second), and the database writes, done in milliseconds, finish and report. This is
# only the bound for those; every unit, pod and container of deploy/ allows more.
GRACEFUL_SHUTDOWN = timedelta(seconds=10)
# A workflow task waits this long on a worker's sticky queue before any worker takes it: a
# killed worker's moves go on after 3 s, not the SDK's 10 s (a live worker takes its sticky
# tasks in milliseconds, so it costs no needless replay of a whole history elsewhere).
STICKY_TIMEOUT = timedelta(seconds=3)


def activities(settings: Settings) -> list:
    dns = DnsActivities(settings)
    audit = AuditActivities(settings.database.url)
    portal = PortalActivities(settings.portal, settings.database.url)
    probe = ProbeActivities(settings.smtp, dns)
    check = CheckActivities(settings, dns)
    notify = NotifyActivities(settings, dns)
    wave = WaveActivities(settings.database.url)
    guard = GuardActivities(settings)
    return [
        dns.inspect_zone,
        dns.host_addresses,
        dns.apply_mx,
        dns.poll_authoritative,
        dns.observe_resolvers,
        dns.server_identity,
        audit.record_transition,
        portal.file_request,
        portal.file_whitelist,
        portal.request_status,
        probe.probe_rcpt,
        probe.probe_addresses,
        check.check_domain,
        check.check_server,
        check.store_report,
        notify.send_notice,
        wave.wave_rows,
        guard.ensure_schedule,
        guard.guard_input,
        guard.assess,
        guard.mailed,
    ]


def agent_activities(settings: Settings) -> list:
    """What runs on the mail server itself; no database, no workflow. Every argument is checked
    there (activities/agent_input.py); tcp/25 opens only to the allowed networks, by default the
    gateway's and the relays' of this configuration."""
    a = settings.agent
    g = settings.gateway
    allowed = a.allowed_networks or (*g.networks, *g.internal_relay_addresses)
    target = NftTarget(a.nft_table, a.nft_input_chain, a.nft_output_chain)
    firewall = FirewallActivities(a.nft, target, allowed=allowed)
    relays = tuple(g.relays().values())
    relay = RelayTestActivities(settings.smtp, DnsActivities(settings), relays)
    postfix = PostfixActivities(a, relays)
    return [
        firewall.open_firewall,
        firewall.close_firewall,
        postfix.check_postfix,
        postfix.configure_postfix,
        postfix.restore_postfix,
        postfix.probe_postfix,
        relay.relay_test,
    ]


def build_worker(
    client: Client, settings: Settings, task_queue: str | None = None, hosted: list | None = None
) -> Worker:
    """`hosted`: the activities, `activities(settings)` unless a test puts a fake in the place of one."""
    return Worker(
        client,
        task_queue=task_queue or settings.temporal.task_queue,
        workflows=WORKFLOWS,
        activities=hosted or activities(settings),
        identity=identity(settings),
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
        # heartbeats carry cancellation: a cancelled polling activity stops within ~2 s
        max_heartbeat_throttle_interval=timedelta(seconds=2),
    )


def build_agent(client: Client, settings: Settings, host: str) -> Worker:
    return Worker(
        client,
        task_queue=host_queue(settings.temporal.task_queue, host),
        activities=agent_activities(settings),
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        max_heartbeat_throttle_interval=timedelta(seconds=2),
    )


async def join(client: Client, settings: Settings) -> None:
    """Before the worker polls: the task queue is this deployment's (mailmove/base/fingerprint.py),
    and the moves begun in clear before encryption are admitted."""
    await check_task_queue(client, settings)
    await admit_moves_in_clear(client, settings)


async def run(settings: Settings, stop: asyncio.Event, host: str = "") -> None:
    client = await connect(settings, Role.AGENT if host else Role.WORKER)
    if host:
        worker, queue = build_agent(client, settings, host), host_queue(settings.temporal.task_queue, host)
    else:
        if client.data_converter.payload_codec is None:
            logging.warning("payloads in clear: set temporal.encryption_key_files (SECURITY.md)")
        await join(client, settings)
        await asyncio.to_thread(upgrade, settings.database.url)
        worker, queue = build_worker(client, settings), settings.temporal.task_queue
    async with worker:
        logging.info("worker polling %s on %s", queue, settings.temporal.address or "embedded")
        await stop.wait()


async def serve(settings: Settings, host: str = "") -> None:
    """Until SIGINT or SIGTERM."""
    await run(settings, stop_on_signals(), host)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="TOML configuration (default: $MAILMOVE_CONFIG)")
    parser.add_argument("--host", default="", help="run as the host agent of this mail server (its FQDN)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(load_settings(args.config), to_alabel(args.host) if args.host else ""))


if __name__ == "__main__":
    main()
