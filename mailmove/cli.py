"""The `mailmove` command line. Exit status: 0 ok, 2 any error of mailmove.base.errors (bad
input, configuration, not found, conflict; the message names the field), 1 any other failure."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.progress import MofNCompleteColumn, Progress
from temporalio.client import Client

from mailmove.base import hints, ids
from mailmove.base.config import Settings, load_settings, parse_duration
from mailmove.base.errors import BadInput, MailmoveError
from mailmove.base.inputs import DomainMoveRequest, ServerMoveRequest, external_addresses, relay_test_query
from mailmove.base.model import CancelInput, ConfirmInput, ExtendInput
from mailmove.base.payload_codec import write_key_file
from mailmove.base.processes import exit_process, stop_on_signals
from mailmove.base.temporal import (
    Role,
    Unreachable,
    connect,
    payload_keys,
    reader,
    register_search_attributes,
)
from mailmove.base.vocabulary import CheckStage, DnsMode, MoveState, PortalMode, RelayScope
from mailmove.checks.dns import Dns
from mailmove.checks.relay import run_relay_test
from mailmove.dashboard.serve import serving
from mailmove.sandbox.world import Sandbox, SandboxOptions
from mailmove.service import control, guard, survey, waves
from mailmove.service.embedded import DevServer, codec_endpoint
from mailmove.service.render import (
    clean,
    console,
    guard_table,
    guard_view,
    migration_table,
    report_view,
    shown,
    step_verdicts,
    survey_view,
    swaks,
    wave_view,
)
from mailmove.service.render import plain as as_text
from mailmove.service.startup import StateLock, check_ports, private_state
from mailmove.store.db import upgrade
from mailmove.worker import build_worker, join, serve

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Move mail domains behind the central mail gateway.")
domain_app = typer.Typer(no_args_is_help=True, help="Domain moves.")
server_app = typer.Typer(no_args_is_help=True, help="Server moves.")
whitelist_app = typer.Typer(no_args_is_help=True, help="The Whitelist entries of a domain move.")
sandbox_app = typer.Typer(no_args_is_help=True, help="A local world of real BIND, portal and SMTP stand-ins.")
wave_app = typer.Typer(no_args_is_help=True, help="Many moves from one CSV file, throttled.")
app.add_typer(domain_app, name="domain")
app.add_typer(server_app, name="server")
app.add_typer(whitelist_app, name="whitelist")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(wave_app, name="wave")
guard_app = typer.Typer(no_args_is_help=True, help="The guards of finished moves: their checks again, daily.")
app.add_typer(guard_app, name="guard")


class Context:
    config: Optional[Path] = None
    debug: bool = False
    login: str = ""  # the dashboard's one-time login URL, once `up` serves it

    def settings(self) -> Settings:
        return load_settings(self.config)


ctx = Context()
JSON = typer.Option(False, "--json", help="Print JSON.")


@app.callback()
def main(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML configuration [env: MAILMOVE_CONFIG]"),
    debug: bool = typer.Option(False, "--debug", help="print the traceback of a failure"),
) -> None:
    ctx.config = config
    ctx.debug = debug


def actor() -> str:
    return os.environ.get("MAILMOVE_USER") or getpass.getuser()


def fail(message: str) -> None:
    """One line on stderr; the message may quote what came from outside, so it is not markup."""
    if ctx.debug:
        traceback.print_exc()
    console(stderr=True).print(f"[red]error:[/red] {escape(clean(message))}", highlight=False, soft_wrap=True)


def run(work: Callable[[Settings], Awaitable[None]], cleanup: Callable[[], None] | None = None) -> None:
    """Load settings, run `work`, and turn known errors into the exit status of the contract.

    The process ends with `exit_process`, without an ordinary interpreter shutdown, which the
    Temporal client's native threads can crash; everything is done here.
    """
    code = 0
    try:
        settings = ctx.settings()
        asyncio.run(work(settings))
    except MailmoveError as exc:  # every kind: the person can fix it, or wait and try again
        fail(str(exc))
        code = 2
    except Unreachable as exc:
        fail(str(exc))
        code = 1
    except typer.Exit as exc:
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # noqa: BLE001 - the CLI's last word on any failure
        fail(f"{type(exc).__name__}: {exc}")
        code = 1
    if cleanup:
        cleanup()
    exit_process(code)


async def client_for(settings: Settings) -> Client:
    try:
        return await connect(settings)
    except Unreachable as exc:
        hint = "" if settings.temporal.address else " (is `mailmove up` running?)"
        raise Unreachable(f"{exc}{hint}") from None


async def showing(
    fetch: Callable[[], Awaitable[Any]], render: Callable[[Any], Any], until: Callable[[Any], bool]
) -> None:
    """Print what `fetch` returns (a dict as JSON, else a Rich view), every 2 s until `until`."""
    while True:
        view = await fetch()
        shown_view = render(view)
        if isinstance(shown_view, dict):
            typer.echo(json.dumps(shown_view, indent=2))
        else:
            console().print(shown_view)
        if until(view):
            return
        await asyncio.sleep(2)
        if not isinstance(shown_view, dict):
            console().clear()


def print_json(value: object) -> None:
    typer.echo(json.dumps(control.jsonable(value), indent=2))


# -- the embedded stack -----------------------------------------------------------------------


@asynccontextmanager
async def stack(settings: Settings) -> AsyncIterator[Client]:
    """Temporal (embedded dev server unless `temporal.address` is set), the worker, the dashboard.

    Nothing starts unless the state folder is this stack's alone and every port it binds is
    free; the worker joins only its own dev server, or a cluster queue polled alike."""
    private_state(settings.var_dir)
    lock = StateLock(settings.var_dir)
    lock.acquire()
    dev = None if settings.temporal.address else DevServer(settings)
    try:
        check_ports(settings)
        await asyncio.to_thread(upgrade, settings.database.url)
        if dev:
            client = await dev.start(payload_keys(settings, create=True))
        else:
            client = await connect(settings, Role.WORKER)
        await join(client, settings)
        await register_search_attributes(client, settings.temporal.namespace)
        async with build_worker(client, settings), serving(settings, reader(client)) as login:
            ctx.login = login
            yield client
    finally:
        if dev:
            dev.stop()
        lock.release()


def print_addresses(settings: Settings) -> None:
    out = console()
    if settings.temporal.address:
        out.print(f"Temporal cluster  {settings.temporal.address} (namespace {settings.temporal.namespace})")
    else:
        dev = DevServer(settings)
        out.print(f"Temporal dev server  {settings.temporal.embedded_listen}   UI {dev.ui_url}   state {dev.db_file}")
    out.print(f"worker            task queue {settings.temporal.task_queue}")
    keys = payload_keys(settings)
    if keys:
        out.print(f"payloads          encrypted (AES-256-GCM), key {keys[0].id}; codec {codec_endpoint(settings)}")
    else:
        out.print("[yellow]payloads          in clear: set temporal.encryption_key_files (see SECURITY.md)[/yellow]")
    out.print(f"database          {escape(settings.database.shown)}")
    out.print(f"dashboard         http://{settings.dashboard.listen}/")
    if ctx.login:
        out.print(f"                  one-time login (admin): {ctx.login}", soft_wrap=True)
    out.print("Ctrl-C stops all of it; `mailmove up` again resumes every running migration.")


@app.command()
def up() -> None:
    """Run the whole stack: Temporal (embedded dev server by default), the worker, the dashboard;
    Ctrl-C stops it."""

    async def work(settings: Settings) -> None:
        async with stack(settings):
            print_addresses(settings)
            await stop_on_signals().wait()

    run(work)


@app.command()
def worker(
    host: Optional[str] = typer.Option(
        None, "--host", help="run as the host agent of this mail server (firewall, Postfix check, relay test)"
    ),
) -> None:
    """Run only the worker (or, with --host, a mail server's host agent), against `temporal.address`."""

    async def work(settings: Settings) -> None:
        await serve(settings, control.host_name(host) if host else "")

    run(work)


@app.command()
def dashboard(
    login_link: bool = typer.Option(False, "--login-link", help="print a one-time admin login link"),
) -> None:
    """Run only the dashboard, against `temporal.address` and the database (production: one
    process of its own, behind TLS)."""

    async def work(settings: Settings) -> None:
        await asyncio.to_thread(upgrade, settings.database.url)
        async with serving(settings, None, login=login_link) as login:
            console().print(f"dashboard         http://{settings.dashboard.listen}/")
            if login:
                console().print(f"                  one-time login (admin): {login}", soft_wrap=True)
            await stop_on_signals().wait()

    run(work)


@app.command()
def bootstrap() -> None:
    """Prepare a cluster and a database for mailmove: the store's schema (Alembic) and the search
    attributes in `temporal.namespace`. Idempotent: run it at every deploy."""

    async def work(settings: Settings) -> None:
        await asyncio.to_thread(upgrade, settings.database.url)
        client = await client_for(settings)
        added = await register_search_attributes(client, settings.temporal.namespace)
        console().print(
            f"database {settings.database.url.split('@')[-1]}: schema up to date; namespace "
            f"{settings.temporal.namespace}: search attributes "
            + (f"added: {', '.join(added)}" if added else "already registered")
        )

    run(work)


@app.command()
def keygen(path: Path = typer.Argument(..., help="the new key file (never overwritten)")) -> None:
    """Write a new payload key (AES-256, mode 0600) for `temporal.encryption_key_files`: list it
    first to encrypt with it, keep the older ones after it until no history needs them."""

    async def work(settings: Settings) -> None:
        try:
            key = write_key_file(path)
        except FileExistsError:
            raise BadInput("PATH", f"{path} exists; a key file is never overwritten") from None
        console().print(f"wrote payload key {key.id} to {escape(str(path))}", highlight=False)

    run(work)


# -- domain moves -----------------------------------------------------------------------------


@domain_app.command("start")
def domain_start(
    domain: str = typer.Argument(..., help="the mail domain to move, e.g. chem.tu-darmstadt.de"),
    legacy_mx: str = typer.Option(..., "--legacy-mx", help="the department's current mail server"),
    dns_mode: DnsMode = typer.Option(DnsMode.RFC2136, "--dns", help="rfc2136: mailmove updates DNS; centre: by hand"),
    portal: Optional[PortalMode] = typer.Option(
        None, "--portal", help="how the domain is filed (default: portal.mode)"
    ),
    legacy_preference: Optional[int] = typer.Option(
        None, "--legacy-preference", help="default: gateway.legacy_preference"
    ),
    addresses: Optional[Path] = typer.Option(
        None, "--addresses", help="the externally reachable addresses: one a line, or a Postfix virtual/aliases map"
    ),
    no_external: bool = typer.Option(False, "--no-external", help="the domain receives nothing from outside"),
    contact: str = typer.Option(
        "", "--contact", help="e-mailed when a step waits for a person, is overdue, and at the end"
    ),
    as_json: bool = JSON,
) -> None:
    """Start moving DOMAIN behind the gateway; mailmove then drives every stage to `done`."""

    async def work(settings: Settings) -> None:
        request = DomainMoveRequest(
            domain,
            legacy_mx,
            dns_mode.value,
            portal.value if portal else "",
            legacy_preference,
            actor(),
            addresses_file=str(addresses) if addresses else "",
            no_external=no_external,
            contact=contact,
        )
        move = await control.prepare_domain_move(settings, request)  # before Temporal is even asked
        wid = await control.start_domain_move(await client_for(settings), settings, move)
        if as_json:
            print_json({"id": wid, "state": MoveState.RUNNING})
        else:
            console().print(f"started {wid}; watch it with `{hints.show(wid)}`")

    run(work)


# -- server moves -----------------------------------------------------------------------------


@server_app.command("start")
def server_start(
    old: str = typer.Option(..., "--old", help="the mail server being replaced (FQDN)"),
    new: str = typer.Option(..., "--new", help="the new mail server (FQDN)"),
    new_ipv4: str = typer.Option(..., "--new-ipv4", help="the new server's IPv4 address"),
    new_ipv6: str = typer.Option("", "--new-ipv6", help="its IPv6 address, if it has one"),
    relay_scope: RelayScope = typer.Option(
        RelayScope.EXTERNAL,
        "--relay-scope",
        help="external: mailout (TSL entry); internal: mailout-intern (campus only, no entry); "
        "unsecure: mailout-unsecure (no TLS, campus only)",
    ),
    institution: str = typer.Option("", "--institution", help="for the list entry"),
    admin: list[str] = typer.Option([], "--admin", help="an admin's TU-ID (at least two; repeat the option)"),
    contact: str = typer.Option("", "--contact", help="contact address for the centre"),
    sender_domain: list[str] = typer.Option([], "--sender-domain", help="a domain the server sends from (repeat)"),
    mail_from: str = typer.Option(
        "", "--mail-from", help="relay test sender (default postmaster@ first sender domain)"
    ),
    rcpt: str = typer.Option("", "--rcpt", help="relay test recipient (default: the contact address)"),
    send: bool = typer.Option(False, "--send", help="the relay test also sends a message"),
    agent: bool = typer.Option(True, "--agent/--no-agent", help="a host agent runs on the new server"),
    configure_mta: bool = typer.Option(
        False,
        "--configure-mta",
        help="after the relay test the agent sets the relay in Postfix's main.cf (a cancel restores it)",
    ),
    portal: Optional[PortalMode] = typer.Option(None, "--portal", help="how entries are filed (default portal.mode)"),
    as_json: bool = JSON,
) -> None:
    """Start moving a mail server: list entry, firewall, relay test, cut-over, old entry removed."""

    async def work(settings: Settings) -> None:
        request = ServerMoveRequest(
            old=old,
            new=new,
            new_ipv4=new_ipv4,
            new_ipv6=new_ipv6,
            relay_scope=relay_scope.value,
            institution=institution,
            admins=admin,
            contact=contact,
            sender_domains=sender_domain,
            mail_from=mail_from,
            rcpt=rcpt,
            send=send,
            agent=agent,
            configure_mta=configure_mta,
            portal_mode=portal.value if portal else "",
            actor=actor(),
        )
        move = await control.prepare_server_move(settings, request)
        client = await client_for(settings)
        wid = await control.start_server_move(client, settings, move)
        polled = not move.agent_queue or await control.agent_polls(client, settings, move.agent_queue)
        if as_json:
            print_json({"id": wid, "state": MoveState.RUNNING, "agent_queue": move.agent_queue, "agent_seen": polled})
            return
        console().print(f"started {wid}; watch it with `{hints.show(wid)}`")
        if not polled:
            console().print(
                f"[yellow]no host agent polls {move.agent_queue} yet:[/yellow] run "
                f"`{hints.host_agent(move.new_fqdn)}` on {move.new_fqdn}; the firewall and relay test wait for it"
            )

    run(work)


@wave_app.command("start")
def wave_start(
    file: Path = typer.Argument(..., help="CSV: one move a row (see docs/operations.md)"),
    concurrency: int = typer.Option(10, "--concurrency", help="moves running at once, at most"),
    rate: str = typer.Option("30/min", "--rate", help="moves started (requests filed) at most, e.g. 30/min"),
    name: str = typer.Option("", "--name", help="the wave's name; default: the file's name"),
    as_json: bool = JSON,
) -> None:
    """Validate every row, then start one wave; a bad row starts nothing (exit 2, every bad row listed)."""

    async def work(settings: Settings) -> None:
        wave = await waves.prepare_wave(settings, file, concurrency, rate, name, actor())
        wid = await waves.start_wave(await client_for(settings), settings, wave)
        if as_json:
            print_json({"id": wid, "rows": len(wave.rows), "concurrency": concurrency, "rate": wave.rate})
        else:
            console().print(
                f"started {wid}: {len(wave.rows)} moves, at most {concurrency} at once and {wave.rate:g} a minute; "
                f"watch it with `{hints.wave_show(wave.name)}`"
            )

    run(work)


@wave_app.command("show")
def wave_show(
    id: str = typer.Argument(..., help="wave:<name> or the name"),
    as_json: bool = JSON,
    watch: bool = typer.Option(False, "--watch", help="refresh every 2 s until the wave ends"),
) -> None:
    """A wave's progress and the rows that need attention."""

    async def work(settings: Settings) -> None:
        client = await client_for(settings)
        await showing(
            lambda: waves.show_wave(client, settings, id),
            lambda view: view.json() if as_json else wave_view(view),
            until=lambda view: not watch or view.status.finished,
        )

    run(work)


@whitelist_app.command("diff")
def whitelist_diff(
    domain: str = typer.Argument(..., help="the moving domain"),
    addresses: Path = typer.Option(..., "--addresses", help="the addresses file (list, virtual or aliases map)"),
    as_json: bool = JSON,
) -> None:
    """What the file lists that was not filed (missing), and what was filed that it does not list
    (extra); exit status 1 when anything is missing."""

    async def work(settings: Settings) -> None:
        wid = control.workflow_id(domain, settings)
        request = DomainMoveRequest(ids.parse(wid)[1], "-", addresses_file=str(addresses))
        listed = external_addresses(request, request.domain)
        diff = await control.whitelist_diff(await client_for(settings), settings, wid, listed)
        if as_json:
            print_json(diff)
        else:
            out = console()
            out.print(f"{len(listed)} listed, {diff.filed} filed for {wid}")
            for address in diff.missing:
                out.print(f"[red]- missing[/red] {escape(clean(address))}", highlight=False)
            for address in diff.extra:
                out.print(f"[yellow]+ extra[/yellow]   {escape(clean(address))}", highlight=False)
        if diff.missing:
            raise typer.Exit(1)

    run(work)


@app.command("relay-test")
def relay_test(
    relay: str = typer.Option(..., "--relay", help="HOST[:PORT] of the relay, e.g. mailout.hrz.tu-darmstadt.de"),
    helo: str = typer.Option(..., "--helo", help="this server's FQDN"),
    mail_from: str = typer.Option(..., "--mail-from", help="envelope sender (must receive mail)"),
    rcpt: str = typer.Option(..., "--rcpt", help="test recipient"),
    source: str = typer.Option("", "--source", help="send from this local address"),
    ca: Optional[Path] = typer.Option(None, "--ca", help="extra CA file to verify the relay's certificate"),
    send: bool = typer.Option(False, "--send", help="also send a test message (DATA)"),
    plain: bool = typer.Option(False, "--no-tls", help="no STARTTLS (mailout-unsecure)"),
    as_json: bool = JSON,
) -> None:
    """The telnet-style relay test, printed like swaks; exit 0 only when every step passed."""

    async def work(settings: Settings) -> None:
        query, smtp = relay_test_query(settings, relay, helo, mail_from, rcpt, source, ca, send, not plain)
        transcript = await run_relay_test(query, smtp, Dns(settings).addresses)
        if as_json:
            print_json(transcript)
        else:
            out = console()
            out.print(swaks(transcript))
            out.print(step_verdicts(transcript))
            for warning in transcript.warnings:
                out.print(f"[yellow]warning:[/yellow] {escape(clean(warning))}", highlight=False)
            out.print(as_text(transcript.cause, style="green" if transcript.passed else "bold red"))
        if not transcript.passed:
            raise typer.Exit(1)

    run(work)


@app.command("check")
def check_(
    domain: Optional[str] = typer.Argument(None, help="the mail domain"),
    server: Optional[str] = typer.Option(None, "--server", help="check a mail server (FQDN) instead"),
    stage: Optional[CheckStage] = typer.Option(
        None, "--stage", help="the MX plan to expect; default: inferred from the MX set served now"
    ),
    legacy_mx: Optional[str] = typer.Option(None, "--legacy-mx", help="the old server kept during the move"),
    addresses: list[str] = typer.Option([], "--address", help="the server's addresses; default: its A/AAAA"),
    as_json: bool = JSON,
) -> None:
    """A domain (MX plan, SPF, DMARC, MTA-STS/DANE hazards, authoritative servers) or a server
    (forward and reverse DNS, banner, STARTTLS) against the gateway's rules; exit 1 on any error."""

    async def work(settings: Settings) -> None:
        report = await control.run_check(settings, domain, server, stage.value if stage else None, legacy_mx, addresses)
        if as_json:
            print_json(report.to_json())
        else:
            console().print(report_view(report))
        if report.errors:
            raise typer.Exit(1)

    run(work)


@app.command("survey")
def survey_(
    file: Optional[Path] = typer.Argument(None, help="the domains, one a line (`#` starts a comment)"),
    zone: Optional[str] = typer.Option(
        None, "--zone", help="every name of ZONE with an MX, an SPF record or an address (AXFR with its TSIG key)"
    ),
    wave: Optional[Path] = typer.Option(
        None, "--wave", help="write the not-yet domains to this CSV file for `mailmove wave start`"
    ),
    concurrency: Optional[int] = typer.Option(
        None, "--concurrency", help="domains read at once (default: survey.concurrency)"
    ),
    as_json: bool = JSON,
) -> None:
    """Where each domain stands against the gateway's rules: behind, partly, not yet, no mail, or
    broken (with the reason); kept as the last survey for the dashboard."""

    async def work(settings: Settings) -> None:
        source, domains = await survey.domains_from(settings, file, zone)  # every name read before any is asked
        at_once = settings.survey.concurrency if concurrency is None else concurrency
        # checkdmarc reads in threads (mailmove/checks/records.py): one for each domain in flight
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max(at_once, 1)))
        columns = (*Progress.get_default_columns(), MofNCompleteColumn())
        with Progress(*columns, console=console(stderr=True), disable=as_json, transient=True) as bar:
            task = bar.add_task(f"surveying {escape(clean(source))}", total=len(domains))
            result = await survey.run_survey(settings, source, domains, at_once, lambda _: bar.advance(task))
        rows = survey.write_wave(wave, result) if wave else 0
        if as_json:
            print_json({**result.to_json(), "wave": {"file": str(wave), "rows": rows} if wave else None})
            return
        console().print(survey_view(result))
        if wave:
            console().print(
                f"wrote {rows} not-yet domain(s) to {escape(str(wave))}; start them with "
                f"`{escape(hints.wave_start(str(wave)))}`",
                highlight=False,
            )

    run(work)


