"""Encrypted payloads against the real dev server: no personal data in clear in any history,
a worker that refuses work it cannot decrypt, a move begun before encryption that still
finishes, and the codec endpoint through which people who may see everything read it."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import stat
import subprocess
from pathlib import Path

import httpx
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.converter import WorkflowSerializationContext

from mailmove.base.config import Settings, parse_settings
from mailmove.base.errors import ConfigError
from mailmove.base.inputs import DomainMoveRequest
from mailmove.base.model import ConfirmInput
from mailmove.base.payload_codec import (
    Always,
    EncryptionCodec,
    Never,
    read_key_file,
    write_key_file,
)
from mailmove.base.temporal import Role, admit_moves_in_clear, connect, payload_keys
from mailmove.dashboard.auth import issue_token
from mailmove.dashboard.serve import serving
from mailmove.service import control
from mailmove.service.embedded import temporal_binary
from mailmove.worker import build_worker
from tests.support.moves import terminate_running, until_stage
from tests.support.polling import wait_for
from tests.support.server_move import request as server_request
from tests.support.settings import settings_for
from workflows.domain_move import DomainMoveWorkflow
from workflows.server_move import ServerMoveWorkflow

DOMAIN, LEGACY = "chem.sandbox.test", "mail.chem.sandbox.test"
WID = f"domain-move:{DOMAIN}"
# what must never be readable in Temporal: the Whitelist, the contact, TU-IDs, the institution
SECRETS = ["zz-alice-4711", "zz-bob-0815", "zz-contact-2342", "ab12cdef", "xy34ghij", "Geheimlabor"]


def readable(text: str) -> str:
    """The text with every base64 string in it decoded too: `--output json` shows payload data
    as base64, so a scan of the text alone would miss a payload in clear."""
    found = [text]

    def walk(value) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and len(value) >= 8:
            try:
                found.append(base64.b64decode(value, validate=True).decode("utf-8", "replace"))
            except ValueError:
                pass

    walk(json.loads(text))
    return "\n".join(found)


def history_json(env, wid: str, *codec_args: str) -> str:
    """`temporal workflow show --output json`, as anyone who reaches the frontend sees it."""
    address = env.client.service_client.config.target_host
    command = [temporal_binary(), "workflow", "show", "-w", wid, "--address", address, "-o", "json", *codec_args]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout


def payloads_of(text: str) -> list[dict]:
    """Every payload of a history but the search attributes' (the server indexes those: kind,
    domain and state) and the SDK's patch markers' (a patch's name): neither passes a codec,
    neither holds personal data, and the scan for secrets covers them all the same."""
    out = []

    def walk(value) -> None:
        if isinstance(value, dict):
            if "metadata" in value and "data" in value:
                out.append(value)
            for k, v in value.items():
                if k not in ("searchAttributes", "patch-data"):
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(json.loads(text))
    return out


def encoding_of(payload: dict) -> str:
    return base64.b64decode(payload["metadata"].get("encoding", "")).decode()


@pytest.fixture
async def moves(dev_env, sandbox_factory):
    """A world, its settings and strict worker clients; every move left running is ended after."""
    started: list[str] = []
    workers = []

    async def begin(confirm_after: float = 1, **config) -> tuple[Settings, Client]:
        world = sandbox_factory(confirm_after=confirm_after)
        settings = settings_for(world, dev_env, portal_mode="http", **config)
        client = await connect(settings, Role.WORKER)
        worker = build_worker(client, settings)
        workers.append((worker, asyncio.create_task(worker.run())))
        return settings, client

    yield begin, started
    for worker, task in workers:
        await worker.shutdown()
        await task
    await terminate_running(dev_env.client, WID, "server-move:mx2.chem.sandbox.test", *started)


async def task_failure(handle):
    """The failure of the run's first failed workflow task, if one failed yet."""
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            return event.workflow_task_failed_event_attributes.failure
    return None


def refusal(payload: Payload) -> str:
    """Why the codec refused a payload ("" if it did not): what it decodes to says so."""
    encoding = payload.metadata.get("encoding", b"").decode()
    return encoding.removeprefix("refused: ") if encoding.startswith("refused: ") else ""


async def test_keys_rotate_and_anything_else_is_refused(tmp_path):
    old, new = write_key_file(tmp_path / "old"), write_key_file(tmp_path / "new")
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_key_file(tmp_path / "new")  # never overwritten
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"rcpt": "zz-alice-4711@chem.sandbox.test"}')
    move_a, move_b = (WorkflowSerializationContext("default", f"domain-move:{d}.example") for d in "ab")
    sealed_old = EncryptionCodec([old]).with_context(move_a).seal(plain)
    ring = EncryptionCodec([new, old]).with_context(move_a)
    sealed_new = ring.seal(plain)
    assert b"zz-alice" not in sealed_new.SerializeToString()
    assert sealed_new.metadata["encryption-key-id"].decode() == new.id != old.id
    assert await ring.decode([sealed_old, sealed_new]) == [plain, plain]  # rotation: both read
    [unknown] = await EncryptionCodec([old]).with_context(move_a).decode([sealed_new])
    assert "unknown key" in refusal(unknown)
    tampered = Payload()
    tampered.CopyFrom(sealed_new)
    tampered.data = sealed_new.data[:-1] + bytes([sealed_new.data[-1] ^ 1])
    assert "does not authenticate" in refusal((await ring.decode([tampered]))[0])
    # a ciphertext copied into another move, or relabelled as another move's, is refused
    assert "of workflow 'domain-move:a.example'" in refusal((await ring.with_context(move_b).decode([sealed_new]))[0])
    relabelled = Payload()
    relabelled.CopyFrom(sealed_new)
    relabelled.metadata["encryption-workflow-id"] = b"domain-move:b.example"
    assert "does not authenticate" in refusal((await ring.with_context(move_b).decode([relabelled]))[0])
    assert EncryptionCodec([new]).unseal(sealed_new) == plain  # the codec endpoint: no context, any move
    # in clear: refused by the agent (and by a worker for any move it did not admit), read by a client
    assert "not encrypted" in refusal((await EncryptionCodec([new], Never()).with_context(move_a).decode([plain]))[0])
    assert await EncryptionCodec([new], Always()).decode([plain]) == [plain]
    for text in ("", "not base64!\n", base64.b64encode(b"short").decode(), "a\nb\n"):
        (tmp_path / "bad").write_text(text)
        with pytest.raises(ConfigError) as caught:
            read_key_file(tmp_path / "bad")
        assert caught.value.field == "temporal.encryption_key_files"
    with pytest.raises(ConfigError, match="cannot be read"):
        read_key_file(tmp_path / "missing")


