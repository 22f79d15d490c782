"""Custom search attributes; `mailmove up` and the bootstrap register them on the cluster."""

from temporalio.common import SearchAttributeKey

KIND = SearchAttributeKey.for_keyword("MigrationKind")
SUBJECT = SearchAttributeKey.for_keyword("MigrationDomain")
STAGE = SearchAttributeKey.for_keyword("MigrationStage")
STATE = SearchAttributeKey.for_keyword("MigrationState")

ALL = (KIND, SUBJECT, STAGE, STATE)
