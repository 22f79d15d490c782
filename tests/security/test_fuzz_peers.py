"""Fuzzing what remote peers say, as the checks and the relay test read it: SMTP replies from a
scripted SMTP peer, and SPF, DMARC and MTA-STS TXT strings from a scripted DNS server, both on
loopback. The checks run whole (`DomainChecks.run`, `ServerChecks.run`, `run_relay_test`, the
gateway probe's activities) through the worker's own DNS and SMTP code.

The property: whatever a peer answers, the result is a report that keeps the schema, a
transcript with a known verdict, or the probe's result or its ApplicationError; never an
exception that escapes the check, and never a hang (a peer that stops answering is cut off
by the timeouts).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import jsonschema
import pytest
from dns.rdtypes.ANY.TXT import TXT
from hypothesis import example, given
from hypothesis import strategies as st
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.dns import DnsActivities
from activities.relay_test import run_relay_test
from activities.smtp_probe import ProbeActivities
from mailmove.base.config import parse_settings
from mailmove.base.model import AddressProbe, AddressReport, ProbeQuery, ProbeResult, Relay, RelayTestQuery
from mailmove.base.postfix import PARAMETERS, mismatches
from mailmove.base.report import DomainCheckQuery, ServerCheckQuery
from mailmove.checks import records
from mailmove.checks.domain import DomainChecks
from mailmove.checks.server import ServerChecks
from tests.support.fuzzing import addresses, digits, junk, names
from tests.support.reports import SCHEMA

pytestmark = [pytest.mark.slow]  # hundreds of whole checks against scripted peers

DOMAIN = "chem.tu-darmstadt.de"
SERVER = "mx." + DOMAIN
VERDICTS = {
    "passed",
    "retry",
    "unreachable",
    "relay_denied",
    "tls_refused",
    "certificate",
    "sender_rejected",
    "rejected",
}


@dataclass
class ScriptedDns:
    """An authoritative server for DOMAIN on a loopback UDP port: the TXT records in `txt` (the
    fuzzed strings), an SOA and an MX for the zone, the server's address; no other record."""

    txt: dict[str, list[list[bytes]]] = field(default_factory=dict)  # name -> records -> strings
    fixed = {
        (DOMAIN, "SOA"): [f"ns.{DOMAIN}. hostmaster.{DOMAIN}. 1 3600 600 86400 300"],
        (DOMAIN, "MX"): [f"10 {SERVER}."],
        (SERVER, "A"): ["127.0.0.1"],
    }

    def start(self) -> ScriptedDns:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()
        return self

    def serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return  # closed at the end of the module
            self.sock.sendto(self.answer(dns.message.from_wire(data)).to_wire(), peer)

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        kind = dns.rdatatype.to_text(question.rdtype)
        if (name, kind) in self.fixed:
            reply.answer.append(dns.rrset.from_text(question.name, 300, "IN", kind, *self.fixed[(name, kind)]))
        elif kind == "TXT" and self.txt.get(name):
            rrset = dns.rrset.RRset(question.name, dns.rdataclass.IN, dns.rdatatype.TXT)
            for strings in self.txt[name]:
                rrset.add(TXT(dns.rdataclass.IN, dns.rdatatype.TXT, strings), 300)
            reply.answer.append(rrset)
        elif not (name == DOMAIN or name.endswith("." + DOMAIN)):
            reply.set_rcode(dns.rcode.NXDOMAIN)  # includes outside the zone lead nowhere: void lookups
        return reply


@dataclass
class ScriptedSmtp:
    """An SMTP peer on a loopback port: greets with the first reply of `script`, answers
    whatever it hears with the next one, and hangs up when the script ends or the client is
    silent for a moment (a client waiting for the rest of a line then sees the end)."""

    script: list[bytes] = field(default_factory=list)

    async def start(self) -> ScriptedSmtp:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for reply in self.script:
                writer.write(reply)
                await writer.drain()
                if not await asyncio.wait_for(reader.read(65536), 0.2):
                    break
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()


@pytest.fixture(scope="module")
async def peers(tmp_path_factory):
    dns_server = ScriptedDns().start()
    smtp = await ScriptedSmtp().start()
    resolver = f"127.0.0.1:{dns_server.port}"
    settings = parse_settings(
        {
            "dns": {"resolvers": [resolver], "timeout": 1, "zones": {DOMAIN: {"authoritative": [resolver]}}},
            "check": {"smtp_port": smtp.port, "timeout": 2},
            "smtp": {"timeout": 1, "helo": SERVER},
        },
        tmp_path_factory.mktemp("fuzz-peers"),
    )
    yield settings, dns_server, smtp
    dns_server.sock.close()
    smtp.server.close()


def schema_kept(report) -> None:
    jsonschema.validate(json.loads(json.dumps(report.to_json())), SCHEMA)


