"""The host agent's checks of its arguments (activities/agent_input.py), one hostile value at a
time, and the activities refusing before they run anything: no nft, postconf or connection."""

from __future__ import annotations

import asyncio
import logging

import pytest
from temporalio.exceptions import ApplicationError

from activities import agent_input
from activities.agent_input import Refused
from activities.dns import DnsActivities
from activities.firewall import FirewallActivities
from activities.postfix import PostfixActivities
from activities.relay_test import RelayTestActivities
from mailmove.base.config import AgentConfig, GatewayConfig, Settings
from mailmove.base.model import FirewallPlan, MtaProbe, Relay, RelayTestQuery
from tests.support.firewall import GATEWAY, INTERNAL, PLAN

ALLOWED = [agent_input.network("allowed", n) for n in GATEWAY + INTERNAL]
MAILOUT = Relay("mailout.hrz.tu-darmstadt.de", 25, True)
RELAYS = tuple(GatewayConfig().relays().values())
QUERY = RelayTestQuery(
    MAILOUT, "mx2.chem.example.org", "postmaster@chem.example.org", "someone@example.org", "127.0.0.2"
)


def refused(check, *args) -> Refused:
    with pytest.raises(Refused) as caught:
        check(*args)
    return caught.value


@pytest.mark.parametrize(
    "value",
    [
        "MX2.chem.example.org",  # not the canonical lower case
        "mx2.chem.example.org.",  # trailing dot
        "bücher.example",  # a U-label: the A-label is xn--bcher-kva.example
        "localhost",  # not fully qualified
        "-mx.example.org",
        "mx..example.org",
        "mx_2.example.org",
        "130.83.156.230",  # an address, not a name
        'x.example"\ninsert rule inet filter input accept comment "pwned"\n#',
        "x.example\n",
        "x.example\r",
        "x.example\x00",
        "x\u202e.example",  # right-to-left override
        "x.example org",
        "x.example'",
        "x.example\\",
        "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + ".example",  # over 253
        "",
        5,
        None,
    ],
)
def test_a_server_name_must_be_an_a_label(value):
    error = refused(agent_input.firewall_plan, FirewallPlan(value, GATEWAY, []), ALLOWED)
    assert error.field == "plan.server" and str(error).startswith("plan.server: ")


def test_an_idn_in_a_label_form_and_an_address_literal_relay_pass():
    agent_input.host_name("plan.server", "xn--bcher-kva.example")
    agent_input.relay("relay", Relay("2001:db8::25", 587, False))
    agent_input.relay("relay", Relay("130.83.157.89", 25, True))


@pytest.mark.parametrize(
    "value",
    [
        "130.83.156.225/27",  # host bits set
        "130.83.156.224/33",
        "999.1.1.1",
        "130.083.156.224/27",  # a leading zero (octal to some parsers)
        " 130.83.156.224/27",
        "130.83.156.224/27\n",
        "2001:41b8:83f:1610::/129",
        "fe80::1%eth0",  # a zone index
        "mx.example.org",
        "",
        ["130.83.156.224/27"],
        3232235777,  # an address as an integer: ipaddress would take it
    ],
)
def test_a_network_must_parse_strictly(value):
    error = refused(agent_input.firewall_plan, FirewallPlan("mx.example.org", [GATEWAY[0], value], []), ALLOWED)
    assert error.field == "plan.inbound[1]"


@pytest.mark.parametrize(
    "inbound, field",
    [
        (["0.0.0.0/0"], "plan.inbound[0]"),
        ([*GATEWAY, "::/0"], "plan.inbound[4]"),
        (["130.83.156.0/24"], "plan.inbound[0]"),  # wider than the gateway's /27
        (["::ffff:130.83.156.224/123"], "plan.inbound[0]"),  # the IPv4 gateway, mapped into IPv6
        (["10.0.0.0/8"], "plan.inbound[0]"),
    ],
)
def test_a_plan_opens_only_to_the_allowed_networks(inbound, field):
    assert refused(agent_input.firewall_plan, FirewallPlan("mx.example.org", inbound, []), ALLOWED).field == field
    outbound = FirewallPlan("mx.example.org", [], inbound)
    assert refused(agent_input.firewall_plan, outbound, ALLOWED).field == field.replace("inbound", "outbound")


