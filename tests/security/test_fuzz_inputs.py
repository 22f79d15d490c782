"""Fuzzing the parsers of what a postmaster types or hands over: host names and IDNs, address
files in their three formats, a start request's fields and a wave's CSV file.

The property of each: whatever the input, the answer is a value that keeps the parser's
promises, or the project's field error naming the field; never another exception or a hang.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mailmove.base.addresses import parse_addresses, read_addresses
from mailmove.base.errors import BadInput, ConfigError
from mailmove.base.inputs import (
    DomainMoveRequest,
    ServerMoveRequest,
    address_field,
    domain_move_input,
    relay_test_query,
    server_move_input,
)
from mailmove.base.names import BadName, is_address, to_alabel, to_ulabel
from mailmove.service.waves import DOMAIN_COLUMNS, SERVER_COLUMNS, PreparedWave, parse_rate, prepare_wave
from tests.support.fuzzing import (
    addresses,
    digits,
    host_names,
    junk,
    mailboxes,
    names,
    plausible_domains,
    plausible_hosts,
    reaching_nothing,
)

DOMAIN = "chem.tu-darmstadt.de"


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    """Manual portal, one TSIG key, no server to reach: every check of a start runs, no packet leaves."""
    return reaching_nothing(tmp_path_factory.mktemp("fuzz-inputs"))


@given(names)
@example("a" * 63 + ".de")
@example("xn--ls8h.de")
@example("xn--a.de")  # an A-label that does not decode
@example("\u0661\u0662.de")
def test_a_host_name_is_an_alabel_or_a_bad_name(text):
    try:
        alabel = to_alabel(text)
    except BadName as exc:
        assert str(exc)
        return
    labels = alabel.split(".")
    assert alabel.isascii() and alabel == alabel.lower() and len(alabel) <= 253 and len(labels) >= 2
    assert all(0 < len(part) <= 63 for part in labels)
    assert to_alabel(alabel) == alabel  # the A-label is a fixed point: what is stored reads back the same
    assert isinstance(to_ulabel(alabel), str)


@given(st.one_of(addresses, junk))
def test_an_address_literal_is_recognised_or_not(text):
    assert isinstance(is_address(text), bool)
    try:
        assert isinstance(address_field("new_ipv4", text), str)
    except BadInput as exc:
        assert exc.field == "new_ipv4"


# the three formats of an address file, and what lies between their lines
_local = st.one_of(st.from_regex(r"[a-z0-9._+-]{1,12}", fullmatch=True), junk, st.sampled_from(["root", "ROOT", "é"]))
_address = st.one_of(
    st.builds("{}@{}".format, _local, st.sampled_from([DOMAIN, "CHEM.tu-darmstadt.de", "x." + DOMAIN, "phys.de"])),
    mailboxes(DOMAIN),
    _local,
)
_line = st.one_of(
    _address,  # a plain list
    st.builds("{} internal".format, _address),
    st.builds("{}\t{}".format, st.one_of(_address, st.just("@" + DOMAIN)), mailboxes()),  # virtual(5)
    st.builds("{}: {}".format, _local, st.lists(mailboxes(), max_size=3).map(", ".join)),  # aliases(5)
    st.builds("  {}".format, mailboxes()),  # a continuation line
    st.builds("# {}".format, junk),
    junk,
)
_newline = st.sampled_from(["\n", "\r\n", "\r", "\x0b", "\x1c", "\x85", "\u2028"])
address_files = st.one_of(
    st.lists(st.tuples(_line, _newline), max_size=12).map(lambda lines: "".join(a + b for a, b in lines)), junk
)


@given(address_files)
@example("a@" + DOMAIN + "\n" + "a" * 65 + "@" + DOMAIN)
@example("@" + DOMAIN + " catchall@" + DOMAIN)
def test_an_address_file_is_read_line_by_line(text):
    listed = parse_addresses(text, "list.txt", DOMAIN)
    for address in listed.addresses + listed.internal:
        local, _, domain = address.rpartition("@")
        assert local.isascii() and (domain == DOMAIN or domain.endswith("." + DOMAIN))
    assert len({a.lower() for a in listed.addresses}) == len(listed.addresses)
    assert all(error.startswith("list.txt:") for error in listed.errors)


@given(st.binary(max_size=200), st.sampled_from(["list.txt", "a\x00b", "."]))
def test_an_address_file_of_any_bytes_is_read_or_refused(tmp_path, data, name):
    path = tmp_path / "list.txt"
    path.write_bytes(data)
    listed = read_addresses(path if name == "list.txt" else tmp_path / name, DOMAIN)
    assert isinstance(listed.addresses, list)


_dns_modes = st.one_of(st.sampled_from(["rfc2136", "centre"]), junk)
_portal_modes = st.one_of(st.sampled_from(["", "manual", "http"]), junk)


@given(
    domain=st.one_of(plausible_domains, names),
    legacy=st.one_of(plausible_hosts, st.just("a2681.mx.srv.dfn.de"), names),
    dns_mode=_dns_modes,
    portal=_portal_modes,
    preference=st.one_of(st.none(), st.integers()),
    text=address_files,
    no_external=st.booleans(),
    contact=st.one_of(st.just(""), mailboxes(DOMAIN), junk),
)
def test_a_domain_move_request_is_an_input_or_a_field_error(
    settings, domain, legacy, dns_mode, portal, preference, text, no_external, contact
):
    request = DomainMoveRequest(domain, legacy, dns_mode, portal, preference, "fuzz", "", text, no_external, contact)
    try:
        move = domain_move_input(settings, request)
    except BadInput as exc:
        assert exc.field in {"domain", "legacy_mx", "legacy_preference", "dns", "portal", "addresses", "contact"}
        return
    assert move.domain == to_alabel(move.domain) and 0 <= move.legacy_preference < move.gateway_preference


@given(
    old=st.one_of(plausible_hosts, names),
    new=st.one_of(plausible_hosts, names),
    ipv4=st.one_of(st.just("192.0.2.25"), addresses),
    ipv6=st.one_of(st.just(""), addresses),
    scope=st.one_of(st.sampled_from(["external", "internal", "unsecure"]), junk),
    institution=junk,
    admins=st.lists(junk, max_size=3),
    contact=st.one_of(mailboxes(DOMAIN), junk),
    senders=st.lists(st.one_of(plausible_domains, names), max_size=3),
    mail_from=st.one_of(st.just(""), mailboxes(), junk),
    rcpt=st.one_of(st.just(""), mailboxes(), junk),
)
def test_a_server_move_request_is_an_input_or_a_field_error(
    settings, old, new, ipv4, ipv6, scope, institution, admins, contact, senders, mail_from, rcpt
):
    request = ServerMoveRequest(
        old, new, ipv4, ipv6, scope, institution, admins, contact, senders, mail_from, rcpt, actor="fuzz"
    )
    try:
        move = server_move_input(settings, request)
    except BadInput as exc:
        assert exc.field and " " not in exc.field
        return
    assert move.new_fqdn == to_alabel(move.new_fqdn) and move.relay_scope in ("external", "internal", "unsecure")


@given(
    relay=st.one_of(st.builds("{}:{}".format, st.one_of(host_names(), addresses), digits), names, addresses),
    helo=names,
    mail_from=st.one_of(mailboxes(), junk),
    rcpt=st.one_of(mailboxes(), junk),
    source=st.one_of(st.just(""), addresses),
)
@example("mailout.tu-darmstadt.de:²", "mx.tu-darmstadt.de", "a@tu-darmstadt.de", "b@tu-darmstadt.de", "")
@example("mailout.tu-darmstadt.de:" + "9" * 5000, "mx.tu-darmstadt.de", "a@tu-darmstadt.de", "b@tu-darmstadt.de", "")
def test_relay_test_options_are_a_query_or_a_field_error(settings, relay, helo, mail_from, rcpt, source):
    try:
        query, _ = relay_test_query(settings, relay, helo, mail_from, rcpt, source)
    except BadInput as exc:
        assert exc.field in {"relay", "helo", "mail_from", "rcpt", "source"}
        return
    assert 0 < query.relay.port < 65536


# a wave's CSV file: a header of known (and some unknown) columns, cells plausible or hostile
_cells = {
    "kind": st.sampled_from(["server", "", "domain", "Server", "relay"]),
    "domain": plausible_domains,
    "legacy_mx": plausible_hosts,
    "dns": st.sampled_from(["", "rfc2136", "centre", "x"]),
    "portal": st.sampled_from(["", "manual", "http", "x"]),
    "legacy_preference": digits,
    "no_external": st.sampled_from(["", "yes", "no", "maybe"]),
    "send": st.sampled_from(["", "yes", "no", "maybe"]),
    "agent": st.sampled_from(["", "yes", "no", "maybe"]),
    "old": plausible_hosts,
    "new": plausible_hosts,
    "new_ipv4": st.one_of(st.just("192.0.2.25"), addresses),
    "new_ipv6": st.one_of(st.just(""), addresses),
    "relay_scope": st.sampled_from(["", "external", "internal", "unsecure", "x"]),
    "institution": junk,
    "admins": st.lists(st.from_regex(r"[a-z]{2}[0-9]{2}[a-z]{4}", fullmatch=True), max_size=3).map(" ".join),
    "sender_domains": st.lists(plausible_domains, max_size=2).map(" ".join),
}
_kinds = [  # the columns a row of each kind needs, and those it may have; or any mix
    (["domain", "legacy_mx"], sorted(DOMAIN_COLUMNS - {"kind", "domain", "legacy_mx"})),
    (["kind", "old", "new", "new_ipv4", "institution", "admins", "contact", "sender_domains"], ["new_ipv6", "send"]),
    ([], sorted(DOMAIN_COLUMNS | SERVER_COLUMNS)),
]


def _csv_cell(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\r\n') else text


@st.composite
def wave_files(draw) -> str:
    required, optional = draw(st.sampled_from(_kinds))
    header = required + draw(st.lists(st.sampled_from(optional), max_size=6, unique=True).map(sorted))
    if draw(st.integers(0, 7)) == 0:
        header.append(draw(junk))  # now and then a column nobody knows
    rows = []
    for _ in range(draw(st.integers(0, 4))):
        hostile = [draw(st.integers(0, 9)) == 0 for _ in header]  # one cell in ten is junk
        cells = [
            draw(junk if bad else _cells.get(column, mailboxes(DOMAIN)))
            for column, bad in zip(header, hostile, strict=True)
        ]
        rows.append(cells[: draw(st.integers(0, len(cells) + 1))] if draw(st.booleans()) else cells)
    lines = [",".join(map(_csv_cell, header))] + [",".join(map(_csv_cell, row)) for row in rows]
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines)


@given(st.one_of(wave_files(), junk), st.sampled_from(["30/min", "1/s", "0.5/h", "²/min", "0", ""]))
@example("domain,legacy_mx,legacy_preference\nchem.tu-darmstadt.de,mail.chem.tu-darmstadt.de,²", "30/min")
@example("domain,legacy_mx\n" + "a" * 200_000 + ",b", "30/min")
@example("domain,legacy_mx,addresses\nchem.tu-darmstadt.de,mail.chem.tu-darmstadt.de,a\x00b", "30/min")
@example("domain,legacy_mx\r\nchem.tu-darmstadt.de,mail.chem.tu-darmstadt.de\r\n", "30/min")
@example("domain,legacy_mx,portal\nchem.tu-darmstadt.de,mail.chem.tu-darmstadt.de,http", "30/min")
def test_a_wave_file_is_a_wave_or_a_field_error(settings, tmp_path, text, rate):
    path = tmp_path / "wave.csv"
    path.write_text(text, encoding="utf-8")
    try:
        wave = asyncio.run(prepare_wave(settings, path, 10, rate, actor="fuzz"))
    except (BadInput, ConfigError) as exc:  # a row that files over HTTP: portal.url, which nobody answers
        assert exc.field and " " not in exc.field  # FILE, --rate, rows, portal.url, ...
        return
    assert isinstance(wave, PreparedWave) and wave.rows
    assert all(row.workflow_id == f"{row.kind}-move:{row.subject}" for row in wave.rows)


@given(
    st.one_of(
        st.builds(
            "{}/{}".format,
            st.from_regex(r"[0-9]{1,4}(\.[0-9]{1,20})?", fullmatch=True),
            st.sampled_from(["s", "min", "h", "sec", "hour", "d"]),
        ),
        st.text("0123456789./minsech ²١", max_size=30),
        junk,
    )
)
@example("0." + "0" * 20 + "1/h")  # a pace of 10^19 s between starts: more than a timer can hold
@example("9" * 400)  # infinitely many a minute (float infinity)
def test_a_wave_rate_is_a_pace_or_a_field_error(text):
    try:
        per_minute = parse_rate(text)
    except BadInput as exc:
        assert exc.field == "--rate"
        return
    assert 0 < per_minute < 10**6
    timedelta(seconds=60 / per_minute)  # the wave's pace between two starts