@app.command("list")
def list_(kind: Optional[str] = typer.Option(None, help="domain or server"), as_json: bool = JSON) -> None:
    """Every migration, last changed first (from the database)."""

    async def work(settings: Settings) -> None:
        rows = await asyncio.to_thread(control.migrations, settings, kind)
        print_json(rows) if as_json else console().print(migration_table(rows))

    run(work)


@app.command("show")
def show_(
    id: str = typer.Argument(..., help="domain-move:<domain>, server-move:<fqdn>, or the bare name"),
    as_json: bool = JSON,
    watch: bool = typer.Option(False, "--watch", help="refresh every 2 s until the move ends"),
) -> None:
    """One migration: its stages, what it waits for, the ETA, and its history."""

    async def work(settings: Settings) -> None:
        client = await client_for(settings)
        wid = control.workflow_id(id, settings)
        await showing(
            lambda: control.show(client, settings, wid),
            lambda view: view.json(wid) if as_json else shown(view),
            until=lambda view: not watch or view.execution != "RUNNING",
        )

    run(work)


@app.command("confirm")
def confirm_(
    id: str = typer.Argument(...),
    stage: str = typer.Argument(..., help="the waiting stage, e.g. await_registration or await_cutover"),
    note: str = typer.Option("", "--note", help="recorded in the history"),
    lost: list[str] = typer.Option([], "--lost", help="a refused address accepted as lost (repeat)"),
) -> None:
    """Confirm a stage that waits for a person (or retry a stage that failed); at await_registration
    with refused addresses, check them again now and print the result."""

    async def work(settings: Settings) -> None:
        client = await client_for(settings)
        request = ConfirmInput(stage, actor(), note, lost=list(lost))
        console().print(as_text(await control.confirm(client, control.workflow_id(id, settings), request)))

    run(work)