async def test_no_personal_data_in_clear_in_a_whole_domain_move(moves, dev_env, tmp_path):
    begin, _ = moves
    settings, client = await begin()
    addresses = tmp_path / "addresses"
    addresses.write_text(f"zz-alice-4711@{DOMAIN}\nzz-bob-0815@{DOMAIN}\n")
    move = await control.prepare_domain_move(
        settings,
        DomainMoveRequest(
            DOMAIN, LEGACY, addresses_file=str(addresses), contact=f"zz-contact-2342@{DOMAIN}", actor="alice"
        ),
    )
    reader = await connect(settings)
    await control.start_domain_move(reader, settings, move)
    assert (await reader.get_workflow_handle_for(DomainMoveWorkflow.run, WID).result()).state.value == "done"

    raw = history_json(dev_env, WID)
    everything = payloads_of(raw)
    assert len(everything) > 30 and {encoding_of(p) for p in everything} == {"binary/encrypted"}
    clear = readable(raw)
    assert not [s for s in SECRETS if s in clear]

    # the same history through the codec endpoint, as someone who may see every move
    token = await asyncio.to_thread(issue_token, settings, "auditor", "viewer")
    async with serving(settings, reader, login=False):
        decoded = await asyncio.to_thread(  # the codec endpoint answers in this event loop
            history_json,
            dev_env, WID, "--codec-endpoint", f"http://{settings.dashboard.listen}/codec", "--codec-auth",
            f"Bearer {token}",
        )  # fmt: skip
    shown = readable(decoded)
    assert {"zz-alice-4711", "zz-bob-0815", "zz-contact-2342"} <= {s for s in SECRETS if s in shown}


