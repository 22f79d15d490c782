"""The gateway's firewall rules for one mail server: rendered for nftables, iptables and ufw,
and applied with nftables by the host agent on that server.

The rules accept tcp/25 in from the gateway networks and out to the relays. They go into the
host's own filter chains (an accept in a table of our own would not override a drop in the
host's), inserted first and tagged with a comment, so the agent finds them again: a second
run changes nothing, a cancel removes exactly them. nft merges adjacent prefixes (the two
gateway /64s list back as one /63), so rules are compared by the addresses they cover.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass

from temporalio import activity
from temporalio.exceptions import ApplicationError

from workflows.model import FirewallChange, FirewallPlan, FirewallRules

TAG = "mailmove"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class NftTarget:
    """Where the rules go: the host's filter table and its input and output base chains."""

    table: str = "inet filter"
    input_chain: str = "input"
    output_chain: str = "output"


def _by_family(networks: Iterable[str]) -> dict[int, list[Network]]:
    found: dict[int, list[Network]] = {4: [], 6: []}
    for text in networks:
        net = ipaddress.ip_network(text, strict=False)
        found[net.version].append(net)
    return {v: list(ipaddress.collapse_addresses(nets)) for v, nets in found.items() if nets}


def covered(plan: FirewallPlan) -> set[str]:
    """What the plan opens, as "in NET" / "out NET" with adjacent networks merged."""
    return {
        f"{direction} {net}"
        for direction, nets in (("in", plan.inbound), ("out", plan.outbound))
        for group in _by_family(nets).values()
        for net in group
    }


def _head(plan: FirewallPlan) -> str:
    return f"# tcp/25 for {plan.server} behind the central mail gateway (mailmove)"


def _comment(plan: FirewallPlan, direction: str) -> str:
    return f"{TAG}: smtp {direction} for {plan.server}"


def nft_rules(plan: FirewallPlan, target: NftTarget = NftTarget()) -> list[str]:
    """`insert rule` lines for the plan (without the table and chain declarations)."""
    lines = []
    for direction, nets, chain, side in (
        ("in", plan.inbound, target.input_chain, "saddr"),
        ("out", plan.outbound, target.output_chain, "daddr"),
    ):
        for version, group in sorted(_by_family(nets).items()):
            family = "ip" if version == 4 else "ip6"
            elements = ", ".join(str(n) for n in group)
            lines.append(
                f"insert rule {target.table} {chain} {family} {side} {{ {elements} }} tcp dport 25 accept "
                f'comment "{_comment(plan, direction)}"'
            )
    return lines


def nft_script(plan: FirewallPlan, target: NftTarget = NftTarget(), deletes: str = "") -> str:
    """A script for `nft -f`: the table and base chains if missing (an existing chain keeps its
    policy), `deletes` (our previous rules), then the plan's rules, first in their chains."""
    return (
        f"{_head(plan)}\n"
        f"add table {target.table}\n"
        f"add chain {target.table} {target.input_chain} {{ type filter hook input priority filter; }}\n"
        f"add chain {target.table} {target.output_chain} {{ type filter hook output priority filter; }}\n"
        + deletes
        + "\n".join(nft_rules(plan, target))
        + "\n"
    )


def render(plan: FirewallPlan, target: NftTarget = NftTarget()) -> FirewallRules:
    iptables, ufw = [_head(plan)], [_head(plan)]
    for direction, nets in (("in", plan.inbound), ("out", plan.outbound)):
        for version, group in sorted(_by_family(nets).items()):
            tool = "iptables" if version == 4 else "ip6tables"
            for net in group:
                if direction == "in":
                    iptables.append(
                        f"{tool} -I INPUT -p tcp -s {net} --dport 25 -m comment "
                        f'--comment "{_comment(plan, direction)}" -j ACCEPT'
                    )
                    ufw.append(
                        f"ufw allow in proto tcp from {net} to any port 25 comment '{_comment(plan, direction)}'"
                    )
                else:
                    iptables.append(
                        f"{tool} -I OUTPUT -p tcp -d {net} --dport 25 -m comment "
                        f'--comment "{_comment(plan, direction)}" -j ACCEPT'
                    )
                    ufw.append(f"ufw allow out proto tcp to {net} port 25 comment '{_comment(plan, direction)}'")
    return FirewallRules(
        nftables=nft_script(plan, target), iptables="\n".join(iptables) + "\n", ufw="\n".join(ufw) + "\n"
    )