@app.command("extend")
def extend_(
    id: str = typer.Argument(...),
    duration: str = typer.Argument(..., help="e.g. 3d, 12h"),
    note: str = typer.Option("", "--note"),
) -> None:
    """Give a waiting stage more time before it needs attention."""

    async def work(settings: Settings) -> None:
        seconds = parse_duration(duration, "duration")
        client = await client_for(settings)
        answer = await control.extend(client, control.workflow_id(id, settings), ExtendInput(seconds, actor(), note))
        console().print(as_text(answer))

    run(work)


@app.command("cancel")
def cancel_(id: str = typer.Argument(...), note: str = typer.Option("", "--note")) -> None:
    """Cancel a move and undo it: a domain move's MX set is restored (before `remove_legacy_mx`);
    a server move's firewall rules are removed and its new entry withdrawn (before `remove_old_tsl`)."""

    async def work(settings: Settings) -> None:
        client = await client_for(settings)
        answer = await control.cancel(client, control.workflow_id(id, settings), CancelInput(actor(), note))
        console().print(as_text(answer))

    run(work)


# -- guard ------------------------------------------------------------------------------------

GUARD_ID = typer.Argument(..., help="the move: domain-move:<domain>, server-move:<fqdn>, or the bare name")


@guard_app.command("list")
def guard_list(as_json: bool = JSON) -> None:
    """Every guard, with its drift (from the database)."""

    async def work(settings: Settings) -> None:
        rows = await asyncio.to_thread(guard.guards, settings)
        print_json(rows) if as_json else console().print(guard_table(rows))

    run(work)


