"""The commands mailmove tells a person to run, as the CLI takes them: one place for their form.

Workflows put them in what a stage waits for (stored in the audit trail and in e-mails), the
CLI and the service in their answers; each caller quotes them as its text needs.
"""

from mailmove.base.model import RelayTestQuery


def confirm(wid: str, stage: str, lost: bool = False) -> str:
    """Release a stage that waits for a person, or retry one that failed; `lost`: the form that
    accepts refused addresses as lost."""
    return f"mailmove confirm {wid} {stage}" + (" --lost ADDRESS…" if lost else "")


def show(wid: str) -> str:
    return f"mailmove show {wid}"


def guard(action: str, wid: str) -> str:
    """`mailmove guard show|run|pause|resume` of a finished move's guard."""
    return f"mailmove guard {action} {wid}"


def wave_show(name: str) -> str:
    return f"mailmove wave show {name}"


def wave_start(path: str) -> str:
    return f"mailmove wave start {path}"


def host_agent(fqdn: str) -> str:
    """The host agent, run on the mail server itself."""
    return f"mailmove worker --host {fqdn}"


def relay_test(q: RelayTestQuery) -> str:
    """The relay test of `q` by hand, on the server it is run from."""
    return (
        f"mailmove relay-test --relay {q.relay} --helo {q.helo} --mail-from {q.mail_from} "
        f"--rcpt {q.rcpt} --source {q.source}" + (" --send" if q.send else "") + ("" if q.relay.tls else " --no-tls")
    )
