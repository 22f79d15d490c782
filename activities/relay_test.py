"""The relay test as the host agent's activity: the dialogue itself is mailmove/checks/relay.py."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from temporalio import activity

from activities import agent_input
from activities.dns import DnsActivities
from activities.heartbeat import beating
from mailmove.base.config import SmtpConfig
from mailmove.base.model import Relay, RelayTestQuery, RelayTranscript
from mailmove.checks.relay import run_relay_test


class RelayTestActivities:
    """Runs on the host agent, so the test leaves from the new server's own address."""

    def __init__(self, smtp: SmtpConfig, dns: DnsActivities, relays: Sequence[Relay]):
        self.smtp = smtp
        self.dns = dns
        self.relays = tuple(relays)

    @activity.defn
    @beating
    async def relay_test(self, query: RelayTestQuery) -> RelayTranscript:
        """Beats also while a slow relay keeps a reply back (`beating`), so a lost agent is noticed
        within the heartbeat timeout and a slow relay is not taken for one. The query is checked
        before any connection: the agent runs as root on the mail server."""
        with agent_input.refusing("relay_test"):
            agent_input.relay_test_query(query, self.relays)
        query.probe_id = query.probe_id or uuid.uuid4().hex
        return await run_relay_test(query, self.smtp, self.dns.addresses)