@guard_app.command("show")
def guard_show(id: str = GUARD_ID, as_json: bool = JSON) -> None:
    """One guard: paused or not, its next run, and each drifting finding with its fix."""

    async def work(settings: Settings) -> None:
        view = await guard.show_guard(await client_for(settings), settings, control.workflow_id(id, settings))
        print_json(view.json()) if as_json else console().print(guard_view(view))

    run(work)


def _guard_action(id: str, as_json: bool, act: Callable[..., Awaitable[str]], *args: str) -> None:
    async def work(settings: Settings) -> None:
        wid = control.workflow_id(id, settings)
        answer = await act(await client_for(settings), settings, wid, actor(), *args)
        print_json({"id": wid, "result": answer}) if as_json else console().print(as_text(answer))

    run(work)


@guard_app.command("run")
def guard_run(id: str = GUARD_ID, as_json: bool = JSON) -> None:
    """Run the guard now (`guard show` has its drift once it has run)."""
    _guard_action(id, as_json, guard.run_guard)


@guard_app.command("pause")
def guard_pause(id: str = GUARD_ID, note: str = typer.Option("", "--note"), as_json: bool = JSON) -> None:
    """No runs until `guard resume`."""
    _guard_action(id, as_json, guard.pause_guard, note)


@guard_app.command("resume")
def guard_resume(id: str = GUARD_ID, note: str = typer.Option("", "--note"), as_json: bool = JSON) -> None:
    """Runs again on its schedule."""
    _guard_action(id, as_json, guard.resume_guard, note)


