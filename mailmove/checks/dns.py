"""Reading DNS with dnspython: what the checks judge and the activities build on.

Server addresses come from the configuration (per zone: authoritative servers; recursive
resolvers), so a running workflow never carries them.
"""

from __future__ import annotations

import ipaddress

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.reversename
from temporalio.exceptions import ApplicationError

from mailmove.base.config import HostPort, Settings
from mailmove.base.model import AddressCheck, MxRecord

NOT_AUTHORITATIVE = "NotAuthoritative"  # the type of read_mx's failure when a server answers without AA


def mx_from(rrset) -> list[MxRecord]:
    return [MxRecord(r.preference, r.exchange.to_text(omit_final_dot=True).lower()) for r in rrset]


class Dns:
    """Reads DNS for the checks and the activities: the configured resolvers, one authoritative
    server at a time. One instance per worker (or CLI run), bound to its settings."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def nameservers(self) -> list[dns.nameserver.Nameserver]:
        """The configured recursive resolvers, for this class's resolver and checkdmarc's reads
        alike (the survey's subclass wraps each in its rate limit); empty: the system's."""
        return [dns.nameserver.Do53Nameserver(r.host, port=r.port) for r in self.settings.dns.resolvers]

    def resolver(self) -> dns.asyncresolver.Resolver:
        """The configured recursive resolvers, or the system's."""
        servers = self.nameservers()
        res = dns.asyncresolver.Resolver(configure=not servers)
        if servers:
            res.nameservers = servers
        res.lifetime = self.settings.dns.timeout * 2
        res.timeout = self.settings.dns.timeout
        return res

    async def ask(self, server: HostPort, name: str, rdtype: str, recursive: bool = False) -> dns.message.Message:
        """One query to one server (UDP, TCP on truncation); RD cleared for authoritative queries."""
        query = dns.message.make_query(name, rdtype)
        if not recursive:
            query.flags &= ~dns.flags.RD
        answer, _ = await dns.asyncquery.udp_with_fallback(
            query, server.host, timeout=self.settings.dns.timeout, port=server.port
        )
        return answer

    async def addresses(self, host: str) -> list[str]:
        return (await self.resolve_host(host))[0]

    async def resolve_host(self, host: str) -> tuple[list[str], str]:
        """The host's addresses (A, then AAAA) and its canonical name: another name if `host`
        is an alias (CNAME), which the address answers show without a lookup of their own."""
        res = self.resolver()
        found: list[str] = []
        canonical = host
        for rdtype in ("A", "AAAA"):
            try:
                answer = await res.resolve(host, rdtype)
            except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                continue
            found += [r.address for r in answer]
            canonical = answer.canonical_name.to_text(omit_final_dot=True)
        return found, canonical

    async def lookup(self, name: str, rdtype: str) -> list[str]:
        """The records' texts; an empty list for NXDOMAIN or no such record (a timeout raises)."""
        try:
            answer = await self.resolver().resolve(name, rdtype)
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            return []
        return [r.to_text() for r in answer]

    async def zone_of(self, domain: str) -> str:
        configured = self.settings.dns.zone_for(domain)
        if configured:
            return configured.name
        zone = await dns.asyncresolver.zone_for_name(domain, resolver=self.resolver())
        return zone.to_text(omit_final_dot=True).lower()

    async def authoritative(self, zone: str) -> list[HostPort]:
        """Configured list, else every address of the NS set at the apex and at the parent."""
        configured = self.settings.dns.zone_for(zone)
        if configured and configured.authoritative:
            return list(configured.authoritative)
        res = self.resolver()
        hosts = {r.target.to_text(omit_final_dot=True) for r in await res.resolve(zone, "NS")}
        hosts |= await self._delegation(zone)
        found = []
        for host in sorted(hosts):
            found += [HostPort(a, 53) for a in await self.addresses(host)]
        if not found:
            raise ApplicationError(f"no address found for the name servers of {zone}", non_retryable=True)
        return found

    async def _delegation(self, zone: str) -> set[str]:
        """NS names in the parent's referral; best effort (an unreachable parent adds none)."""
        parent = dns.name.from_text(zone).parent()
        try:
            parent_ns = [r.target.to_text() for r in await self.resolver().resolve(parent, "NS")]
            for host in parent_ns:
                for address in await self.addresses(host):
                    reply = await self.ask(HostPort(address, 53), zone, "NS")
                    section = reply.answer or reply.authority
                    return {
                        r.target.to_text(omit_final_dot=True)
                        for rrset in section
                        if rrset.rdtype == dns.rdatatype.NS
                        for r in rrset
                    }
        except dns.exception.DNSException:
            pass
        return set()

    async def read_mx(self, server: HostPort, domain: str) -> tuple[list[MxRecord], int]:
        """MX set and its TTL as served by `server`, which must answer authoritatively; a failure's
        type is the rcode (`SERVFAIL`, `REFUSED`, ...) or NOT_AUTHORITATIVE."""
        reply = await self.ask(server, domain, "MX")
        rcode = reply.rcode()
        if rcode != dns.rcode.NOERROR:
            word = dns.rcode.to_text(rcode)
            raise ApplicationError(f"{server} answered {word} for {domain} MX", type=word)
        if not reply.flags & dns.flags.AA:
            raise ApplicationError(f"{server} is not authoritative for {domain}", type=NOT_AUTHORITATIVE)
        for rrset in reply.answer:
            if rrset.rdtype == dns.rdatatype.MX:
                return mx_from(rrset), rrset.ttl
        return [], 0

    async def read_soa(self, server: HostPort, zone: str) -> tuple[int, int]:
        """(serial, negative-caching TTL) from `server`'s SOA of `zone`."""
        reply = await self.ask(server, zone, "SOA")
        for rrset in reply.answer:
            if rrset.rdtype == dns.rdatatype.SOA:
                return rrset[0].serial, min(rrset[0].minimum, rrset.ttl)
        raise ApplicationError(f"{server} served no SOA for {zone}")

    async def fcrdns(self, host: str, address: str, forward: list[str]) -> AddressCheck:
        """Forward-confirmed reverse DNS of one address: a PTR names `host`, which resolves back."""
        name = dns.reversename.from_address(address).to_text()
        ptrs = [p.rstrip(".").lower() for p in await self.lookup(name, "PTR")]
        confirmed = ipaddress.ip_address(address) in {ipaddress.ip_address(a) for a in forward}
        return AddressCheck(address, ptrs, host in ptrs and confirmed)
