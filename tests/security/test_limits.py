"""Input limits against the served dashboard (uvicorn on a free port, in this process) and the
CLI: a 150 MB body is refused with 413 before it is read, whether it declares its length or
comes in chunks, and the process's peak memory hardly moves; address lists and wave files have
a stated maximum, refused naming the field (422, exit 2); a start of the largest list is parsed
off the event loop, so /healthz and everything else on the loop keep answering meanwhile."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from mailmove.base.addresses import MAX_ADDRESS, MAX_ADDRESSES, MAX_LINE, MAX_TEXT, parse_addresses
from mailmove.base.config import HostPort, parse_settings
from mailmove.base.errors import ConfigError
from mailmove.dashboard.auth import issue_token
from mailmove.dashboard.codec import MAX_BODY as CODEC_MAX_BODY
from mailmove.dashboard.serve import serving
from mailmove.sandbox.bind import free_port
from mailmove.service.waves import MAX_ROWS, MAX_WAVE_ADDRESSES
from mailmove.store.db import upgrade
from tests.support.moves import terminate_running
from tests.support.processes import mailmove
from tests.support.settings import settings_for

DOMAIN, LEGACY = "chem.sandbox.test", "mail.chem.sandbox.test"
HUGE = 150 << 20
CHUNK = 64 << 10
# lists that took seconds of a thread each to parse (quadratic), each within a 1 MiB body as JSON
SLOW_LISTS = {
    "continued": f"a@{DOMAIN}\n" + " b\n" * 250_000,  # one logical line, joined a continuation at a time
    "long-local-part": "x" * 1_000_000 + f"@{DOMAIN}\n",  # email-validator's time grows with its square
    "long-entries": "".join(f"{'x' * 16_000}{i}@{DOMAIN}\n" for i in range(60)),  # each within MAX_LINE
}


def peak_rss_reset() -> None:
    """From now on, VmHWM counts from the present RSS (Linux: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def memory_kib(key: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key + ":"))
    return int(line.split()[1])