@guard_app.command("adopt")
def guard_adopt(as_json: bool = JSON) -> None:
    """A guard for every move done, including those done before guards existed (idempotent)."""

    async def work(settings: Settings) -> None:
        answers = await guard.adopt(await client_for(settings), settings)
        if as_json:
            print_json(answers)
            return
        made = sum(a["outcome"] == "made" for a in answers)
        console().print(f"{made} guard(s) made, {len(answers) - made} kept")

    run(work)


# -- sandbox ----------------------------------------------------------------------------------


def _sandbox(root: Optional[Path], ttl: int):
    root = (root or Path("var") / f"sandbox-{int(time.time())}").resolve()
    world = Sandbox(SandboxOptions(ttl=ttl, notify=2, root=root)).start()
    return world, world.write_config()


@sandbox_app.command("up")
def sandbox_up(root: Optional[Path] = typer.Option(None, help="where the world keeps its files"), ttl: int = 3) -> None:
    """Run the local world and the embedded stack; start moves against it from another terminal."""
    world, config = _sandbox(root, ttl)
    ctx.config = config

    async def work(settings: Settings) -> None:
        async with stack(settings):
            print_addresses(settings)
            console().print(
                f"\nsandbox: domain chem.sandbox.test, legacy host mail.chem.sandbox.test, portal {world.portal.url}\n"
                f"try:  mailmove --config {config} domain start chem.sandbox.test --legacy-mx mail.chem.sandbox.test\n"
                f"      mailmove --config {config} show chem.sandbox.test --watch\n"
                f"a server move (new server mx2.chem.sandbox.test at 127.0.0.2, firewall and relay test by hand):\n"
                f"      mailmove --config {config} server start --old mail.chem.sandbox.test "
                "--new mx2.chem.sandbox.test --new-ipv4 127.0.0.2 --institution Chemistry --admin ab12cdef "
                "--admin xy34ghij --contact postmaster@chem.sandbox.test --sender-domain chem.sandbox.test --no-agent"
            )
            await stop_on_signals().wait()

    run(work, cleanup=world.stop)


