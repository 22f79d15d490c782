"""The error a person sees for one bad input: it names the field to fix (the API's 422
`{"field", "message"}`, the CLI's exit 2). A module of its own, so that the parsers
`mailmove.inputs` builds on (the address lists) raise it too."""

from __future__ import annotations


class FieldError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