async def huge_body():
    """150 MB of a JSON document, one chunk at a time: the test itself never holds it."""
    yield b'{"domain": "'
    chunk = b"x" * CHUNK
    for _ in range(HUGE // CHUNK):
        yield chunk
    yield b'"}'


@pytest.fixture
async def plain(tmp_path):
    """The dashboard alone, with its store: nothing else is needed to refuse a body."""
    settings = parse_settings(
        {"database": {"url": f"sqlite:///{tmp_path}/mailmove.db"}, "dashboard": {"listen": f"127.0.0.1:{free_port()}"}},
        tmp_path,
    )
    upgrade(settings.database.url)
    async with serving(settings, None, login=False):
        yield settings, f"http://{settings.dashboard.listen}"


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_150_mb_body_is_refused_before_it_is_read(plain, declared):
    settings, base = plain
    headers = {"content-type": "application/json"}
    if declared:
        headers["content-length"] = str(HUGE + len(b'{"domain": ""}'))
    async with httpx.AsyncClient(base_url=base, timeout=120) as attacker:  # not signed in
        peak_rss_reset()
        before = memory_kib("VmRSS")
        started = time.monotonic()
        r = await attacker.post("/api/domain-moves", content=huge_body(), headers=headers)
        took = time.monotonic() - started
        grown = memory_kib("VmHWM") - before
    assert r.status_code == 413 and r.json()["field"] == "body", r.text
    assert took < 30, took
    assert grown < 16 * 1024, f"the peak memory grew by {grown} KiB"


async def test_the_limit_is_configurable_and_the_codec_keeps_its_own(plain, tmp_path):
    settings, base = plain
    small = replace(
        settings, dashboard=replace(settings.dashboard, max_body=4096, listen=HostPort("127.0.0.1", free_port()))
    )
    async with serving(small, None, login=False):
        async with httpx.AsyncClient(base_url=f"http://{small.dashboard.listen}") as c:
            r = await c.post("/api/domain-moves", json={"domain": "x" * 5000})
            assert r.status_code == 413 and r.json()["field"] == "body"
            r = await c.post("/api/domain-moves", json={"domain": "x" * 3000})
            assert r.status_code == 401  # under the limit: read, and refused for who is asking
    async with httpx.AsyncClient(base_url=base) as c:
        page = b'{"payloads": [' + b" " * (2 << 20) + b"]}"  # 2 MB: above max_body, within the codec's 8 MiB
        r = await c.post("/codec/decode", content=page, headers={"content-type": "application/json"})
        assert r.status_code == 401
        r = await c.post(
            "/codec/decode", content=b" " * (CODEC_MAX_BODY + 1), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413
    with pytest.raises(ConfigError, match="dashboard.max_body"):
        parse_settings({"dashboard": {"max_body": "lots"}}, tmp_path)
    assert parse_settings({"dashboard": {"max_body": "2M"}}, tmp_path).dashboard.max_body == 2 << 20


@pytest.fixture
async def operator(dev_env, sandbox_factory):
    """The dashboard of a sandbox on a free port, and an operator's client for it."""
    world = sandbox_factory(confirm_after=10**9)
    settings = settings_for(world, dev_env, portal_mode="manual")
    token = issue_token(settings, "carol", "operator", (DOMAIN,))
    async with serving(settings, dev_env.client, login=False):
        base = f"http://{settings.dashboard.listen}"
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            yield world, settings, c
    await terminate_running(dev_env.client, f"domain-move:{DOMAIN}")


def listing(count: int) -> str:
    return "\n".join(f"user{i}@{DOMAIN}" for i in range(count)) + "\n"


async def test_one_address_more_than_the_maximum_is_422_naming_addresses(operator):
    world, settings, c = operator
    r = await c.post(
        "/api/domain-moves", json={"domain": DOMAIN, "legacy_mx": LEGACY, "addresses": listing(MAX_ADDRESSES + 1)}
    )
    assert r.status_code == 422 and r.json()["field"] == "addresses", r.text
    assert f"more than the {MAX_ADDRESSES}" in r.json()["message"]


async def test_the_event_loop_stays_free_while_the_largest_start_is_parsed(operator):
    """The worker of `mailmove up` shares this loop: a start must not stop it, nor /healthz.

    The loop's stalls are counted in its own thread's CPU time, not in wall time: a busy machine
    that takes the CPU away from the whole process is not the loop's fault, and the parse in a
    thread spends no CPU of the loop's thread, while the same parse on the loop would spend all
    of its time there between two ticks.
    """
    world, settings, c = operator
    text = listing(MAX_ADDRESSES)
    started = time.thread_time()
    parse_addresses(text, "addresses", DOMAIN)
    parsing = time.thread_time() - started  # what the start spends on the list alone
    stalls: list[float] = []
    answers: list[float] = []
    done = asyncio.Event()

    async def ticking():
        while not done.is_set():
            at = time.thread_time()
            await asyncio.sleep(0.005)
            stalls.append(time.thread_time() - at)

    async def asking_health():
        async with httpx.AsyncClient(base_url=str(c.base_url), timeout=10) as probe:
            while not done.is_set():
                at = time.perf_counter()
                assert (await probe.get("/healthz")).status_code == 200
                answers.append(time.perf_counter() - at)

    watchers = [asyncio.create_task(ticking()), asyncio.create_task(asking_health())]
    await asyncio.sleep(0.1)
    r = await c.post(
        "/api/domain-moves", json={"domain": DOMAIN, "legacy_mx": LEGACY, "addresses": text, "dns": "centre"}
    )
    done.set()
    await asyncio.gather(*watchers)
    assert r.status_code == 201, r.text  # the largest list fits Temporal's payload limit
    assert answers and max(answers) < 1.0, answers
    assert max(stalls) < parsing / 2, (
        f"the loop's thread spent {max(stalls):.3f}s of CPU between two ticks; parsing takes {parsing:.3f}s"
    )


async def test_the_cli_has_the_same_maxima(cli_world, tmp_path):
    world, settings, config = cli_world
    addresses = tmp_path / "addresses.txt"
    addresses.write_text(listing(MAX_ADDRESSES + 1))
    code, out, err = await mailmove(
        config, "domain", "start", DOMAIN, "--legacy-mx", LEGACY, "--addresses", str(addresses)
    )
    assert code == 2 and "addresses:" in err and f"more than the {MAX_ADDRESSES}" in err, err

    rows = tmp_path / "rows.csv"
    rows.write_text("domain,legacy_mx\n" + "".join(f"d{i}.{DOMAIN},{LEGACY}\n" for i in range(MAX_ROWS + 1)))
    code, out, err = await mailmove(config, "wave", "start", str(rows))
    assert code == 2 and "rows:" in err and f"more than the {MAX_ROWS}" in err, err

    per_row = MAX_WAVE_ADDRESSES // 5 + 1  # five rows, each within the list maximum, together too many
    lines = []
    for i in range(5):
        domain = f"d{i}.{DOMAIN}"
        (tmp_path / f"{i}.txt").write_text("\n".join(f"user{n}@{domain}" for n in range(per_row)))
        lines.append(f"{domain},{LEGACY},centre,{i}.txt\n")
    (tmp_path / "many.csv").write_text("domain,legacy_mx,dns,addresses\n" + "".join(lines))
    code, out, err = await mailmove(config, "wave", "start", str(tmp_path / "many.csv"))
    assert code == 2 and "addresses:" in err and f"more than the {MAX_WAVE_ADDRESSES}" in err, err


@pytest.mark.parametrize("domains", [(DOMAIN,), ()], ids=["limited", "unlimited"])
@pytest.mark.parametrize("name", SLOW_LISTS)
async def test_a_list_slow_to_parse_is_422_naming_addresses_at_once(plain, name, domains):
    """Six such starts held the default thread pool, and with it every sign-in. A limited
    operator's list is read for its domains first (scope), any operator's when it is validated:
    both measure the text before they parse it, and the answer does not echo it."""
    settings, base = plain
    token = issue_token(settings, "carol", "operator", domains)
    body = {"domain": DOMAIN, "legacy_mx": LEGACY, "dns": "centre", "addresses": SLOW_LISTS[name]}
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
        started = time.perf_counter()
        r = await c.post("/api/domain-moves", json=body)
        took = time.perf_counter() - started
    assert r.status_code == 422 and r.json()["field"] == "addresses", r.text[:300]
    assert f"more than {MAX_LINE}" in r.text or f"longer than the {MAX_ADDRESS}" in r.text, r.text[:300]
    assert took < 0.5, f"{took:.2f}s"
    assert len(r.content) < 8000, len(r.content)


@pytest.mark.slow  # the CLI run ten times
async def test_the_cli_measures_a_file_before_it_parses_it(tmp_path):
    """The same lists as files, and one beyond MAX_TEXT: exit 2 naming addresses, in about the
    time the CLI takes to refuse a one-line file."""
    config = tmp_path / "mailmove.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/mailmove.db"\n')
    files = {"bad-line": "not an address\n", **SLOW_LISTS, "huge": f"user@{DOMAIN}\n" * (MAX_TEXT // 10)}
    start = ("domain", "start", DOMAIN, "--legacy-mx", LEGACY, "--dns", "centre", "--addresses")
    took: dict[str, float] = {}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        started = time.perf_counter()
        code, out, err = await mailmove(config, *start, str(tmp_path / name))
        took[name] = time.perf_counter() - started
        assert code == 2 and "addresses:" in err, (name, code, err[:300])
    assert f"more than the {MAX_TEXT} characters" in err, err[:300]  # the last, "huge"
    assert max(took.values()) < took["bad-line"] + 1, took