# -- DNS: SPF, DMARC and MTA-STS records as TXT strings -------------------------------------------

_qualifier = st.sampled_from(["", "+", "-", "~", "?"])
_spf_terms = st.one_of(
    st.builds("{}ip4:{}".format, _qualifier, st.one_of(addresses, st.builds("{}/{}".format, addresses, digits))),
    st.builds("{}ip6:{}".format, _qualifier, st.one_of(addresses, st.builds("{}/{}".format, addresses, digits))),
    st.builds("include:{}".format, st.one_of(st.sampled_from([f"inc.{DOMAIN}", DOMAIN, "_spf.tu-darmstadt.de"]), names)),
    st.sampled_from(
        ["a", "mx", "ptr", "-all", "~all", "?all", "all", f"redirect=inc.{DOMAIN}", "exp=x", f"exists:%{{i}}.{DOMAIN}",
         f"a:{SERVER}", f"mx:{DOMAIN}/24", "a//64", "ip4:130.83.156.224/27", "ip6:2001:41b8:83f:1610::/64", "v=spf1"]
    ),
    junk,
)  # fmt: skip
spf_records = st.lists(_spf_terms, max_size=6).map(lambda terms: " ".join(["v=spf1", *terms]))
_dmarc_tags = st.one_of(
    st.builds(
        "{}={}".format,
        st.sampled_from(["p", "sp", "np", "rua", "ruf", "pct", "adkim", "aspf", "fo", "ri", "rf", "t", "psd"]),
        st.one_of(
            st.sampled_from(["none", "reject", "quarantine", f"mailto:d@{DOMAIN}", "r", "s", "1", "d"]), digits, junk
        ),
    ),
    junk,
)
dmarc_records = st.lists(_dmarc_tags, max_size=6).map(lambda tags: "; ".join(["v=DMARC1", *tags]))
mta_sts_records = st.one_of(st.builds("v=STSv1; id={}".format, junk), st.builds("v=STSv1{}".format, junk))


@st.composite
def txt_records(draw, text: st.SearchStrategy) -> list[list[bytes]]:
    """0 to 2 records, each one text cut into character-strings (up to 120 octets each)."""
    found = []
    for _ in range(draw(st.integers(0, 2))):
        data = draw(st.one_of(text.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=100)))
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=3)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        found.append([p[i : i + 120] for p in pieces for i in range(0, max(len(p), 1), 120)])
    return found


zones = st.fixed_dictionaries(
    {
        DOMAIN: txt_records(st.one_of(spf_records, junk)),
        f"inc.{DOMAIN}": txt_records(spf_records),
        f"_dmarc.{DOMAIN}": txt_records(st.one_of(dmarc_records, junk)),
        f"_mta-sts.{DOMAIN}": txt_records(mta_sts_records),
    }
)


@given(zones, st.sampled_from(["", "before", "during", "after"]))
@example({DOMAIN: [[b"v=spf1 include:" + DOMAIN.encode() + b" -all"]]}, "before")  # a loop
@example({DOMAIN: [[b"v=spf1 ip4:1.2.3.4/99 ip6:::/200 -all"]], f"_dmarc.{DOMAIN}": [[b"v=DMARC1; p=\xff"]]}, "")
@example({f"_mta-sts.{DOMAIN}": [[b"v=STSv1; id=\x00"]], f"_dmarc.{DOMAIN}": [[b"v=DMARC1", b"; pct=1e9"]]}, "after")
async def test_a_domain_check_reads_any_txt_record(peers, txt, stage):
    settings, dns_server, _ = peers
    dns_server.txt = txt
    report = await DomainChecks(settings, DnsActivities(settings)).run(DomainCheckQuery(DOMAIN, stage))
    schema_kept(report)
    assert {c.id for c in report.checks} >= {"spf.record", "dmarc.record", "mta_sts.policy"}


_policy_lines = st.one_of(
    st.builds("{}: {}".format, st.sampled_from(["version", "mode", "mx", "max_age"]), st.one_of(
        st.sampled_from(["STSv1", "enforce", "testing", "none", f"*.{DOMAIN}", SERVER, "86400", "-1", "1e9"]), digits, junk
    )),
    junk,
)  # fmt: skip


@given(st.lists(_policy_lines, max_size=6), st.sampled_from(["\n", "\r\n"]), st.one_of(st.just(SERVER), names))
@example(["version: STSv1", "mode: enforce", "mx: *.", "max_age: 99999999999999999999"], "\n", SERVER)
def test_an_mta_sts_policy_is_a_policy_or_a_value_error(lines, newline, host):
    try:
        policy = records.parse_mta_sts_policy(newline.join(lines))
    except ValueError as exc:
        assert str(exc)
        return
    assert policy.mode in ("enforce", "testing", "none") and policy.max_age >= 0
    assert isinstance(records.mx_matches(host, policy.mx), bool)


