"""What a DNS server on 127.0.0.1 answers, asked directly; a record changed by RFC 2136 as a person would."""

from __future__ import annotations

import dns.asyncquery
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.update

from activities.dns import DnsActivities
from mailmove.base.config import Settings
from mailmove.base.model import MxRecord, mx_key


def served_mx(port: int, domain: str, recursive: bool = False) -> tuple[MxRecord, ...]:
    """The MX set a server on 127.0.0.1:port serves (an authoritative one unless `recursive`)."""
    query = dns.message.make_query(domain, "MX")
    if recursive:
        reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=3)
    else:
        reply = dns.query.tcp(query, "127.0.0.1", port=port, timeout=3)
    return mx_key(
        [MxRecord(r.preference, r.exchange.to_text(omit_final_dot=True)) for rrset in reply.answer for r in rrset]
    )


def resolved_mx(port: int, domain: str) -> tuple[MxRecord, ...]:
    """What a caching resolver answers now."""
    return served_mx(port, domain, recursive=True)


def serial_of(port: int, zone: str) -> int:
    reply = dns.query.tcp(dns.message.make_query(zone, "SOA"), "127.0.0.1", port=port, timeout=3)
    return reply.answer[0][0].serial


def resolved(port: int, name: str, rdtype: str) -> list[str]:
    """The records' texts a caching resolver on 127.0.0.1:port answers now (none: an empty list)."""
    reply = dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port, timeout=3)
    return sorted(
        r.to_text() for rrset in reply.answer if rrset.rdtype == dns.rdatatype.from_text(rdtype) for r in rrset
    )


async def replace_records(settings: Settings, zone: str, name: str, rdtype: str, ttl: int, *values: str) -> None:
    """An RFC 2136 UPDATE signed with the zone's configured TSIG key: `name`'s `rdtype` records
    are `values` from now on, at the zone's update server."""
    activities = DnsActivities(settings)
    ring, keyname = activities.keyring(zone)
    server = await activities.update_server(zone)
    update = dns.update.UpdateMessage(zone, keyring=ring, keyname=keyname)
    update.replace(name, ttl, rdtype, *values)
    reply = await dns.asyncquery.tcp(update, server.host, port=server.port, timeout=3)
    assert reply.rcode() == dns.rcode.NOERROR, (
        f"the update of {name} {rdtype} was refused: {dns.rcode.to_text(reply.rcode())}"
    )
