"""Rich views of migrations for the terminal (colour only on a tty, as Rich decides)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from checks.report import Report
from mailmove.control import Shown
from mailmove.waves import WaveView
from workflows.model import MoveStatus, RelayTranscript, StageState

VERDICT_STYLE = {
    "ok": "green",
    "notice": "cyan",
    "not_tested": "dim",
    "warning": "yellow",
    "error": "bold red",
}

STATE_STYLE = {
    "done": "green",
    "running": "cyan",
    "waiting": "yellow",
    "needs_attention": "bold red",
    "failed": "red",
    "cancelled": "magenta",
    "cancelling": "magenta",
    "pending": "dim",
    "skipped": "dim",
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
        state = "needs_attention" if row["attention"] and row["state"] not in ("done", "cancelled") else row["state"]
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
        if status.kind == "server":
            parts += server_parts(status)
        if status.message:
            parts.append(plain(status.message, style="green" if status.state.value == "done" else ""))
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
    if status.firewall and status.stage == "open_firewall" and current.state == StageState.WAITING:
        parts.append(Text("Firewall rules to apply (nftables; iptables and ufw in --json):", style="bold yellow"))
        parts.append(plain(status.firewall.nftables))
    if status.firewall_change:
        change = status.firewall_change
        parts.append(plain(f"firewall: {change.detail}" + "".join(f"\n  + {a}" for a in change.added)))
    if status.postfix:
        parts.append(plain("Postfix main.cf for the relay:\n  " + "\n  ".join(status.postfix)))
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
        if check.fix and check.verdict not in ("ok", "not_tested"):
            finding.append(f"\n  fix: {clean(check.fix)}", style=VERDICT_STYLE[check.verdict])
        table.add_row(
            Text(check.verdict.replace("_", " "), style=VERDICT_STYLE[check.verdict]), plain(check.id), finding
        )
    worst = report.worst
    summary = Text(f"{report.summary()}", style=VERDICT_STYLE[worst if worst != "not_tested" else "ok"])
    return Group(table, *(plain(n, style="dim") for n in report.notes), summary)


def report_lines(stage: str, report: Report) -> Text:
    """A stored report in brief: its summary, and each warning and error with its fix."""
    text = plain(f"check at {stage} ({report.checked_at}): {report.summary()}", style="bold")
    for c in report.with_verdict("error", "warning"):
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
    head = Text.assemble((clean(f"wave:{status.name}"), "bold"), f"  {ended}/{total} finished  ({counts})")
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
    failed = [r for r in status.rows if r.state in ("failed", "refused")]
    for row in failed:
        parts.append(plain(f"line {row.line} {row.workflow_id}: {row.state}: {row.message}", style="red"))
    return Group(*parts)


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, soft_wrap=False)
