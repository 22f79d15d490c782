"""The telnet-style relay test against aiosmtpd relay stand-ins with trustme certificates, the
relay's name resolved by the sandbox's real BIND: each misbehaving relay gives its verdict."""

from __future__ import annotations

import email
import hashlib
import ssl

import pytest

from activities.dns import DnsActivities
from activities.relay_test import run_relay_test
from mailmove.base.config import Settings, load_settings
from mailmove.base.model import Relay, RelayTestQuery
from mailmove.sandbox.smtp import RelayHandler, SmtpServer
from mailmove.sandbox.world import RELAYS, Sandbox, SandboxOptions

pytestmark = [pytest.mark.bind, pytest.mark.slow]  # a sandbox (BIND) for the relays' names

NAME = RELAYS["external"]  # every stand-in answers as mailout (its name resolves to 127.0.0.1)
SERVER = "mx2.chem.sandbox.test"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Sandbox:
    world = Sandbox(SandboxOptions(root=tmp_path_factory.mktemp("relay-world"))).start()
    yield world
    world.stop()


@pytest.fixture(scope="module")
def settings(world: Sandbox) -> Settings:
    return load_settings(world.write_config())


@pytest.fixture
def relay(world: Sandbox):
    started = []

    def start(handler: RelayHandler | None = None, names: list[str] | None = None, **options) -> SmtpServer:
        server = SmtpServer(handler or RelayHandler(), world.ca, names or [NAME], **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


async def relay_test(settings: Settings, server: SmtpServer, tls: bool = True, **query):
    options = {"mail_from": "postmaster@chem.sandbox.test", "rcpt": "someone@example.org", "source": "127.0.0.2"}
    q = RelayTestQuery(Relay(NAME, server.port, tls), SERVER, **{**options, **query}, probe_id="probe-1")
    return await run_relay_test(q, settings.smtp, DnsActivities(settings).addresses)


def steps(transcript) -> list[tuple[str, int | None, bool]]:
    return [(s.step, s.code, s.ok) for s in transcript.steps]


async def test_a_relay_that_requires_starttls_and_permits_relaying(settings, relay):
    handler = RelayHandler()
    server = relay(handler)
    t = await relay_test(settings, server, send=True)
    assert t.verdict == "passed" and t.passed
    assert steps(t) == [
        ("banner", 220, True),
        ("ehlo", 250, True),
        ("starttls", 220, True),
        ("tls", None, True),
        ("ehlo", 250, True),
        ("mail", 250, True),
        ("rcpt", 250, True),
        ("data", 250, True),
        ("quit", 221, True),
    ]
    assert [s.sent for s in t.steps if s.sent][:2] == [f"EHLO {SERVER}", "STARTTLS"]
    assert t.tls.version in ("TLSv1.2", "TLSv1.3") and NAME in t.steps[3].reply
    assert t.queue_id == "Q000001" and "queued as Q000001" in t.cause
    # from the server's own address, encrypted, and the message has what the gateway demands
    seen = handler.seen[-1]
    assert (seen.peer, seen.helo, seen.tls) == ("127.0.0.2", SERVER, True)
    message = email.message_from_bytes(handler.messages[-1])
    assert message["Date"] and message["Message-ID"].startswith("<") and message["X-Mailmove-Probe"] == "probe-1"
    assert (message["From"], message["To"]) == ("postmaster@chem.sandbox.test", "someone@example.org")
    assert "probe-1" in message["Subject"]


async def test_the_fingerprint_is_the_certificates(settings, relay, world):
    server = relay()
    t = await relay_test(settings, server)
    der = ssl.PEM_cert_to_DER_cert(_served_cert(world, server))
    assert t.tls.fingerprint.replace(":", "") == hashlib.sha256(der).hexdigest().upper()


def _served_cert(world: Sandbox, server: SmtpServer) -> str:
    """The relay's certificate, fetched by a STARTTLS dialogue of the standard library's own."""
    import smtplib

    context = ssl.create_default_context(cafile=str(world.ca_file))
    context.check_hostname = False  # smtplib would check the address it connected to
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname=SERVER, timeout=5) as smtp:
        smtp.starttls(context=context)
        return ssl.DER_cert_to_PEM_cert(smtp.sock.getpeercert(binary_form=True))


async def test_relaying_denied_names_the_list_entry(settings, relay):
    server = relay(RelayHandler(permits=lambda peer, helo: False))
    t = await relay_test(settings, server)
    assert t.verdict == "relay_denied"
    assert steps(t)[-1] == ("rcpt", 554, False)
    assert "5.7.1" in t.steps[-1].reply and "TrustedServerList" in t.cause


async def test_no_starttls_is_refused(settings, relay):
    server = relay(starttls=False)
    t = await relay_test(settings, server)
    assert t.verdict == "tls_refused"
    assert steps(t)[-1] == ("starttls", None, False)
    assert "does not offer STARTTLS" in t.cause
    assert not any(s.step == "mail" for s in t.steps)  # nothing is sent in clear


async def test_only_tls_older_than_1_2(settings, relay):
    try:
        server = relay(tls_max=ssl.TLSVersion.TLSv1_1)
    except ssl.SSLError as exc:  # an OpenSSL build without the old protocols at all
        pytest.skip(f"this OpenSSL cannot even offer TLS 1.1: {exc}")
    t = await relay_test(settings, server)
    assert t.verdict == "tls_refused", t
    assert steps(t)[-1] == ("tls", None, False)
    assert "TLS 1.2" in t.cause


async def test_a_certificate_for_another_name(settings, relay):
    server = relay(names=["smtp.elsewhere.example"])
    t = await relay_test(settings, server)
    assert t.verdict == "certificate"
    assert NAME in t.cause and "mismatch" in t.cause.lower()


async def test_greylisting_is_retry_later_then_passes(settings, relay):
    server = relay(RelayHandler(greylist=1))
    first = await relay_test(settings, server)
    assert first.verdict == "retry" and steps(first)[-1] == ("rcpt", 451, False)
    assert "try again later" in first.cause
    second = await relay_test(settings, server)
    assert second.passed


async def test_a_sender_the_relay_refuses(settings, relay):
    server = relay(RelayHandler(refused_senders=("nobody@chem.sandbox.test",)))
    t = await relay_test(settings, server, mail_from="nobody@chem.sandbox.test")
    assert t.verdict == "sender_rejected" and steps(t)[-1] == ("mail", 553, False)
    assert "receives mail" in t.cause


async def test_plain_smtp_for_mailout_unsecure_warns(settings, relay):
    handler = RelayHandler()
    server = relay(handler, starttls=False)
    t = await relay_test(settings, server, tls=False)
    assert t.passed and t.tls is None
    assert handler.seen[-1].tls is False
    assert any("only to campus addresses" in w for w in t.warnings)


async def test_nothing_listening(settings, world):
    from mailmove.sandbox.bind import free_port

    q = RelayTestQuery(Relay(NAME, free_port(), True), SERVER, "postmaster@chem.sandbox.test", "a@example.org")
    t = await run_relay_test(q, settings.smtp, DnsActivities(settings).addresses)
    assert t.verdict == "unreachable" and "could not connect" in t.cause
    assert steps(t) == [("connect", None, False)]