def test_the_gateways_own_plan_and_parts_of_it_pass():
    agent_input.firewall_plan(PLAN, ALLOWED)
    agent_input.firewall_plan(FirewallPlan(PLAN.server, ["130.83.156.240/28", "2001:41b8:83f:1611::1"], []), ALLOWED)
    agent_input.firewall_plan(FirewallPlan(PLAN.server, ["0.0.0.0/0"], []))  # closing: nothing is opened


@pytest.mark.parametrize("networks", [[GATEWAY[0]] * 65, "130.83.156.224/27", None, {"0.0.0.0/0": 1}])
def test_lists_are_lists_of_sane_size(networks):
    assert refused(agent_input.firewall_plan, FirewallPlan("mx.example.org", networks, []), ALLOWED).field == (
        "plan.inbound"
    )


@pytest.mark.parametrize(
    "field, value",
    [
        ("mail_from", "postmaster@chem.example.org\r\nRCPT TO:<victim@example.net>"),
        ("mail_from", "no-at-sign.example.org"),
        ("mail_from", '"a b"@example.org'),
        ("mail_from", "a b@example.org"),
        ("mail_from", "a@b@example.org"),
        ("rcpt", "o'brien@example.org"),  # a quote, though RFC 5322 allows it
        ("rcpt", "x@localhost"),
        ("rcpt", "ü@example.org"),  # SMTPUTF8: the relay test speaks plain SMTP
        ("rcpt", "someone@example.org>"),
        ("rcpt", "a" * 250 + "@example.org"),
        ("rcpt", "someone@example.org\x00"),
        ("rcpt", ""),
        ("helo", "mx2.chem.example.org\r\nMAIL FROM:<x@y.org>"),
        ("helo", "[127.0.0.2]"),
        ("source", "localhost"),
        ("source", "127.0.0.2 "),
        ("source", "fe80::2%lo"),
        ("send", "yes"),
        ("envelope", 1),
        ("probe_id", "p\nBcc: victim@example.net"),
        ("probe_id", "x" * 65),
    ],
)
def test_a_relay_test_query_is_checked_field_by_field(field, value):
    query = RelayTestQuery(**{**QUERY.__dict__, field: value})
    assert refused(agent_input.relay_test_query, query, RELAYS).field == f"query.{field}"


@pytest.mark.parametrize(
    "relay",
    [Relay("smtp.evil.example", 25, True), Relay("mailout.hrz.tu-darmstadt.de", 2525, True), Relay("127.0.0.1", 25, True),
     Relay("mailout.hrz.tu-darmstadt.de", 25, False)],
)  # fmt: skip
def test_the_relay_test_goes_to_a_configured_relay_only(relay):
    query = RelayTestQuery(**{**QUERY.__dict__, "relay": relay})
    assert refused(agent_input.relay_test_query, query, RELAYS).field == "query.relay"


@pytest.mark.parametrize(
    "relay, field",
    [
        (Relay("mailout.example.org", 0, True), "relay.port"),
        (Relay("mailout.example.org", 65536, True), "relay.port"),
        (Relay("mailout.example.org", True, True), "relay.port"),
        (Relay("mailout.example.org", "25", True), "relay.port"),
        (Relay("mailout.example.org", 25, "yes"), "relay.tls"),
        (Relay("mailout.example.org]:25\nrelayhost=evil", 25, True), "relay.host"),
        (Relay("2001:db8::25%eth0", 25, True), "relay.host"),
    ],
)
def test_a_relay_is_a_host_a_port_and_a_flag(relay, field):
    assert refused(agent_input.relay, "relay", relay).field == field


