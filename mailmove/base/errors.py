"""The errors a person sees, one hierarchy: each names the field to fix (empty when no one field
is to blame) and says what is wrong. The kind says what the person can do about it; the CLI maps
each kind to its exit status (mailmove/cli.py), the dashboard to its HTTP status
(mailmove/dashboard/problems.py), and nothing reads the message to tell them apart. A workflow
refusing an update sends its Conflict through Temporal as a `rejection`."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

REJECTED = "Rejected"  # the type of a workflow's update rejection (see `rejection`)


class MailmoveError(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class BadInput(MailmoveError, ValueError):
    """A value a person gave is wrong: a name, an option, a row of a wave file."""


class ConfigError(MailmoveError, ValueError):
    """A configuration value is wrong; `field` names it as a dotted TOML key."""


class NotFound(MailmoveError):
    """No such migration, wave or token (or none this person may see)."""


class Conflict(MailmoveError):
    """Well-formed, but not possible now: the move is already running, the stage is not waiting."""


def rejection(field: str, message: str) -> ApplicationError:
    """A Conflict as a workflow's update validator raises it: Temporal carries the field and the
    message apart in the details, and the failure reads as the Conflict would."""
    return ApplicationError(str(Conflict(field, message)), field, message, type=REJECTED, non_retryable=True)


def conflict_of(failure: BaseException | None) -> Conflict:
    """The Conflict of an update that failed: a rejection's field and message, or any other failure's text."""
    if isinstance(failure, ApplicationError) and failure.type == REJECTED:
        return Conflict(*failure.details)
    return Conflict("", getattr(failure, "message", None) or str(failure))
