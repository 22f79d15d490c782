"""The audit's attack, for real: whoever can schedule on a host agent's task queue asks it to
open the firewall with nft syntax in the server name, then with the whole Internet as the
gateway. The real agent worker on a real Temporal server, applying nftables in a network
namespace of the test's own, refuses both before nft runs: the ruleset stays as it was."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    import pytest
    from temporalio.client import Client, WorkflowFailureError
    from temporalio.exceptions import ActivityError, ApplicationError
    from temporalio.worker import Worker

    from mailmove.base.config import parse_settings
    from mailmove.base.errors import ConfigError
    from mailmove.base.model import FirewallChange, FirewallPlan
    from mailmove.base.temporal import Role, connect, host_queue
    from mailmove.worker import build_agent
    from tests.support.firewall import DEBIAN_DEFAULT, GATEWAY, INTERNAL, nft, nft_in, ruleset
    from tests.support.payloads import PAYLOAD_KEY
    from tests.support.tls_proxy import mtls

HOST = "mx2.chem.example.org"
INJECTION = FirewallPlan('x.example"\ninsert rule inet filter input accept comment "pwned"\n#', GATEWAY, GATEWAY)
THE_WORLD = FirewallPlan(HOST, ["0.0.0.0/0", "::/0"], ["0.0.0.0/0", "::/0"])


@dataclass
class Attack:
    agent_queue: str
    plan: FirewallPlan


@workflow.defn
class Attacker:
    """Schedules the agent's activity by name, as any holder of the Temporal key could."""

    @workflow.run
    async def run(self, attack: Attack) -> FirewallChange:
        return await workflow.execute_activity(
            "open_firewall",
            attack.plan,
            task_queue=attack.agent_queue,
            result_type=FirewallChange,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


async def attack(
    dev_env, netns: str, plan: FirewallPlan, attacker: Client | None = None, tls: dict | None = None
) -> FirewallChange:
    """Run the real agent for HOST (nft in `netns`), connected as `mailmove worker --host` is
    (through `tls`'s proxy and client certificate when given), and the attacker (by default a
    holder of the payload key), each on a queue of its own."""
    tag = uuid.uuid4().hex[:8]
    address = dev_env.client.service_client.config.target_host
    temporal = {"address": address, "task_queue": f"tq-{tag}", "encryption_key_files": [str(PAYLOAD_KEY)]}
    settings = parse_settings({"temporal": {**temporal, **(tls or {})}, "agent": {"nft": nft_in(netns)}})
    attacker = attacker or dev_env.client
    attacker_queue = f"attacker-{tag}"
    async with (
        build_agent(await connect(settings, Role.AGENT), settings, HOST),
        Worker(attacker, task_queue=attacker_queue, workflows=[Attacker]),
    ):
        return await attacker.execute_workflow(
            Attacker.run,
            Attack(host_queue(settings.temporal.task_queue, HOST), plan),
            id=f"attack-{tag}",
            task_queue=attacker_queue,
            execution_timeout=timedelta(seconds=60),
        )


@pytest.mark.parametrize(
    "plan, field", [(INJECTION, "plan.server"), (THE_WORLD, "plan.inbound[0]")], ids=["injection", "the-world"]
)
async def test_the_agent_refuses_and_the_ruleset_stays(dev_env, netns, caplog, plan, field):
    nft(netns, "-f", "-", stdin=DEBIAN_DEFAULT)
    before = ruleset(netns)
    caplog.set_level(logging.WARNING, logger="mailmove.agent")

    with pytest.raises(WorkflowFailureError) as failed:
        await attack(dev_env, netns, plan)

    activity_error = failed.value.cause
    assert isinstance(activity_error, ActivityError)
    refusal = activity_error.cause
    assert isinstance(refusal, ApplicationError) and refusal.type == "AgentRefused" and refusal.non_retryable
    assert refusal.message.startswith(f"open_firewall refused {field}: ")
    assert ruleset(netns) == before
    assert "pwned" not in json.dumps(ruleset(netns)) and "pwned" not in nft(netns, "list", "ruleset")
    [line] = [r.getMessage() for r in caplog.records if r.name == "mailmove.agent"]
    assert line.startswith(f"open_firewall refused {field}: ") and "\n" not in line


async def test_an_honest_plan_still_opens(dev_env, netns):
    """The same path with the gateway's plan: the refusals above are the checks, not a broken setup."""
    nft(netns, "-f", "-", stdin=DEBIAN_DEFAULT)
    change = await attack(dev_env, netns, FirewallPlan(HOST, GATEWAY, GATEWAY + INTERNAL))
    assert change.changed and len(change.added) == 8
    listing = nft(netns, "list", "chain", "inet", "filter", "input")
    assert f'comment "mailmove: smtp in for {HOST}"' in listing and "policy drop;" in listing


async def test_without_the_key_even_an_honest_plan_is_refused(dev_env, netns, caplog):
    """Temporal let the caller in (no TLS here); the payload key did not: the agent cannot
    decrypt the plan, so it never runs the activity at all."""
    nft(netns, "-f", "-", stdin=DEBIAN_DEFAULT)
    before = ruleset(netns)
    keyless = Client(dev_env.client.service_client, namespace="default")
    with pytest.raises(WorkflowFailureError) as failed:
        await attack(dev_env, netns, FirewallPlan(HOST, GATEWAY, GATEWAY + INTERNAL), keyless)
    assert isinstance(failed.value.cause, ActivityError)
    refusal = failed.value.cause.cause
    assert isinstance(refusal, ApplicationError)
    assert str(refusal) == "Encoded failure"  # the agent's reason is encrypted too: the caller learns nothing
    assert ruleset(netns) == before
    [error] = [r.exc_info[1] for r in caplog.records if r.exc_info and "decoding arguments" in str(r.exc_info[1])]
    assert "not encrypted with a mailmove key" in str(error.__cause__)  # the agent's log says why


@pytest.mark.parametrize("plan, field", [(INJECTION, "plan.server"), (THE_WORLD, "plan.inbound[0]")])
async def test_over_mtls_the_same_attacks_fail(dev_env, netns, proxy, pki, plan, field):
    """A TLS setup: the agent reaches Temporal only through a proxy that requires a client
    certificate. Without one the attacker does not get in at all; with one of the cluster's
    certificates and the payload key, the agent's own checks still refuse."""
    nft(netns, "-f", "-", stdin=DEBIAN_DEFAULT)
    before = ruleset(netns)
    tls = {k: str(v) for k, v in mtls(pki, address=proxy.address).items()}
    keyed = {"encryption_key_files": [str(PAYLOAD_KEY)], "address": proxy.address}
    with pytest.raises(ConfigError) as caught:
        await connect(parse_settings({"temporal": {**keyed, "tls_ca_file": str(pki.server_ca)}}))
    assert caught.value.field == "temporal.tls_cert_file"  # no certificate: no connection

    insider = await connect(parse_settings({"temporal": {**keyed, **tls}}))
    with pytest.raises(WorkflowFailureError) as failed:
        await attack(dev_env, netns, plan, insider, tls)
    refusal = failed.value.cause.cause
    assert isinstance(refusal, ApplicationError) and refusal.type == "AgentRefused"
    assert refusal.message.startswith(f"open_firewall refused {field}: ")
    assert ruleset(netns) == before