async def test_no_personal_data_in_clear_in_a_server_move(moves, dev_env):
    begin, _ = moves
    settings, client = await begin()
    req = server_request(
        institution="Geheimlabor", contact="zz-contact-2342@chem.sandbox.test", agent=False, portal_mode="http"
    )
    move = await control.prepare_server_move(settings, req)
    reader = await connect(settings)
    wid = await control.start_server_move(reader, settings, move)
    handle = reader.get_workflow_handle_for(ServerMoveWorkflow.run, wid)
    await until_stage(handle, "open_firewall", "waiting", timeout=60)  # the TSL entry is filed by then
    raw = history_json(dev_env, wid)
    assert {encoding_of(p) for p in payloads_of(raw)} == {"binary/encrypted"}
    clear = readable(raw)
    assert not [s for s in SECRETS if s in clear]
    codec = EncryptionCodec([read_key_file(settings.temporal.encryption_key_files[0])])
    opened = [codec.unseal(Payload(data=base64.b64decode(p["data"]), metadata={
        k: base64.b64decode(v) for k, v in p["metadata"].items()})).data for p in payloads_of(raw)]  # fmt: skip
    assert any(b"Geheimlabor" in data and b"ab12cdef" in data for data in opened)  # with the key, they are there


async def test_a_caller_without_the_key_cannot_give_the_worker_work(moves, dev_env):
    begin, _ = moves
    settings, client = await begin()
    move = await control.prepare_domain_move(settings, DomainMoveRequest(DOMAIN, LEGACY, no_external=True))
    plain = Client(dev_env.client.service_client, namespace="default")  # no key: payloads in clear
    await control.start_domain_move(plain, settings, move)
    handle = plain.get_workflow_handle(WID)
    failure = await wait_for(lambda: task_failure(handle), 30, what="the worker to refuse the workflow task")
    error = await client.data_converter.decode_failure(failure)
    chain = []
    while error is not None:
        chain.append(str(error))
        error = error.__cause__
    assert any("not encrypted with a mailmove key" in text for text in chain), chain
    kinds = {e.event_type async for e in handle.fetch_history_events()}
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in kinds  # nothing ran


async def test_a_move_begun_in_clear_finishes_after_encryption_is_turned_on(moves, dev_env, tmp_path):
    begin, started = moves
    world_settings, _ = await begin(confirm_after=10**9)
    legacy = dataclasses.replace(
        world_settings,
        temporal=dataclasses.replace(world_settings.temporal, task_queue=f"{world_settings.temporal.task_queue}-old"),
    )
    # the previous release: no codec anywhere
    plain = Client(dev_env.client.service_client, namespace="default")
    old_worker = build_worker(plain, legacy)
    old_task = asyncio.create_task(old_worker.run())
    move = await control.prepare_domain_move(legacy, DomainMoveRequest(DOMAIN, LEGACY, no_external=True))
    await control.start_domain_move(plain, legacy, move)
    handle = plain.get_workflow_handle_for(DomainMoveWorkflow.run, WID)
    await until_stage(handle, "await_registration", "waiting", timeout=60)
    await old_worker.shutdown()
    await old_task

    # the upgrade: a key made now; a move in clear started after it is no move of ours
    await asyncio.sleep(1.1)  # key stamps have whole seconds
    key = tmp_path / "payload-key"
    write_key_file(key)
    upgraded = dataclasses.replace(
        legacy, temporal=dataclasses.replace(legacy.temporal, encryption_key_files=(str(key),))
    )
    await asyncio.sleep(1.1)
    intruder = "domain-move:intruder.sandbox.test"
    started.append(intruder)
    intruding = dataclasses.replace(move, domain="intruder.sandbox.test")
    await plain.start_workflow(DomainMoveWorkflow.run, intruding, id=intruder, task_queue=legacy.temporal.task_queue)

    client = await connect(upgraded, Role.WORKER)
    admitted = await wait_for(lambda: admit_moves_in_clear(client, upgraded), 15, what="visibility to list the move")
    assert admitted == [WID]
    worker = build_worker(client, upgraded)
    task = asyncio.create_task(worker.run())
    try:
        reader = await connect(upgraded)
        await control.confirm(reader, WID, ConfirmInput("await_registration", "alice"))
        assert (await reader.get_workflow_handle_for(DomainMoveWorkflow.run, WID).result()).state.value == "done"
        kinds = {e.event_type async for e in plain.get_workflow_handle(intruder).fetch_history_events()}
        assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED in kinds
        assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in kinds
        # the admitted id, taken by a new run in clear once the move is over, admits nothing
        queue = legacy.temporal.task_queue
        again = await plain.start_workflow(DomainMoveWorkflow.run, move, id=WID, task_queue=queue)
        await wait_for(lambda: task_failure(again), 30, what="the new run in clear to be refused")
        kinds = {e.event_type async for e in again.fetch_history_events()}
        assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in kinds
    finally:
        await worker.shutdown()
        await task


