"""The gateway's firewall rules for one mail server: rendered for nftables, iptables and ufw,
and applied with nftables by the host agent on that server.

The agent applies them through libnftables' JSON, built as data, never as nft text with values
spliced in; its arguments are checked first (activities/agent_input.py), and it opens tcp/25
only to its own allowed networks, whoever asks.

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.agent_input import Network, firewall_plan, refusing
from activities.heartbeat import beating
from mailmove.base.model import FirewallChange, FirewallPlan, FirewallRules

TAG = "mailmove"


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


def _groups(plan: FirewallPlan, target: NftTarget) -> Iterator[tuple[str, str, str, str, list[Network]]]:
    """(direction, chain, protocol, field, networks): one rule per direction and IP version."""
    for direction, nets, chain, field in (
        ("in", plan.inbound, target.input_chain, "saddr"),
        ("out", plan.outbound, target.output_chain, "daddr"),
    ):
        for version, group in sorted(_by_family(nets).items()):
            yield direction, chain, "ip" if version == 4 else "ip6", field, group


def nft_rules(plan: FirewallPlan, target: NftTarget = NftTarget()) -> list[str]:
    """`insert rule` lines for the plan (without the table and chain declarations)."""
    return [
        f"insert rule {target.table} {chain} {protocol} {field} {{ {', '.join(str(n) for n in group)} }} "
        f'tcp dport 25 accept comment "{_comment(plan, direction)}"'
        for direction, chain, protocol, field, group in _groups(plan, target)
    ]


def nft_script(plan: FirewallPlan, target: NftTarget = NftTarget()) -> str:
    """A script for `nft -f`, for people: what `nft_commands` does on the agent."""
    return (
        f"{_head(plan)}\n"
        f"add table {target.table}\n"
        f"add chain {target.table} {target.input_chain} {{ type filter hook input priority filter; }}\n"
        f"add chain {target.table} {target.output_chain} {{ type filter hook output priority filter; }}\n"
        + "\n".join(nft_rules(plan, target))
        + "\n"
    )


def _match(protocol: str, field: str, right: object) -> dict:
    return {"match": {"op": "==", "left": {"payload": {"protocol": protocol, "field": field}}, "right": right}}


def nft_commands(plan: FirewallPlan, target: NftTarget, previous: Iterable[TaggedRule] = ()) -> dict:
    """libnftables JSON: the table and base chains if missing (an existing chain keeps its
    policy), the deletion of `previous` (our earlier rules), then the plan's rules, first in
    their chains."""
    family, table = target.table.split()
    commands: list[dict] = [{"add": {"table": {"family": family, "name": table}}}]
    for chain, hook in ((target.input_chain, "input"), (target.output_chain, "output")):
        chain_spec = {"family": family, "table": table, "name": chain, "type": "filter", "hook": hook, "prio": 0}
        commands.append({"add": {"chain": chain_spec}})
    commands += _deletes(previous, target)
    for direction, chain, protocol, field, group in _groups(plan, target):
        prefixes = [{"prefix": {"addr": str(n.network_address), "len": n.prefixlen}} for n in group]
        expr = [_match(protocol, field, {"set": prefixes}), _match("tcp", "dport", 25), {"accept": None}]
        rule = {"family": family, "table": table, "chain": chain, "expr": expr, "comment": _comment(plan, direction)}
        commands.append({"insert": {"rule": rule}})
    return {"nftables": commands}


def _deletes(rules: Iterable[TaggedRule], target: NftTarget) -> list[dict]:
    family, table = target.table.split()
    return [
        {"delete": {"rule": {"family": family, "table": table, "chain": r.chain, "handle": r.handle}}} for r in rules
    ]


def render(plan: FirewallPlan, target: NftTarget = NftTarget()) -> FirewallRules:
    """The rules as text for people (in workflow code, so it raises nothing: its values are the
    configuration's networks, checked when it is read, and the new server's checked name)."""
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
    """nftables on the host agent's machine; `nft` may be a command prefix (sudo, a namespace).
    `allowed`: the networks tcp/25 may be opened to, in or out, whatever a plan asks."""

    def __init__(self, nft: tuple[str, ...] = ("nft",), target: NftTarget = NftTarget(), *, allowed: Iterable[str]):
        self.nft = nft
        self.target = target
        self.allowed = [ipaddress.ip_network(n) for n in allowed]

    async def _run(self, *args: str, stdin: str | None = None) -> str:
        command = [*self.nft, *args]
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError as exc:
            raise ApplicationError(f"{command[0]} is not installed: {exc}", non_retryable=True, type="NoNft") from exc
        out, err = await process.communicate(None if stdin is None else stdin.encode())
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

    async def _apply(self, commands: dict) -> None:
        """Checked with `nft -c` first: commands that would not load change nothing."""
        document = json.dumps(commands)
        await self._run("-c", "-j", "-f", "-", stdin=document)
        await self._run("-j", "-f", "-", stdin=document)

    @activity.defn
    @beating
    async def open_firewall(self, plan: FirewallPlan) -> FirewallChange:
        """Make our rules exactly the plan's; nothing is touched when they already are."""
        with refusing("open_firewall"):
            firewall_plan(plan, self.allowed)
        existing = await self._rules(plan)
        before, wanted = covered_by(existing), covered(plan)
        if before == wanted:
            return FirewallChange(False, [], [], f"tcp/25 was already open as planned ({len(wanted)} networks)")
        await self._apply(nft_commands(plan, self.target, existing))
        after = covered_by(await self._rules(plan))
        if after != wanted:
            raise ApplicationError(f"after the change nft lists {sorted(after)}, not {sorted(wanted)}")
        added, removed = sorted(after - before), sorted(before - after)
        return FirewallChange(True, added, removed, f"opened tcp/25: {len(added)} added, {len(removed)} removed")

    @activity.defn
    @beating
    async def close_firewall(self, plan: FirewallPlan) -> FirewallChange:
        """Remove exactly the rules mailmove added for this server (a cancelled move); its
        networks need not be allowed ones, as nothing is opened."""
        with refusing("close_firewall"):
            firewall_plan(plan)
        mine = await self._rules(plan)
        if not mine:
            return FirewallChange(False, [], [], "no mailmove rule to remove")
        removed = sorted(covered_by(mine))
        await self._apply({"nftables": _deletes(mine, self.target)})
        return FirewallChange(True, [], removed, f"removed {len(mine)} mailmove rules")
