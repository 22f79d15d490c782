"""The gateway's firewall rules: rendered for three tools, applied with real nftables (its JSON
input) inside a network namespace of the test's own (never the machine's ruleset), compared by
the addresses they cover (nft merges the two gateway /64s into one /63)."""

from __future__ import annotations

import json

import pytest
from temporalio.exceptions import ApplicationError

from activities.firewall import (
    FirewallActivities,
    NftTarget,
    covered,
    covered_by,
    nft_commands,
    render,
    tagged_rules,
)
from mailmove.base.model import FirewallPlan
from tests.support.firewall import DEBIAN_DEFAULT, GATEWAY, INTERNAL, PLAN, nft, nft_in, ruleset


def agent(netns: str, target: NftTarget = NftTarget()) -> FirewallActivities:
    return FirewallActivities(tuple(nft_in(netns)), target, allowed=GATEWAY + INTERNAL)


def test_rendered_rules_cover_exactly_the_gateway():
    assert covered(PLAN) == {
        "in 130.83.156.224/27",
        "in 130.83.252.128/26",
        "in 2001:41b8:83f:1610::/63",  # the two /64s, merged
        "out 130.83.156.224/27",
        "out 130.83.252.128/26",
        "out 130.83.157.89/32",
        "out 2001:41b8:83f:1610::/63",
        "out 2001:41b8:83f:1608::25:3/128",
    }
    rules = render(PLAN)
    assert "ip saddr { 130.83.156.224/27, 130.83.252.128/26 } tcp dport 25 accept" in rules.nftables
    assert "ip6 daddr { 2001:41b8:83f:1608::25:3/128, 2001:41b8:83f:1610::/63 } tcp dport 25 accept" in rules.nftables
    assert "iptables -I INPUT -p tcp -s 130.83.252.128/26 --dport 25" in rules.iptables
    assert "ip6tables -I OUTPUT -p tcp -d 2001:41b8:83f:1608::25:3/128 --dport 25" in rules.iptables
    assert "ufw allow in proto tcp from 2001:41b8:83f:1610::/63 to any port 25" in rules.ufw
    assert "ufw allow out proto tcp to 130.83.157.89/32 port 25" in rules.ufw
    assert rules.iptables.count("-j ACCEPT") == rules.ufw.count("ufw allow") == len(covered(PLAN))


def test_the_rendered_script_and_the_json_pass_nft_check(netns):
    nft(netns, "-c", "-f", "-", stdin=render(PLAN).nftables)
    nft(netns, "-c", "-j", "-f", "-", stdin=json.dumps(nft_commands(PLAN, NftTarget())))
    assert ruleset(netns)["nftables"][1:] == []  # a check changes nothing


def test_the_json_carries_a_hostile_string_as_a_value_never_as_syntax(netns):
    """Below the agent's own checks: a server name with nft syntax in it stays one comment."""
    hostile = FirewallPlan('x.example"\ninsert rule inet filter input accept comment "pwned"\n#', ["10.0.0.0/8"], [])
    nft(netns, "-f", "-", stdin=DEBIAN_DEFAULT)
    nft(netns, "-j", "-f", "-", stdin=json.dumps(nft_commands(hostile, NftTarget())))
    [rule] = tagged_rules(ruleset(netns), NftTarget())
    assert rule.comment == f"mailmove: smtp in for {hostile.server}" and rule.direction == "in"
    input_rules = [item["rule"] for item in ruleset(netns)["nftables"] if item.get("rule", {}).get("chain") == "input"]
    assert len(input_rules) == 3  # ours, then the host's two: no accept-all inserted


async def test_open_on_a_host_without_rules_then_again(netns):
    first = await agent(netns).open_firewall(PLAN)
    assert first.changed and set(first.added) == covered(PLAN) and not first.removed
    assert covered_by(tagged_rules(ruleset(netns), NftTarget())) == covered(PLAN)
    second = await agent(netns).open_firewall(PLAN)
    assert not second.changed and "already open" in second.detail
    assert len(tagged_rules(ruleset(netns), NftTarget())) == 4  # in/out × IPv4/IPv6, not doubled


async def test_the_hosts_policy_stays_and_our_rules_come_first(netns):
    nft(netns, "-f", "-", stdin=DEBIAN_DEFAULT)
    await agent(netns).open_firewall(PLAN)
    listing = nft(netns, "list", "chain", "inet", "filter", "input")
    assert "policy drop;" in listing
    body = [line.strip() for line in listing.splitlines() if "accept" in line]
    assert body[0].endswith(f'comment "mailmove: smtp in for {PLAN.server}"')
    assert body[-2:] == ["ct state established accept", 'iif "lo" accept']


async def test_a_changed_plan_replaces_only_what_differs(netns):
    await agent(netns).open_firewall(PLAN)
    internal_only = FirewallPlan(PLAN.server, GATEWAY, INTERNAL)
    change = await agent(netns).open_firewall(internal_only)
    assert change.changed and not change.added
    assert set(change.removed) == {"out 130.83.156.224/27", "out 130.83.252.128/26", "out 2001:41b8:83f:1610::/63"}
    assert covered_by(tagged_rules(ruleset(netns), NftTarget())) == covered(internal_only)


async def test_close_removes_exactly_ours(netns):
    nft(netns, "-f", "-", stdin=DEBIAN_DEFAULT)
    nft(netns, "add", "rule", "inet", "filter", "input", "tcp", "dport", "22", "accept")
    await agent(netns).open_firewall(PLAN)
    closed = await agent(netns).close_firewall(PLAN)
    assert closed.changed and set(closed.removed) == covered(PLAN)
    listing = nft(netns, "list", "ruleset")
    assert "mailmove" not in listing and "tcp dport 22 accept" in listing
    assert not (await agent(netns).close_firewall(PLAN)).changed


async def test_commands_that_fail_the_check_change_nothing(netns):
    nft(netns, "-f", "-", stdin=DEBIAN_DEFAULT)
    before = ruleset(netns)
    swapped = NftTarget(input_chain="output", output_chain="input")  # a base chain cannot change its hook
    with pytest.raises(ApplicationError, match="-c"):
        await agent(netns, swapped).open_firewall(PLAN)
    assert ruleset(netns)["nftables"][1:] == before["nftables"][1:]
