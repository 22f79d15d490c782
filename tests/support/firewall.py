"""The gateway's firewall plan and nftables inside a network namespace of the test's own (the
`netns` fixture), never the machine's ruleset."""

from __future__ import annotations

import json
import subprocess

from activities.firewall import NftTarget, covered_by, tagged_rules
from mailmove.base.config import GatewayConfig
from mailmove.base.model import FirewallPlan

GATEWAY = list(GatewayConfig().networks)
INTERNAL = list(GatewayConfig().internal_relay_addresses)
PLAN = FirewallPlan("mx2.chem.example.org", GATEWAY, GATEWAY + INTERNAL)

DEBIAN_DEFAULT = """table inet filter {
  chain input { type filter hook input priority filter; policy drop; ct state established accept; iif lo accept; }
  chain forward { type filter hook forward priority filter; policy drop; }
  chain output { type filter hook output priority filter; policy accept; }
}
"""


def nft_in(netns: str) -> list[str]:
    return ["ip", "netns", "exec", netns, "nft"]


def nft(netns: str, *args: str, stdin: str | None = None) -> str:
    return subprocess.run([*nft_in(netns), *args], input=stdin, capture_output=True, text=True, check=True).stdout


def ruleset(netns: str) -> dict:
    return json.loads(nft(netns, "-j", "list", "ruleset"))


def firewall_of(netns: str) -> set[str]:
    """What mailmove's rules in the namespace let through ("in 130.83.156.224/27", ...)."""
    return covered_by(tagged_rules(ruleset(netns), NftTarget()))
