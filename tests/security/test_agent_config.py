"""`[agent]`: the networks the agent opens tcp/25 to at most, and nft names that are plain
identifiers; a bad value is a ConfigError naming its key before any agent starts."""

from __future__ import annotations

import ipaddress

import pytest

from mailmove.base.config import GatewayConfig, parse_settings
from mailmove.base.errors import ConfigError
from mailmove.worker import agent_activities


def allowed_of(settings) -> list:
    open_firewall = agent_activities(settings)[0]
    return open_firewall.__self__.allowed


def test_by_default_the_agent_allows_the_gateway_and_the_relays():
    settings = parse_settings({})
    assert settings.agent.allowed_networks == ()
    gateway = GatewayConfig()
    expected = [ipaddress.ip_network(n) for n in (*gateway.networks, *gateway.internal_relay_addresses)]
    assert allowed_of(settings) == expected


def test_allowed_networks_replace_the_default():
    settings = parse_settings({"agent": {"allowed_networks": ["10.0.0.0/8", "2001:db8::/32"]}})
    assert allowed_of(settings) == [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")]


@pytest.mark.parametrize(
    "value", [["10.0.0.1/8"], ["everywhere"], [" 10.0.0.0/8"], ["10.0.0.0/8", "fe80::/10\n"], "10.0.0.0/8", [8]]
)
def test_a_bad_allowed_network_is_a_config_error(value):
    with pytest.raises(ConfigError) as caught:
        parse_settings({"agent": {"allowed_networks": value}})
    assert caught.value.field == "agent.allowed_networks"


@pytest.mark.parametrize("key", ["networks", "internal_relay_addresses"])
def test_the_gateways_networks_are_checked_as_the_agent_checks_them(key):
    """A host bit set (130.83.156.230/27) would pass as text and stall every server move at
    its firewall plan, which the agent refuses: the configuration says so first."""
    with pytest.raises(ConfigError) as caught:
        parse_settings({"gateway": {key: ["130.83.156.230/27"]}})
    assert caught.value.field == f"gateway.{key}"


@pytest.mark.parametrize(
    "key, value",
    [
        ("nft_table", "inet filter; flush ruleset"),
        ("nft_table", "inet"),
        ("nft_table", "inet  filter"),
        ("nft_table", "arp filter"),
        ("nft_table", 'inet "filter"'),
        ("nft_input_chain", "input;"),
        ("nft_input_chain", "no such"),
        ("nft_output_chain", 'output" accept'),
        ("nft_output_chain", ""),
    ],
)
def test_nft_names_are_plain_identifiers(key, value):
    with pytest.raises(ConfigError) as caught:
        parse_settings({"agent": {key: value}})
    assert caught.value.field == f"agent.{key}"


def test_the_usual_nft_names_pass():
    agent = parse_settings({"agent": {"nft_table": "ip6 my_filter-1", "nft_input_chain": "INPUT"}}).agent
    assert (agent.nft_table, agent.nft_input_chain, agent.nft_output_chain) == ("ip6 my_filter-1", "INPUT", "output")


@pytest.mark.parametrize(
    "key, value",
    [
        ("postconf", ["postconf", "-c", "/tmp/elsewhere"]),
        ("postfix", ["sudo", "postfix", "-c/tmp/elsewhere"]),
        ("postqueue", ["postqueue", "-c", "/tmp/elsewhere"]),
        ("postfix_config_dir", ""),
        ("postfix_config_dir", "etc/postfix"),
        ("postfix_log", ""),
        ("postfix_ca_file", "/etc/ssl/a b.pem"),
    ],
)
def test_postfix_is_reached_only_in_its_configured_directory(key, value):
    """A `-c` in a command would win silently over `postfix_config_dir` (the last one counts),
    and an empty directory or log has no meaning: each is refused, naming its key."""
    with pytest.raises(ConfigError) as caught:
        parse_settings({"agent": {key: value}})
    assert caught.value.field == f"agent.{key}"


def test_the_usual_postfix_settings_pass():
    agent = parse_settings(
        {"agent": {"postconf": ["sudo", "postconf"], "postfix_config_dir": "/etc/postfix-out"}}
    ).agent
    assert agent.postconf == ("sudo", "postconf") and agent.postfix_config_dir == "/etc/postfix-out"
    assert parse_settings({"agent": {"postconf": []}}).agent.postconf == ("postconf",)  # empty: the default
