"""The command line of the Whitelist: `--addresses` and `--no-external` on `domain start` (bad
lines named with their numbers, nothing started), `whitelist diff`, `confirm --lost`."""

from __future__ import annotations

import json

import pytest

from tests.support.moves import started_since, terminate_running, until_stage
from tests.support.processes import mailmove
from workflows.domain_move import DomainMoveWorkflow

DOMAIN, LEGACY = "chem.sandbox.test", "mail.chem.sandbox.test"


@pytest.fixture(autouse=True)
async def clean(dev_env):
    yield
    await terminate_running(dev_env.client, f"domain-move:{DOMAIN}")


async def test_bad_address_files_exit_2_with_line_numbers(cli_world, dev_env, tmp_path):
    world, settings, config = cli_world
    bad = tmp_path / "addresses"
    bad.write_text(f"alice@{DOMAIN}\nbob at {DOMAIN}\ncarol@elsewhere.example\n")
    code, out, err = await mailmove(config, "domain", "start", DOMAIN, "--legacy-mx", LEGACY, "--addresses", str(bad))
    assert code == 2 and "addresses:" in err and "addresses:2:" in err and "addresses:3:" in err, err
    both = ["--addresses", str(bad), "--no-external"]
    code, out, err = await mailmove(config, "domain", "start", DOMAIN, "--legacy-mx", LEGACY, *both)
    assert code == 2 and "either --addresses FILE or --no-external" in err
    assert not await started_since(dev_env.client, f"domain-move:{DOMAIN}", world.started_at)


async def test_whitelist_diff_against_what_was_filed(cli_world, dev_env, tmp_path):
    world, settings, config = cli_world
    listing = tmp_path / "aliases"
    listing.write_text("alice: alice.smith\ninfo: alice, bob\nroot: admin\n")
    code, out, err = await mailmove(
        config, "domain", "start", DOMAIN, "--legacy-mx", LEGACY, "--addresses", str(listing)
    )
    assert code == 0, err
    handle = dev_env.client.get_workflow_handle_for(DomainMoveWorkflow.run, f"domain-move:{DOMAIN}")
    status = await until_stage(handle, "request_domain", "waiting")
    assert status.form["whitelist"] == f"alice@{DOMAIN}\ninfo@{DOMAIN}" and status.form["whitelist_form"].endswith(
        "antrag-wl.php"
    )
    code, out, err = await mailmove(config, "whitelist", "diff", DOMAIN, "--addresses", str(listing), "--json")
    assert code == 1 and json.loads(out) == {"missing": [f"alice@{DOMAIN}", f"info@{DOMAIN}"], "extra": [], "filed": 0}

    code, out, err = await mailmove(config, "confirm", DOMAIN, "request_domain", "--note", "both forms filed")
    assert code == 0, err
    await until_stage(handle, "await_registration", "waiting")
    code, out, err = await mailmove(config, "whitelist", "diff", DOMAIN, "--addresses", str(listing))
    assert code == 0 and "2 listed, 2 filed" in out, (out, err)
    listing.write_text("alice: alice.smith\nsales: bob\n")
    code, out, err = await mailmove(config, "whitelist", "diff", DOMAIN, "--addresses", str(listing))
    assert code == 1 and f"- missing sales@{DOMAIN}" in out and f"+ extra   info@{DOMAIN}" in out
    code, out, err = await mailmove(config, "confirm", DOMAIN, "await_registration", "--lost", f"info@{DOMAIN}")
    assert code == 2 and "lost: the gateway refuses no listed address" in err


async def test_no_external_is_said_in_the_status(cli_world, dev_env):
    world, settings, config = cli_world
    code, out, err = await mailmove(config, "domain", "start", DOMAIN, "--legacy-mx", LEGACY, "--no-external")
    assert code == 0, err
    handle = dev_env.client.get_workflow_handle_for(DomainMoveWorkflow.run, f"domain-move:{DOMAIN}")
    await until_stage(handle, "request_domain", "waiting")
    assert (await mailmove(config, "confirm", DOMAIN, "request_domain"))[0] == 0
    status = await until_stage(handle, "await_registration", "waiting")
    assert "receives nothing from outside" in status.stages[2].detail and not status.addresses
