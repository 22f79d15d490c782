"""Rich views of migrations for the terminal (colour only on a tty, as Rich decides)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from mailmove.base import ids, postfix
from mailmove.base.model import MoveStatus, RelayTranscript
from mailmove.base.report import Report
from mailmove.base.vocabulary import Kind, MoveState, RowState, Stage, StageState, SurveyClass, Verdict
from mailmove.service.control import Shown
from mailmove.service.guard import GuardView
from mailmove.service.survey import SurveyResult
from mailmove.service.waves import WaveView

VERDICT_STYLE = {
    Verdict.OK: "green",
    Verdict.NOTICE: "cyan",
    Verdict.NOT_TESTED: "dim",
    Verdict.WARNING: "yellow",
    Verdict.ERROR: "bold red",
}

STATE_STYLE = {  # a move's, a stage's or a wave row's
    MoveState.DONE: "green",
    MoveState.RUNNING: "cyan",
    MoveState.WAITING: "yellow",
    MoveState.NEEDS_ATTENTION: "bold red",
    MoveState.FAILED: "red",
    MoveState.CANCELLED: "magenta",
    MoveState.CANCELLING: "magenta",
    StageState.PENDING: "dim",
    StageState.SKIPPED: "dim",
}


def clean(value: object) -> str:
    """A string from outside (an SMTP reply, a DNS answer, a note) as the terminal may show it:
    no control characters, so no escape sequence reaches the terminal. Line breaks stay."""
    return "".join(c if c.isprintable() or c == "\n" else "\ufffd" for c in str(value))


def plain(value: object, style: str = "") -> Text:
    """`clean(value)` as Rich text: never read as markup, so `[/]` is just two brackets."""
    return Text(clean(value), style=style)


def _when(at: datetime | None) -> str:
    if at is None:
        return ""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _styled(state: str) -> Text:
    return Text(state, style=STATE_STYLE.get(state, ""))


def migration_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{len(rows)} migration(s)", title_justify="left")
    for column in ("id", "stage", "state", "updated (UTC)"):
        table.add_column(column)
    for row in rows:
        ended = row["state"] in (MoveState.DONE, MoveState.CANCELLED)
        state = MoveState.NEEDS_ATTENTION if row["attention"] and not ended else row["state"]
        table.add_row(plain(row["id"]), plain(row["stage"]), _styled(state), _when(row["updated_at"]))
    return table


def shown(view: Shown) -> Group:
    parts: list[Any] = []
    status = view.status
    if status is None:
        parts.append(plain(view.note, style="yellow"))
    else:
        head = Text.assemble(
            (clean(status.workflow_id), "bold"), "  ", _styled(status.state.value), f"  stage {clean(status.stage)}"
        )
        if status.eta:
            head.append(f"  ETA {_when(status.eta)} UTC")
        parts.append(head)
        stages = Table(show_edge=False)
        for column in ("stage", "state", "started", "ended", "tries", "waiting for / detail"):
            stages.add_column(column, overflow="fold")
        for s in status.stages:
            info = s.waiting_for if s.state == StageState.WAITING else s.detail
            if s.last_error and s.state not in (StageState.DONE, StageState.SKIPPED):
                info = f"{info}\nlast error: {s.last_error}".strip()
            if s.eta and s.state in (StageState.WAITING, StageState.RUNNING):
                info += f"\nETA {_when(s.eta)} UTC"
            stages.add_row(
                plain(s.name),
                _styled(s.state.value),
                _when(s.started),
                _when(s.ended),
                str(s.attempts or ""),
                plain(info),
            )
        parts.append(stages)
        if status.records_to_set:
            parts.append(
                plain("Records to set in the zone:\n  " + "\n  ".join(status.records_to_set), style="bold yellow")
            )
        if status.form:
            parts.append(
                plain(
                    "Form to file:\n  " + "\n  ".join(f"{k}: {v}" for k, v in status.form.items()), style="bold yellow"
                )
            )
        for alert in status.alerts:
            parts.append(plain(f"! {alert}", style="red"))
        if status.authoritative:
            parts.append(
                plain(
                    "authoritative: "
                    + "; ".join(
                        f"{v.address} {'ok' if v.ok else 'differs'} serial {v.serial}" for v in status.authoritative
                    )
                )
            )
        if status.resolvers:
            parts.append(
                plain(
                    "resolvers: "
                    + "; ".join(
                        f"{v.resolver} {'new set' if v.serves_target else 'old set'} ttl {v.ttl}"
                        for v in status.resolvers
                    )
                )
            )
        if status.kind == Kind.SERVER:
            parts += server_parts(status)
        if status.message:
            parts.append(plain(status.message, style="green" if status.state == MoveState.DONE else ""))
    for stage, report in view.reports.items():
        parts.append(report_lines(stage, report))
    if view.audit:
        audit = Table(title="history", title_justify="left", show_edge=False)
        for column in ("at (UTC)", "who", "action", "stage", "detail"):
            audit.add_column(column, overflow="fold")
        for e in view.audit[-15:]:
            audit.add_row(_when(e["at"]), *(plain(e[k]) for k in ("actor", "action", "stage", "detail")))
        parts.append(audit)
    return Group(*parts)


def server_parts(status: MoveStatus) -> list[Any]:
    """What a server move adds: warnings, the firewall rules and MTA lines to set, the relay test."""
    parts: list[Any] = [plain(f"! {w}", style="yellow") for w in status.warnings]
    current = next(s for s in status.stages if s.name == status.stage)
    if status.firewall and status.stage == Stage.OPEN_FIREWALL and current.state == StageState.WAITING:
        parts.append(Text("Firewall rules to apply (nftables; iptables and ufw in --json):", style="bold yellow"))
        parts.append(plain(status.firewall.nftables))
    if status.firewall_change:
        change = status.firewall_change
        parts.append(plain(f"firewall: {change.detail}" + "".join(f"\n  + {a}" for a in change.added)))
    if status.postfix:
        parts.append(plain("Postfix main.cf for the relay:\n  " + "\n  ".join(status.postfix)))
    for mta, lines in status.other_mtas.items():
        parts.append(plain(f"{mta} instead:\n  " + "\n  ".join(lines)))
    if change := status.postfix_change:
        parts.append(plain(f"Postfix: {change.detail}; main.cf before: {postfix.shown(change.previous)}"))
    if probe := status.mta_probe:
        parts.append(
            plain(f"probe message {probe.message_id} ({probe.queue_id}) relayed by {probe.relay}: {probe.answer}")
        )
    if status.transcript:
        parts.append(plain(f"relay test: {status.transcript.verdict}: {status.transcript.cause}"))
        parts.append(swaks(status.transcript))
    return parts


def swaks(transcript: RelayTranscript) -> Text:
    """The dialogue as swaks prints it: `->` sent, `<-` received, `~>`/`<~` inside TLS."""
    out = Text()
    out.append(
        clean(f"=== Trying {transcript.relay}" + (f" from {transcript.source}" if transcript.source else "")) + "\n"
    )
    encrypted = False
    for step in transcript.steps:
        if step.step == "tls":
            out.append(f"=== {clean(step.reply)}\n", style="cyan" if step.ok else "red")
            if transcript.tls and step.ok:
                out.append(f"=== certificate SHA-256 {transcript.tls.fingerprint}\n", style="cyan")
                encrypted = True
            continue
        sent, got = ("~>", "<~") if encrypted else ("->", "<-")
        if step.sent:
            out.append(f" {sent} {clean(step.sent)}\n")
        lines = clean(step.reply).splitlines() or [""]
        code = "" if step.code is None else str(step.code)
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            out.append(f"{got}  {code}{sep if code else ''}{line}\n", style="" if step.ok else "red")
    return out


def step_verdicts(transcript: RelayTranscript) -> Table:
    table = Table(show_edge=False, title=f"verdict: {transcript.verdict}", title_justify="left")
    for column in ("step", "reply", "verdict"):
        table.add_column(column, overflow="fold")
    for step in transcript.steps:
        reply = f"{step.code or ''} {step.reply.splitlines()[0] if step.reply else ''}".strip()
        table.add_row(
            plain(step.step),
            plain(reply),
            Text("ok" if step.ok else "FAILED", style="green" if step.ok else "bold red"),
        )
    return table


def report_view(report: Report) -> Group:
    """A check report grouped as a person reads it: DNS, MX, SPF, … with the fix under each finding."""
    title = f"{report.kind} {report.subject}" + (f", stage {report.stage}" if report.stage else "")
    table = Table(title=f"check of {title} at {report.checked_at}", title_justify="left", show_lines=False)
    for column in ("", "check", "finding"):
        table.add_column(column, overflow="fold")
    group = None
    for check in sorted(report.checks, key=lambda c: _group_order(report, c.group)):
        if check.group != group:
            group = check.group
            table.add_section()
            table.add_row("", plain(group, style="bold"), "")
        finding = plain(check.summary)
        for label, values in (("seen", check.observed), ("wanted", check.expected)):
            for value in values:
                finding.append(f"\n  {label}: {clean(value)}", style="dim")
        if check.reason:
            finding.append(f"\n  why: {clean(check.reason)}", style="dim")
        if check.fix and check.verdict not in (Verdict.OK, Verdict.NOT_TESTED):
            finding.append(f"\n  fix: {clean(check.fix)}", style=VERDICT_STYLE[check.verdict])
        table.add_row(
            Text(check.verdict.replace("_", " "), style=VERDICT_STYLE[check.verdict]), plain(check.id), finding
        )
    worst = report.worst
    summary = Text(f"{report.summary()}", style=VERDICT_STYLE[worst if worst != Verdict.NOT_TESTED else Verdict.OK])
    return Group(table, *(plain(n, style="dim") for n in report.notes), summary)


def report_lines(stage: str, report: Report) -> Text:
    """A stored report in brief: its summary, and each warning and error with its fix."""
    text = plain(f"check at {stage} ({report.checked_at}): {report.summary()}", style="bold")
    for c in report.with_verdict(Verdict.ERROR, Verdict.WARNING):
        text.append(clean(f"\n  {c.verdict} {c.id}: {c.summary}"), style=VERDICT_STYLE[c.verdict])
        text.append(clean(f"\n    fix: {c.fix}"))
    return text


def _group_order(report: Report, group: str) -> int:
    """Groups in the order the checks ran, so related findings stay together."""
    return [c.group for c in report.checks].index(group)


def wave_view(view: WaveView) -> Group:
    """The wave's progress bar, its counts, and the rows that need a person."""
    status = view.status
    total, ended = status.total, view.finished_rows()
    counts = ", ".join(f"{n} {state}" for state, n in status.counts().items())
    head = Text.assemble(
        (clean(ids.workflow_id(Kind.WAVE, status.name)), "bold"), f"  {ended}/{total} finished  ({counts})"
    )
    head.append(f"  at most {status.concurrency} at once, {status.rate:g} a minute", style="dim")
    parts: list[Any] = [head, ProgressBar(total=total or 1, completed=ended, width=60)]
    attention = view.attention()
    if attention:
        table = Table(title=f"{len(attention)} need attention", title_justify="left", show_edge=False)
        for column in ("line", "id", "stage", "state"):
            table.add_column(column)
        for line, wid, stage, state in attention:
            table.add_row(str(line), plain(wid), plain(stage), _styled(state))
        parts.append(table)
    failed = [r for r in status.rows if r.state in (RowState.FAILED, RowState.REFUSED)]
    for row in failed:
        parts.append(plain(f"line {row.line} {row.workflow_id}: {row.state}: {row.message}", style="red"))
    return Group(*parts)


