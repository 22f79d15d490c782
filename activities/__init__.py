"""Every side effect of mailmove, as Temporal activities bound to the worker's settings."""
