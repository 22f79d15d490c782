"""`mailmove check` from the command line against the sandbox world: the exit status of the
contract (0, 1 on an error, 2 on bad input naming the field), JSON that the schema accepts,
and a terminal report without colour codes when the output is not a terminal."""

from __future__ import annotations

import json

import jsonschema
import pytest

from mailmove.sandbox.world import Sandbox, SandboxOptions
from tests.support.processes import mailmove
from tests.support.reports import SCHEMA

pytestmark = [pytest.mark.bind, pytest.mark.slow]  # the CLI checks a sandbox's BIND

DOMAIN = "chem.sandbox.test"


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """One world for the module: the checks only read it."""
    with Sandbox(SandboxOptions(root=tmp_path_factory.mktemp("world"))) as world:
        yield world.write_config()


async def test_a_domain_before_its_move(config):
    code, out, err = await mailmove(config, "check", DOMAIN, "--json")
    assert code == 0, err
    report = json.loads(out)
    jsonschema.validate(report, SCHEMA)
    assert (report["kind"], report["subject"], report["stage"], report["worst"]) == (
        "domain",
        DOMAIN,
        "before",
        "notice",
    )
    assert {c["id"] for c in report["checks"] if c["verdict"] == "notice"} == {"spf.record", "dmarc.record"}


async def test_an_error_exits_1_and_reads_as_a_report(config):
    code, out, err = await mailmove(config, "check", DOMAIN, "--stage", "after")
    assert code == 1, err
    assert "\x1b[" not in out  # colour only on a terminal
    plan = out[out.index("mx.plan") :]
    assert "does not match the plan for stage after" in plan and "fix: set exactly the gateway MX records" in plan
    assert out.rstrip().endswith("1 error, 2 notice")


async def test_a_server_with_starttls_and_one_whose_ptr_names_another_host(config):
    code, out, err = await mailmove(config, "check", "--server", f"mx2.{DOMAIN}", "--json")
    assert code == 0, err
    verdicts = {c["id"]: c["verdict"] for c in json.loads(out)["checks"]}
    assert verdicts["smtp.starttls[127.0.0.2]"] == "ok" and verdicts["dns.fcrdns[127.0.0.2]"] == "ok"
    code, out, err = await mailmove(config, "check", "--server", f"mx3.{DOMAIN}")
    assert code == 1 and f"set `3.0.0.127.in-addr.arpa. IN PTR mx3.{DOMAIN}.`" in out


async def test_a_domain_that_does_not_exist(config):
    code, out, err = await mailmove(config, "check", f"nowhere.{DOMAIN}", "--json")
    assert code == 1, err
    report = json.loads(out)
    jsonschema.validate(report, SCHEMA)
    [zone] = report["checks"]  # nothing else can be said of a name that does not exist
    assert (zone["id"], zone["verdict"], zone["summary"]) == ("dns.zone", "error", f"nowhere.{DOMAIN} does not resolve")


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((), "DOMAIN"),
        ((DOMAIN, "--server", f"mx2.{DOMAIN}"), "DOMAIN"),
        ((DOMAIN, "--stage", "sometime"), "--stage"),
        (("chem..sandbox.test",), "DOMAIN"),
        (("--server", f"mx2.{DOMAIN}", "--stage", "after"), "--stage"),
        (("--server", f"mx2.{DOMAIN}", "--address", "127.0.0.300"), "--address"),
        ((DOMAIN, "--address", "127.0.0.2"), "--address"),
    ],
)
async def test_bad_input_exits_2_naming_the_field(config, args, field):
    code, out, err = await mailmove(config, "check", *args)
    assert code == 2 and field in err and not out, (code, out, err)
