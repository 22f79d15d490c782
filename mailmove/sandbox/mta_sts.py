"""An MTA-STS policy host (RFC 8461 §3.3) for the sandbox: HTTPS with a certificate from the
sandbox CA for every `mta-sts.<domain>` it serves, the policy chosen by the Host header."""

from __future__ import annotations

import tempfile
from pathlib import Path

import trustme
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from mailmove.sandbox.portal import HttpServer


def policy_text(mode: str, max_age: int, mx: list[str]) -> str:
    return "\r\n".join(["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}", ""])


class MtaStsServer(HttpServer):
    def __init__(self, ca: trustme.CA, policies: dict[str, str], port: int | None = None):
        """`policies`: domain -> policy text, served at https://mta-sts.<domain>/.well-known/mta-sts.txt."""
        api = FastAPI()

        @api.get("/.well-known/mta-sts.txt")
        def policy(request: Request) -> PlainTextResponse:
            host = request.headers.get("host", "").rsplit(":", 1)[0].lower()
            domain = host.removeprefix("mta-sts.")
            if domain not in policies:
                return PlainTextResponse("no policy here\n", status_code=404)
            return PlainTextResponse(policies[domain])

        cert = ca.issue_cert(*(f"mta-sts.{d}" for d in policies))
        directory = Path(tempfile.mkdtemp(prefix="mailmove-mta-sts-"))
        cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
        cert.private_key_pem.write_to_path(str(directory / "key.pem"))
        super().__init__(api, "mta-sts", port, tls=(str(directory / "cert.pem"), str(directory / "key.pem")))