async def test_the_codec_endpoint_answers_only_whom_it_should(moves, dev_env):
    begin, _ = moves
    settings, client = await begin()
    tokens = {
        "viewer": issue_token(settings, "auditor", "viewer"),
        "admin": issue_token(settings, "root", "admin"),
        "limited": issue_token(settings, "eve", "operator", ("other.sandbox.test",)),
    }
    sealed = EncryptionCodec([read_key_file(settings.temporal.encryption_key_files[0])]).seal(
        Payload(metadata={"encoding": b"json/plain"}, data=b'"zz-alice-4711"')
    )
    body = {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in sealed.metadata.items()},
                "data": base64.b64encode(sealed.data).decode(),
            }
        ]
    }
    origin = "http://127.0.0.1:8233"
    settings = dataclasses.replace(settings, dashboard=dataclasses.replace(settings.dashboard, codec_origins=(origin,)))
    async with serving(settings, client, login=False):
        base = f"http://{settings.dashboard.listen}/codec"
        async with httpx.AsyncClient(timeout=10) as http:

            def auth(who: str) -> dict[str, str]:
                return {"Authorization": f"Bearer {tokens[who]}"}

            r = await http.post(f"{base}/decode", json=body, headers=auth("viewer"))
            assert r.status_code == 200
            assert base64.b64decode(r.json()["payloads"][0]["data"]) == b'"zz-alice-4711"'
            assert (await http.post(f"{base}/decode", json=body)).status_code == 401
            assert (await http.post(f"{base}/decode", json=body, headers=auth("limited"))).status_code == 403
            assert (await http.post(f"{base}/encode", json=body, headers=auth("viewer"))).status_code == 403
            assert (await http.post(f"{base}/encode", json=body, headers=auth("admin"))).status_code == 200
            form = await http.post(f"{base}/decode", content=json.dumps(body), headers=auth("viewer"))
            assert form.status_code == 415  # only JSON: a form post cannot reach it without a preflight
            huge = await http.post(
                f"{base}/decode",
                content=b"{" + b" " * (9 << 20) + b"}",
                headers={**auth("viewer"), "Content-Type": "application/json"},
            )
            assert huge.status_code == 413
            ok = await http.options(
                f"{base}/decode", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
            )
            assert ok.headers.get("access-control-allow-origin") == origin
            evil = "http://evil.example"
            no = await http.options(f"{base}/decode", headers={"Origin": evil, "Access-Control-Request-Method": "POST"})
            assert "access-control-allow-origin" not in no.headers
            r = await http.post(f"{base}/decode", json=body, headers={**auth("viewer"), "Origin": evil})
            assert "access-control-allow-origin" not in r.headers


def test_embedded_key_is_made_once_0600(tmp_path):
    settings = parse_settings({"paths": {"var": str(tmp_path / "var")}}, tmp_path)
    with pytest.raises(ConfigError, match="mailmove up"):
        payload_keys(settings)  # a client does not make the key; `up` does
    first = payload_keys(settings, create=True)
    assert payload_keys(settings)[0].id == first[0].id == payload_keys(settings, create=True)[0].id
    key = Path(tmp_path / "var" / "payload-key")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


async def test_a_signal_in_clear_cannot_stall_a_move(moves, dev_env):
    """Refusing by failing the workflow task would fail it again at every retry, for good: the
    refused payload is dropped with its signal instead, and the move goes on."""
    begin, _ = moves
    settings, client = await begin(confirm_after=10**9)
    move = await control.prepare_domain_move(settings, DomainMoveRequest(DOMAIN, LEGACY, no_external=True))
    await control.start_domain_move(client, settings, move)
    handle = client.get_workflow_handle_for(DomainMoveWorkflow.run, WID)
    await until_stage(handle, "await_registration", "waiting", timeout=60)
    keyless = Client(dev_env.client.service_client, namespace="default")
    for name in ("confirm", "anything"):
        await keyless.get_workflow_handle(WID).signal(name, {"stage": "await_registration", "actor": "mallory"})
    await control.confirm(client, WID, ConfirmInput("await_registration", "alice"))
    assert (await handle.result()).state.value == "done"
    assert await task_failure(handle) is None  # not one workflow task failed on the way