CLASS_STYLE = {
    SurveyClass.BEHIND: "green",
    SurveyClass.PARTLY: "yellow",
    SurveyClass.NOT_YET: "cyan",
    SurveyClass.NO_MAIL: "dim",
    SurveyClass.BROKEN: "bold red",
}


def survey_view(result: SurveyResult) -> Group:
    """Every domain of a survey with its class and what was found, then the counts per class.
    Each cell that came from DNS is plain text: a TXT record's `[bold]` stays two brackets."""
    table = Table(title=plain(f"survey of {result.source}"), title_justify="left")
    for column in ("domain", "class", "MX (TTL)", "SPF", "DMARC", "move", "why; hazards"):
        table.add_column(column, overflow="fold")
    for d in result.domains:
        mx = "\n".join(f"{r.preference} {r.exchange}" for r in d.mx) + (f"\n(TTL {d.mx_ttl} s)" if d.mx else "")
        gateway = {True: ", covers the gateway", False: ", not the gateway", None: ""}[d.spf_gateway]
        move = f"{d.move.state} ({d.move.stage})" if d.move else ""
        table.add_row(
            plain(d.domain),
            Text(d.survey_class.value, style=CLASS_STYLE[d.survey_class]),
            plain(mx),
            plain(f"{d.spf}{gateway}" + (f"\n{d.spf_record}" if d.spf_record else "")),
            plain(f"{d.dmarc} {d.dmarc_policy}".strip()),
            plain(move),
            plain("\n".join([d.reason, *(f"hazard: {h}" for h in d.hazards)])),
        )
    counts = Table(title="counts", title_justify="left", show_edge=False)
    for column in ("class", "domains"):
        counts.add_column(column)
    for cls, n in result.counts().items():
        counts.add_row(Text(cls, style=CLASS_STYLE[SurveyClass(cls)]), str(n))
    rate = result.queries / result.seconds if result.seconds else 0
    took = f"{len(result.domains)} domains in {result.seconds:.1f} s, {result.queries} DNS queries ({rate:.0f}/s)"
    return Group(table, counts, Text(took, style="dim"))