# -- SMTP: replies as the relay test, the server check and the gateway probe read them ----------

_codes = st.one_of(
    st.sampled_from(["220", "250", "354", "221", "421", "450", "454", "500", "530", "550", "554", "-12", "1_2"]),
    st.from_regex(r"[0-9]{3}", fullmatch=True),
    st.text(max_size=3),
)
_lines = st.builds("{}{}{}".format, _codes, st.sampled_from([" ", "-", ""]), junk)
_reply = st.one_of(
    st.sampled_from(
        [b"220 " + SERVER.encode() + b" ESMTP\r\n", b"250-" + SERVER.encode() + b"\r\n250-STARTTLS\r\n250 8BITMIME\r\n",
         b"250 ok\r\n", b"220 go ahead\r\n", b"354 go on\r\n", b"250 2.0.0 queued as ABC123\r\n", b"221 bye\r\n",
         b"554 5.7.1 [/] \x1b[31mRED \x1b]0;pwned\x07\r\n", b"250 " + b"x" * 9000 + b"\r\n", b"250-a\r\n"]
    ),
    st.lists(_lines, min_size=1, max_size=3).map(lambda ls: ("\r\n".join(ls) + "\r\n").encode("utf-8", "surrogatepass")),
    st.binary(max_size=60),
)  # fmt: skip
scripts = st.lists(_reply, max_size=9)


@given(scripts)
@example([b"220 " + SERVER.encode() + b" ESMTP\r\n", b"250-x\r\n250 STARTTLS\r\n", b"220 go\r\n", b"\x16\x03\x01junk"])
async def test_the_server_check_reads_any_smtp_reply(peers, script):
    settings, _, smtp = peers
    smtp.script = script
    report = await ServerChecks(settings, DnsActivities(settings)).run(ServerCheckQuery(SERVER, ["127.0.0.1"]))
    schema_kept(report)


@given(scripts, st.booleans(), st.booleans())
@example(
    [b"220 x\r\n", b"250 x\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n", b"250 queued as \xff\r\n"], False, True
)
async def test_the_relay_test_reads_any_smtp_reply(peers, script, tls, send):
    settings, _, smtp = peers
    smtp.script = script
    query = RelayTestQuery(Relay("127.0.0.1", smtp.port, tls), SERVER, f"postmaster@{DOMAIN}", f"a@{DOMAIN}", send=send)
    transcript = await run_relay_test(query, settings.smtp, DnsActivities(settings).addresses)
    assert transcript.verdict in VERDICTS and transcript.cause
    assert all(isinstance(step.reply, str) for step in transcript.steps)


@given(scripts, st.lists(st.sampled_from([f"a@{DOMAIN}", f"b@{DOMAIN}", f"c@{DOMAIN}"]), min_size=1, max_size=3))
async def test_the_gateway_probe_reads_any_smtp_reply(peers, script, listed):
    """The activities' own contract: a result, or an ApplicationError (no MX gave an answer)."""
    settings, _, smtp = peers
    smtp.script = script
    probe = ProbeActivities(settings.smtp, DnsActivities(settings))
    environment = ActivityEnvironment()
    try:
        result = await environment.run(probe.probe_rcpt, ProbeQuery([SERVER], smtp.port, listed[0]))
        assert isinstance(result, ProbeResult)
    except ApplicationError as exc:
        assert "no gateway MX" in str(exc)
    smtp.script = script
    try:
        report = await environment.run(probe.probe_addresses, AddressProbe([SERVER], smtp.port, listed, rate=1000))
        assert isinstance(report, AddressReport) and len(report.verdicts) == len(listed)
    except ApplicationError as exc:
        assert "no gateway MX" in str(exc)


# -- postconf: the agent's reading of Postfix's settings ---------------------------------------

_postconf_values = st.one_of(
    st.builds("[{}]:{}".format, st.one_of(st.just("mailout.hrz.tu-darmstadt.de"), names), digits),
    st.builds("{}:{}".format, names, digits),
    st.sampled_from(
        ["encrypt", "may", ">=TLSv1.2", "!SSLv2, !SSLv3, !TLSv1, !TLSv1.1", "[mailout.hrz.tu-darmstadt.de]"]
    ),
    junk,
)


@given(st.dictionaries(st.sampled_from(PARAMETERS), _postconf_values), st.booleans())
@example({"relayhost": "[mailout.hrz.tu-darmstadt.de]:²"}, True)  # str.isdigit() took it, int() did not
def test_postfix_settings_are_read_as_lines_to_set(actual, tls):
    wrong = mismatches(Relay("mailout.hrz.tu-darmstadt.de", 25, tls), actual)
    assert all(isinstance(line, str) and " = " in line for line in wrong)
