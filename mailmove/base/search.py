"""Custom search attributes; `mailmove up` and the bootstrap register them on the cluster.

A move's kind and subject are set when it starts, its state whenever the state changes: the
query `MigrationState = 'needs_attention'` finds every move that waits for a person. The stage
is the `status` query's and the store's (dashboard, `mailmove list`): as an attribute it was a
visibility write at every stage. `MigrationStage` stays registered for moves started before.
"""

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from mailmove.base.vocabulary import MoveState, Stage

KIND = SearchAttributeKey.for_keyword("MigrationKind")
SUBJECT = SearchAttributeKey.for_keyword("MigrationDomain")
STAGE = SearchAttributeKey.for_keyword("MigrationStage")
STATE = SearchAttributeKey.for_keyword("MigrationState")

ALL = (KIND, SUBJECT, STAGE, STATE)
# (stage, state) of every move when it starts: both moves begin with preflight
STARTED = (Stage.PREFLIGHT, MoveState.RUNNING)


def at_start(kind: str, subject: str) -> TypedSearchAttributes:
    """A move's attributes when it starts, from the CLI or from a wave."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(KIND, kind),
            SearchAttributePair(SUBJECT, subject),
            SearchAttributePair(STATE, STARTED[1]),
        ]
    )