def _networks(right) -> list[Network]:
    """The addresses an nft JSON match covers: an address, a prefix, a range, or a set of them."""
    if isinstance(right, dict) and "set" in right:
        return [n for element in right["set"] for n in _networks(element)]
    if isinstance(right, str):
        return [ipaddress.ip_network(right)]
    if isinstance(right, dict) and "prefix" in right:
        return [ipaddress.ip_network(f"{right['prefix']['addr']}/{right['prefix']['len']}")]
    if isinstance(right, dict) and "range" in right:
        low, high = (ipaddress.ip_address(a) for a in right["range"])
        return list(ipaddress.summarize_address_range(low, high))
    return []


@dataclass
class TaggedRule:
    chain: str
    handle: int
    comment: str
    direction: str
    networks: list[Network]


def tagged_rules(ruleset: dict, target: NftTarget) -> list[TaggedRule]:
    """Our rules (by their comment) in the target table, from `nft -j list ruleset`."""
    family, table = target.table.split()
    found = []
    for item in ruleset.get("nftables", []):
        rule = item.get("rule")
        if not rule or rule.get("family") != family or rule.get("table") != table:
            continue
        if not str(rule.get("comment", "")).startswith(f"{TAG}:"):
            continue
        nets: list[Network] = []
        direction = ""
        for expr in rule.get("expr", []):
            payload = expr.get("match", {}).get("left", {}).get("payload", {})
            if payload.get("field") in ("saddr", "daddr"):
                direction = "in" if payload["field"] == "saddr" else "out"
                nets += _networks(expr["match"]["right"])
        found.append(TaggedRule(rule["chain"], rule["handle"], rule["comment"], direction, nets))
    return found


def covered_by(rules: list[TaggedRule]) -> set[str]:
    result = set()
    for direction in ("in", "out"):
        nets = [n for r in rules if r.direction == direction for n in r.networks]
        for version in (4, 6):
            group = [n for n in nets if n.version == version]
            result |= {f"{direction} {n}" for n in ipaddress.collapse_addresses(group)}
    return result


class FirewallActivities:
    """nftables on the host agent's machine; `nft` may be a command prefix (sudo, a namespace)."""

    def __init__(self, nft: tuple[str, ...] = ("nft",), target: NftTarget = NftTarget()):
        self.nft = nft
        self.target = target

    async def _run(self, *args: str, stdin_file: str = "") -> str:
        command = [*self.nft, *args] + (["-f", stdin_file] if stdin_file else [])
        try:
            process = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except FileNotFoundError as exc:
            raise ApplicationError(f"{command[0]} is not installed: {exc}", non_retryable=True, type="NoNft") from exc
        out, err = await process.communicate()
        if process.returncode != 0:
            raise ApplicationError(
                f"`{' '.join(command)}` failed: {err.decode().strip() or out.decode().strip()}",
                non_retryable=True,
                type="NftFailed",
            )
        return out.decode()

    async def _rules(self, plan: FirewallPlan) -> list[TaggedRule]:
        """The rules mailmove added for this plan's server."""
        rules = tagged_rules(json.loads(await self._run("-j", "list", "ruleset")), self.target)
        return [r for r in rules if r.comment.endswith(f" for {plan.server}")]

    async def _apply(self, script: str) -> None:
        """Checked with `nft -c` first: a script that would not load changes nothing."""
        fd, path = tempfile.mkstemp(prefix="mailmove-", suffix=".nft")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(script)
            await self._run("-c", stdin_file=path)
            await self._run(stdin_file=path)
        finally:
            os.unlink(path)

    def _delete(self, rules: list[TaggedRule]) -> str:
        return "".join(f"delete rule {self.target.table} {r.chain} handle {r.handle}\n" for r in rules)

    @activity.defn
    async def open_firewall(self, plan: FirewallPlan) -> FirewallChange:
        """Make our rules exactly the plan's; nothing is touched when they already are."""
        existing = await self._rules(plan)
        before, wanted = covered_by(existing), covered(plan)
        if before == wanted:
            return FirewallChange(False, [], [], f"tcp/25 was already open as planned ({len(wanted)} networks)")
        await self._apply(nft_script(plan, self.target, deletes=self._delete(existing)))
        after = covered_by(await self._rules(plan))
        if after != wanted:
            raise ApplicationError(f"after the change nft lists {sorted(after)}, not {sorted(wanted)}")
        added, removed = sorted(after - before), sorted(before - after)
        return FirewallChange(True, added, removed, f"opened tcp/25: {len(added)} added, {len(removed)} removed")

    @activity.defn
    async def close_firewall(self, plan: FirewallPlan) -> FirewallChange:
        """Remove exactly the rules mailmove added for this server (a cancelled move)."""
        mine = await self._rules(plan)
        if not mine:
            return FirewallChange(False, [], [], "no mailmove rule to remove")
        removed = sorted(covered_by(mine))
        await self._apply(self._delete(mine))
        return FirewallChange(True, [], removed, f"removed {len(mine)} mailmove rules")
