"""Custom search attributes; `mailmove up` and the bootstrap register them on the cluster."""

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

KIND = SearchAttributeKey.for_keyword("MigrationKind")
SUBJECT = SearchAttributeKey.for_keyword("MigrationDomain")
STAGE = SearchAttributeKey.for_keyword("MigrationStage")
STATE = SearchAttributeKey.for_keyword("MigrationState")

ALL = (KIND, SUBJECT, STAGE, STATE)
STARTED = ("preflight", "running")  # (stage, state) of every move when it starts: both moves begin with preflight


def at_start(kind: str, subject: str) -> TypedSearchAttributes:
    """A move's attributes when it starts, from the CLI or from a wave."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(KIND, kind),
            SearchAttributePair(SUBJECT, subject),
            SearchAttributePair(STAGE, STARTED[0]),
            SearchAttributePair(STATE, STARTED[1]),
        ]
    )