def test_a_passing_query_passes_with_and_without_its_optional_parts():
    agent_input.relay_test_query(QUERY, RELAYS)
    agent_input.relay_test_query(RelayTestQuery(MAILOUT, "mx2.chem.example.org", "a@b.example", "c@d.example"), RELAYS)
    agent_input.relay_test_query(
        RelayTestQuery(**{**QUERY.__dict__, "probe_id": "2b1e5a90-0d4c-4a57-9c55-5c1c1c1c1c1c"}), RELAYS
    )


def test_a_refusal_is_one_log_line_and_a_non_retryable_failure_naming_the_field(caplog):
    hostile = "x" * 200 + '"\ninsert rule inet filter input accept\n'
    caplog.set_level(logging.WARNING, logger="mailmove.agent")
    with pytest.raises(ApplicationError) as caught:
        with agent_input.refusing("open_firewall"):
            agent_input.firewall_plan(FirewallPlan(hostile, [], []), ALLOWED)
    error = caught.value
    assert (error.type, error.non_retryable, error.details) == ("AgentRefused", True, ("plan.server",))
    assert error.message.startswith("open_firewall refused plan.server: 'xxx")
    [record] = caplog.records
    assert record.name == "mailmove.agent" and record.levelno == logging.WARNING
    assert record.getMessage() == error.message
    assert "\n" not in record.getMessage() and "insert rule" not in record.getMessage()  # cut to 80 characters
    assert len(agent_input.shown(hostile)) == 80


async def test_the_activities_refuse_before_they_run_anything():
    """nft and Postfix's commands are commands that fail, the relay and the local Postfix a
    listener that counts: none is reached."""
    firewall = FirewallActivities(("false",), allowed=["10.0.0.0/8"])
    for act, plan in ((firewall.open_firewall, PLAN), (firewall.close_firewall, FirewallPlan("a b", [], []))):
        with pytest.raises(ApplicationError) as caught:
            await act(plan)
        assert caught.value.type == "AgentRefused"
    connections = []
    listener = await asyncio.start_server(lambda r, w: connections.append(w.close()), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    failing = AgentConfig(postconf=("false",), postfix=("false",), postqueue=("false",), postfix_smtp_port=port)
    postfix = PostfixActivities(failing, RELAYS)
    bad_name = Relay("mailout.example.org\n", 25, True)
    for act, relay, field in (
        (postfix.check_postfix, bad_name, "relay.host"),
        (postfix.configure_postfix, bad_name, "relay.host"),
        (postfix.configure_postfix, Relay("smtp.attacker.example", 25, False), "relay"),  # no gateway relay
        (postfix.restore_postfix, Relay("mailout.example.org", 0, True), "relay.port"),
    ):
        with pytest.raises(ApplicationError, match=f"{act.__name__} refused {field}: "):
            await act(relay)
    for probe, field in (
        (MtaProbe("a@b.example", "c@d.example\r\nRCPT TO:<e@f.example>", "p1"), "probe.rcpt"),
        (MtaProbe("a@b.example", "c@d.example", "p1\nBcc: e@f.example"), "probe.probe_id"),
    ):
        with pytest.raises(ApplicationError, match=f"probe_postfix refused {field}: "):
            await postfix.probe_postfix(probe)
    listening = Relay("127.0.0.1", port, False)
    hostile = RelayTestQuery(listening, "mx2.chem.example.org", "a@b.example", "c@d.example\r\n")
    elsewhere = RelayTestQuery(listening, "mx2.chem.example.org", "a@b.example", "c@d.example")
    async with listener:
        agent = RelayTestActivities(Settings().smtp, DnsActivities(Settings()), [listening])
        with pytest.raises(ApplicationError, match="relay_test refused query.rcpt"):
            await agent.relay_test(hostile)
        configured = RelayTestActivities(Settings().smtp, DnsActivities(Settings()), RELAYS)
        with pytest.raises(ApplicationError, match="relay_test refused query.relay"):
            await configured.relay_test(elsewhere)  # a listener that is no gateway relay
        await asyncio.sleep(0.1)
    assert connections == []