def guard_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{len(rows)} guard(s)", title_justify="left")
    for column in ("id", "drift", "since (UTC)", "last run (UTC)"):
        table.add_column(column)
    for row in rows:
        drift = Text(", ".join(row["drift"]), style="bold red") if row["drift"] else Text("none", style="green")
        table.add_row(plain(row["id"]), drift, _when(row["drift_since"]), _when(row["last_run_at"]))
    return table


def guard_view(view: GuardView) -> Group:
    """A guard: its schedule (paused, next run), and each drifting finding with its fix."""
    row, schedule = view.row, view.schedule
    head = Text.assemble((clean(row["schedule_id"]), "bold"), f"  {schedule.state}")
    if schedule.next_run:
        head.append(f"  next run {_when(schedule.next_run)}")
    if row["last_run_at"]:
        head.append(f"  last run {_when(row['last_run_at'])}")
    parts: list[Any] = [head]
    parts += [plain(text, style="dim") for text in (schedule.reason, view.note) if text]
    if not view.drift:
        parts.append(Text("no drift since the move was done", style="green"))
    for c in view.drift:
        text = plain(f"{c.verdict} {c.id}: {c.summary}", style=VERDICT_STYLE.get(c.verdict, ""))
        if c.fix:
            text.append(clean(f"\n  fix: {c.fix}"))
        parts.append(text)
    return Group(*parts)


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, soft_wrap=False)
