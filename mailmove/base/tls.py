"""The TLS client context every outgoing connection of mailmove uses, one per CA file.

Building a context loads the system's trust store, tens of milliseconds of CPU; made per
connection, it was the largest cost of a move's activities (bench/wave). A context is safe
to share once configured, so it is built once per process: a changed CA file takes effect
when the worker restarts.
"""

from __future__ import annotations

import ssl
from functools import cache


@cache
def tls_context(ca_file: str = "") -> ssl.SSLContext:
    """Certificates verified against the system's CAs (and `ca_file`'s), TLS 1.2 or newer."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
