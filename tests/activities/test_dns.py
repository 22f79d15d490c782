"""The DNS activities against a real BIND: the MX change is compare-and-swap and idempotent."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.dns import DnsActivities
from mailmove.base.model import ConvergenceQuery, MxChange, MxRecord, ServerQuery, ZoneQuery
from tests.support.dns import serial_of, served_mx
from tests.support.domain_move import DOMAIN, ORIGINAL, WITH_LEGACY
from tests.support.polling import wait_for
from tests.support.settings import settings_for


@pytest.fixture
def dns_setup(sandbox_factory):
    world = sandbox_factory()
    return world, DnsActivities(settings_for(world))


async def test_apply_mx_twice_changes_dns_once(dns_setup):
    world, dns = dns_setup
    env = ActivityEnvironment()
    change = MxChange(DOMAIN, DOMAIN, list(WITH_LEGACY), [list(ORIGINAL)], 300)
    serial = serial_of(world.dns.primary.port, DOMAIN)
    first = await env.run(dns.apply_mx, change)
    second = await env.run(dns.apply_mx, change)  # a retry or a replay
    assert first.changed and not second.changed
    assert served_mx(world.dns.primary.port, DOMAIN) == WITH_LEGACY
    assert serial_of(world.dns.primary.port, DOMAIN) == serial + 1 == second.serial


async def test_apply_mx_refuses_a_set_changed_outside(dns_setup):
    world, dns = dns_setup
    env = ActivityEnvironment()
    other = [MxRecord(20, "elsewhere.example.org")]
    await env.run(dns.apply_mx, MxChange(DOMAIN, DOMAIN, other, [list(ORIGINAL)], 300))  # someone else's change
    with pytest.raises(ApplicationError) as err:
        await env.run(dns.apply_mx, MxChange(DOMAIN, DOMAIN, list(WITH_LEGACY), [list(ORIGINAL)], 300))
    assert err.value.non_retryable and err.value.type == "MxChangedOutside"
    assert served_mx(world.dns.primary.port, DOMAIN) == tuple(other)


async def test_inspect_zone_reports_what_every_server_serves(dns_setup):
    world, dns = dns_setup
    snapshot = await ActivityEnvironment().run(dns.inspect_zone, ZoneQuery(DOMAIN))
    assert snapshot.zone == DOMAIN and tuple(snapshot.mx) == ORIGINAL
    assert snapshot.mx_ttl == 3 and snapshot.negative_ttl == 3
    assert snapshot.authoritative == [world.dns.primary.address, world.dns.secondary.address]


async def test_a_wrong_tsig_key_is_a_clear_non_retryable_error(dns_setup):
    world, dns = dns_setup
    world.dns.keyfile.write_text(world.dns.keyfile.read_text().replace('secret "', 'secret "AAAA'))
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(
            dns.apply_mx, MxChange(DOMAIN, DOMAIN, list(WITH_LEGACY), [list(ORIGINAL)], 300)
        )
    assert err.value.non_retryable and "TSIG" in str(err.value)
    assert served_mx(world.dns.primary.port, DOMAIN) == ORIGINAL


async def test_apply_mx_to_and_from_a_name_without_mx(dns_setup):
    """A domain that had no MX (mail by its A record): the prerequisite is "no MX RRset"."""
    world, dns = dns_setup
    env = ActivityEnvironment()
    await env.run(dns.apply_mx, MxChange(DOMAIN, DOMAIN, [], [list(ORIGINAL)], 300))
    assert served_mx(world.dns.primary.port, DOMAIN) == ()

    async def secondary_has_no_mx() -> bool:
        return await asyncio.to_thread(served_mx, world.dns.secondary.port, DOMAIN) == ()

    await wait_for(secondary_has_no_mx, what="the secondary's transfer")
    snapshot = await env.run(dns.inspect_zone, ZoneQuery(DOMAIN))
    assert snapshot.mx == [] and snapshot.mx_ttl == 0 and snapshot.negative_ttl == 3
    result = await env.run(dns.apply_mx, MxChange(DOMAIN, DOMAIN, list(WITH_LEGACY), [[]], 300))
    assert result.changed and result.before == []
    assert served_mx(world.dns.primary.port, DOMAIN) == WITH_LEGACY


async def test_server_identity_is_forward_confirmed(dns_setup):
    world, dns = dns_setup
    env = ActivityEnvironment()
    good = await env.run(
        dns.server_identity,
        ServerQuery("mx2.chem.sandbox.test", "127.0.0.2", "", ["chem.sandbox.test"], "mail.chem.sandbox.test"),
    )
    assert good.problems == [] and good.forward == ["127.0.0.2"] and good.old_addresses == ["127.0.0.1"]
    assert [(c.address, c.ptr, c.ok) for c in good.reverse] == [("127.0.0.2", ["mx2.chem.sandbox.test"], True)]

    bad = await env.run(
        dns.server_identity,
        ServerQuery("mx2.chem.sandbox.test", "127.0.0.9", "2001:db8::25", ["nowhere.sandbox.test"], ""),
    )
    assert bad.problems == [
        "mx2.chem.sandbox.test has no A record 127.0.0.9 (it resolves to 127.0.0.2): "
        "set `mx2.chem.sandbox.test. IN A 127.0.0.9` in the central DNS",
        "mx2.chem.sandbox.test has no AAAA record 2001:db8::25 (it resolves to 127.0.0.2): "
        "set `mx2.chem.sandbox.test. IN AAAA 2001:db8::25` in the central DNS",
        "the PTR of 127.0.0.9 names nothing, not mx2.chem.sandbox.test: "
        "set `9.0.0.127.in-addr.arpa. IN PTR mx2.chem.sandbox.test.` (forward and reverse must match)",
        "the PTR of 2001:db8::25 names nothing, not mx2.chem.sandbox.test: set "
        "`5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. IN PTR mx2.chem.sandbox.test.` "
        "(forward and reverse must match)",
        "the sender domain nowhere.sandbox.test has no MX or address record: mail from it cannot be answered; "
        "register it in the central DNS",
    ]


async def test_poll_asks_an_address_that_serves_the_target_once(dns_setup):
    """The later rounds ask only the address that lags (here a resolver: never authoritative)."""
    world, dns = dns_setup
    asked: Counter[str] = Counter()
    view = dns._server_view

    async def counted(server, query):
        asked[str(server)] += 1
        return await view(server, query)

    dns._server_view = counted
    lagging_address = world.dns.resolver.address
    query = ConvergenceQuery(
        DOMAIN, DOMAIN, [world.dns.primary.address, lagging_address], list(ORIGINAL), window=1.5, poll=0.2
    )
    report = await ActivityEnvironment().run(dns.poll_authoritative, query)
    assert not report.converged
    primary, lagging = report.servers
    assert primary.ok and tuple(primary.mx) == ORIGINAL and primary.serial == serial_of(world.dns.primary.port, DOMAIN)
    assert not lagging.ok and "not authoritative" in lagging.error
    assert asked[world.dns.primary.address] == 1 and asked[lagging_address] >= 3
