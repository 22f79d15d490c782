"""Whitelist verification at the gateway stand-in, which accepts exactly the addresses the
portal stand-in has on the Whitelist: 2,000 addresses over one connection, paced."""

from __future__ import annotations

import time

from temporalio.testing import ActivityEnvironment

from activities.dns import DnsActivities
from activities.smtp_probe import ProbeActivities
from mailmove.base.model import AddressProbe
from mailmove.sandbox.portal import Filing
from mailmove.sandbox.world import GATEWAY_MX
from tests.support.settings import settings_for

DOMAIN = "chem.sandbox.test"


async def test_2000_addresses_one_connection_paced(sandbox_factory):
    world = sandbox_factory(confirm_after=0)
    settings = settings_for(world)
    addresses = [f"user{i:04d}@{DOMAIN}" for i in range(2000)]
    world.registry.file("domain", Filing(kind="domain", subject=DOMAIN))
    for address in addresses[:-1]:  # the last one was never filed
        world.registry.file(f"wl-{address}", Filing(kind="wl", subject=address))
    probe = ProbeActivities(settings.smtp, DnsActivities(settings))
    rate = 400.0
    began = time.monotonic()
    report = await ActivityEnvironment().run(
        probe.probe_addresses, AddressProbe(GATEWAY_MX, world.smtp.port, addresses, rate=rate, batch=100)
    )
    took = time.monotonic() - began
    assert report.host == GATEWAY_MX[0]
    assert [v.address for v in report.verdicts] == addresses
    refused = [v for v in report.verdicts if v.state != "accepted"]
    assert [(v.address, v.state, v.code) for v in refused] == [(addresses[-1], "refused", 550)]
    seen = world.smtp.handler.rcpts
    assert len({session for _, session, _ in seen}) == 1  # one connection for all of them
    gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:], strict=False)]
    # paced: never faster than the rate on average over any 100 RCPTs, and the whole run no faster
    assert min(seen[i + 100][0] - seen[i][0] for i in range(0, len(seen) - 100, 50)) >= 100 / rate * 0.95
    assert took >= (len(addresses) - 1) / rate and len(gaps) == 1999
