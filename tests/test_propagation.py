"""A whole domain move on the dev server against real BIND with TTLs of a few seconds: the
verdict waits for the lagging secondary and for the old TTL, and the caching resolver is seen
serving the new set by the time the workflow says the change has propagated."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import dns.message
import dns.query
import dns.tsigkeyring
import dns.update
from temporalio.worker import Replayer

from mailmove.base.config import read_tsig_keyfile
from mailmove.base.inputs import DomainMoveRequest
from mailmove.base.model import ConfirmInput, MoveState, MxRecord, mx_key
from mailmove.service import control
from tests.support.dns import resolved_mx, serial_of, served_mx
from tests.support.domain_move import DOMAIN, FINAL, ORIGINAL, WITH_LEGACY
from tests.support.moves import status_of, until_stage
from tests.support.payloads import encrypting
from tests.support.polling import wait_for
from tests.support.settings import settings_for
from workflows.domain_move import DomainMoveWorkflow

TTL = 4


async def fresh_answer(port: int, expected) -> bool:
    """The resolver answers `expected` with (nearly) the full TTL: it has just fetched it."""
    reply = await asyncio.to_thread(
        dns.query.udp, dns.message.make_query(DOMAIN, "MX"), "127.0.0.1", port=port, timeout=2
    )
    records = [
        (rrset.ttl, MxRecord(r.preference, r.exchange.to_text(omit_final_dot=True)))
        for rrset in reply.answer
        for r in rrset
    ]
    return mx_key([r for _, r in records]) == expected and all(ttl >= TTL - 1 for ttl, _ in records)


async def test_move_waits_for_the_lagging_secondary_and_the_old_ttl(dev_env, worker_for, sandbox_factory):
    world = sandbox_factory(ttl=TTL, notify="off", confirm_after=10**9)  # the secondary lags until we NOTIFY
    settings = settings_for(world, dev_env, portal_mode="http", timing={"probe_interval": 1, "convergence_pause": 0.5})
    await worker_for(dev_env.client, settings)
    serial = serial_of(world.dns.primary.port, DOMAIN)

    samples: list[tuple[datetime, tuple]] = []  # what the caching resolver serves, over time

    async def watch_resolver():
        while True:
            mx = await asyncio.to_thread(resolved_mx, world.dns.resolver.port, DOMAIN)
            samples.append((datetime.now(UTC), mx))
            await asyncio.sleep(0.25)

    watcher = asyncio.create_task(watch_resolver())
    try:
        move = await control.prepare_domain_move(settings, DomainMoveRequest(DOMAIN, f"mail.{DOMAIN}", actor="ines"))
        handle = dev_env.client.get_workflow_handle_for(
            DomainMoveWorkflow.run, await control.start_domain_move(dev_env.client, settings, move)
        )

        status = await until_stage(handle, "add_gateway_mx", "waiting")
        lagging = [v for v in status.authoritative if not v.ok]
        assert [v.address for v in lagging] == [world.dns.secondary.address]
        assert served_mx(world.dns.secondary.port, DOMAIN) == ORIGINAL
        world.dns.send_notify(DOMAIN)

        await until_stage(handle, "await_registration", "waiting", timeout=60)
        # confirm just after the resolver fetched the set with the legacy MX: it must keep it ~TTL
        await wait_for(lambda: fresh_answer(world.dns.resolver.port, WITH_LEGACY), timeout=3 * TTL, interval=0.05)
        await handle.execute_update(
            DomainMoveWorkflow.confirm, ConfirmInput("await_registration", "ines", "mail from HRZ")
        )

        await until_stage(handle, "remove_legacy_mx", "waiting", timeout=60)
        assert served_mx(world.dns.primary.port, DOMAIN) == FINAL
        assert served_mx(world.dns.secondary.port, DOMAIN) == WITH_LEGACY
        await asyncio.sleep(1)  # the secondary lags a little longer
        notified = datetime.now(UTC)
        world.dns.send_notify(DOMAIN)

        result = await handle.result()
        verdict = datetime.now(UTC)
        assert result.state == MoveState.DONE
        assert await asyncio.to_thread(resolved_mx, world.dns.resolver.port, DOMAIN) == FINAL
    finally:
        watcher.cancel()

    status = await status_of(handle)
    stages = {s.name: s for s in status.stages}
    # rule 1: the removal is not done before the lagging secondary served the new set
    assert stages["remove_legacy_mx"].ended >= notified
    # rule 2: the verdict waits the old TTL from the moment every server agreed
    assert stages["await_propagation"].ended >= notified + timedelta(seconds=TTL)
    assert stages["await_propagation"].ended - stages["remove_legacy_mx"].ended >= timedelta(seconds=TTL)
    # the wait was real: the resolver kept the old set after the primary had changed
    removal_started = stages["remove_legacy_mx"].started
    assert any(mx == WITH_LEGACY for at, mx in samples if at > removal_started + timedelta(seconds=1))
    # and by the verdict it served the new set (rule 3's evidence)
    assert all(mx == FINAL for at, mx in samples if at >= stages["await_propagation"].ended + timedelta(seconds=0.5))
    assert all(v.serves_target for v in status.resolvers)
    assert verdict - stages["await_propagation"].ended < timedelta(seconds=5)
    assert serial_of(world.dns.primary.port, DOMAIN) == serial + 2  # exactly two changes

    # the recorded history replays deterministically with today's workflow code
    await Replayer(workflows=[DomainMoveWorkflow], data_converter=encrypting()).replay_workflow(
        await handle.fetch_history()
    )


async def test_centre_mode_shows_the_records_and_waits_for_them(dev_env, worker_for, sandbox_factory):
    """The centre applies the change by hand; mailmove shows the exact records and polls."""
    world = sandbox_factory(ttl=2, confirm_after=1)
    settings = settings_for(world, dev_env, portal_mode="http", timing={"centre_poll": 0.5, "probe_interval": 1})
    await worker_for(dev_env.client, settings)
    request = DomainMoveRequest(DOMAIN, f"mail.{DOMAIN}", dns_mode="centre", actor="jo")
    move = await control.prepare_domain_move(settings, request)
    handle = dev_env.client.get_workflow_handle_for(
        DomainMoveWorkflow.run, await control.start_domain_move(dev_env.client, settings, move)
    )
    key = next(iter(read_tsig_keyfile(world.dns.keyfile).values()))
    ring = dns.tsigkeyring.from_text({key.name: (key.algorithm, key.secret)})

    for stage, target in (("add_gateway_mx", WITH_LEGACY), ("remove_legacy_mx", FINAL)):
        status = await until_stage(handle, stage, "waiting", timeout=60)
        adds = sorted(line.split(" MX ")[1] for line in status.records_to_set if line.startswith("add:"))
        assert adds == sorted(str(r) for r in target if r not in served_mx(world.dns.primary.port, DOMAIN))
        assert served_mx(world.dns.primary.port, DOMAIN) != target  # mailmove changed nothing itself
        # the centre's person applies exactly the shown lines
        update = dns.update.UpdateMessage("chem.sandbox.test", keyring=ring, keyname=key.name)
        for line in status.records_to_set:
            verb, record = line.split(": ", 1)
            name, ttl, _, _, pref, host = record.split()
            (update.add if verb == "add" else update.delete)(
                name, *([int(ttl)] if verb == "add" else []), "MX", f"{pref} {host}"
            )
        dns.query.tcp(update, "127.0.0.1", port=world.dns.primary.port, timeout=3)

    assert (await handle.result()).state == MoveState.DONE
    assert served_mx(world.dns.secondary.port, DOMAIN) == FINAL