@sandbox_app.command("demo")
def sandbox_demo(
    root: Optional[Path] = typer.Option(None, help="where the world keeps its files"), ttl: int = 3
) -> None:
    """One domain move from start to `done` in the local world, in well under a minute."""
    world, config = _sandbox(root, ttl)
    ctx.config = config

    async def work(settings: Settings) -> None:
        out = console()
        async with stack(settings) as client:
            began = time.monotonic()
            request = DomainMoveRequest("chem.sandbox.test", "mail.chem.sandbox.test", actor=actor())
            move = await control.prepare_domain_move(settings, request)
            wid = await control.start_domain_move(client, settings, move)
            out.print(f"started {wid} (watch it too: mailmove --config {config} show {wid} --watch)\n")
            seen = ""
            while True:
                view = await control.show(client, settings, wid)
                if view.status and f"{view.status.stage}/{view.status.state.value}" != seen:
                    seen = f"{view.status.stage}/{view.status.state.value}"
                    out.print(f"{time.monotonic() - began:6.1f}s  {seen}")
                if view.execution != "RUNNING" and view.status:
                    out.print()
                    out.print(shown(view))
                    out.print(f"\nfinished in {time.monotonic() - began:.1f}s")
                    if view.execution != "COMPLETED":
                        raise typer.Exit(1)
                    return
                await asyncio.sleep(0.5)

    run(work, cleanup=world.stop)


if __name__ == "__main__":
    sys.exit(app())
