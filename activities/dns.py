"""DNS side effects and observations with dnspython.

Server addresses come from the worker's configuration (per zone: authoritative servers and
the RFC 2136 update server; recursive resolvers), so a running workflow never carries them,
and the TSIG secret never leaves this process.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time

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
import dns.tsig
import dns.tsigkeyring
import dns.update
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import beating
from mailmove.base.config import HostPort, parse_host_port
from mailmove.base.model import (
    ConvergenceQuery,
    ConvergenceReport,
    HostAddresses,
    HostQuery,
    MxChange,
    MxChangeResult,
    ResolverQuery,
    ResolverView,
    ServerIdentity,
    ServerQuery,
    ServerView,
    ZoneQuery,
    ZoneSnapshot,
    mx_key,
)
from mailmove.checks.dns import Dns, mx_from


class DnsActivities(Dns):
    """Activities that read and change DNS. One instance per worker, bound to its settings."""

    async def update_server(self, zone: str) -> HostPort:
        configured = self.settings.dns.zone_for(zone)
        if configured and configured.update_server:
            return configured.update_server
        soa = await self.resolver().resolve(zone, "SOA")
        mname = soa[0].mname.to_text(omit_final_dot=True)
        addresses = await self.addresses(mname)
        if not addresses:
            raise ApplicationError(f"the primary {mname} of {zone} has no address", non_retryable=True)
        return HostPort(addresses[0], 53)

    def keyring(self, zone: str) -> tuple[dict, str]:
        configured = self.settings.dns.zone_for(zone)
        name = configured.tsig_key if configured else ""
        keys = self.settings.tsig_keys()
        if not name and len(keys) == 1:
            name = next(iter(keys))
        key = keys.get(name.rstrip(".").lower())
        if key is None:
            raise ApplicationError(
                f"no TSIG key {name!r} for zone {zone} in dns.tsig_keyfile", non_retryable=True, type="Config"
            )
        ring = dns.tsigkeyring.from_text({key.name: (key.algorithm, key.secret)})
        return ring, key.name

    @activity.defn
    @beating
    async def inspect_zone(self, query: ZoneQuery) -> ZoneSnapshot:
        """Zone, authoritative addresses, current MX set and TTLs, as every server serves them."""
        zone = await self.zone_of(query.domain)
        servers = await self.authoritative(zone)
        views = await asyncio.gather(*(self.read_mx(s, query.domain) for s in servers))
        sets = {mx_key(mx) for mx, _ in views}
        if len(sets) > 1:
            detail = "; ".join(
                f"{s}: {' '.join(map(str, mx_key(mx)))}" for s, (mx, _) in zip(servers, views, strict=True)
            )
            raise ApplicationError(f"the authoritative servers disagree on the MX set of {query.domain}: {detail}")
        serial, negative_ttl = await self.read_soa(servers[0], zone)
        mx, _ = views[0]
        return ZoneSnapshot(
            zone=zone,
            authoritative=[str(s) for s in servers],
            mx=list(mx_key(mx)),
            mx_ttl=max(ttl for _, ttl in views),
            negative_ttl=negative_ttl,
            serial=serial,
        )

    @activity.defn
    @beating
    async def host_addresses(self, query: HostQuery) -> HostAddresses:
        """The host must have an address, or mail sent to it would bounce."""
        try:
            found = await self.addresses(query.host)
        except dns.exception.Timeout as exc:
            raise ApplicationError(f"looking up {query.host} timed out: {exc}") from exc
        if not found:
            raise ApplicationError(f"{query.host} has no A or AAAA record", non_retryable=True, type="NoAddress")
        return HostAddresses(query.host, found)

    @activity.defn
    @beating
    async def server_identity(self, query: ServerQuery) -> ServerIdentity:
        """Forward-confirmed reverse DNS of a mail server, and its sender domains, as the
        gateway demands them; each problem says what to set where. A timeout is retried."""
        try:
            return await self._identity(query)
        except dns.exception.Timeout as exc:
            raise ApplicationError(f"DNS lookup timed out: {exc}") from exc

    async def _identity(self, query: ServerQuery) -> ServerIdentity:
        host = query.fqdn
        problems = []
        v4, v6 = await asyncio.gather(self.lookup(host, "A"), self.lookup(host, "AAAA"))
        forward = v4 + v6
        wanted = [a for a in (query.ipv4, query.ipv6) if a]
        for address in wanted:
            rdtype = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
            if ipaddress.ip_address(address) not in {ipaddress.ip_address(a) for a in forward}:
                problems.append(
                    f"{host} has no {rdtype} record {address} (it resolves to {', '.join(forward) or 'nothing'}): "
                    f"set `{host}. IN {rdtype} {address}` in the central DNS"
                )
        reverse = []
        for address in wanted:
            check = await self.fcrdns(host, address, forward)
            reverse.append(check)
            if host not in check.ptr:
                problems.append(
                    f"the PTR of {address} names {', '.join(check.ptr) or 'nothing'}, not {host}: "
                    f"set `{dns.reversename.from_address(address)} IN PTR {host}.` (forward and reverse must match)"
                )
        for domain in query.sender_domains:
            mx, a = await asyncio.gather(self.lookup(domain, "MX"), self.lookup(domain, "A"))
            if not mx and not a and not await self.lookup(domain, "AAAA"):
                problems.append(
                    f"the sender domain {domain} has no MX or address record: mail from it cannot be answered; "
                    "register it in the central DNS"
                )
        old = await self.addresses(query.old_fqdn) if query.old_fqdn else []
        return ServerIdentity(forward=forward, reverse=reverse, old_addresses=old, problems=problems)

    @activity.defn
    @beating
    async def apply_mx(self, change: MxChange) -> MxChangeResult:
        """One signed UPDATE, prerequisite on the whole current MX RRset (compare-and-swap)."""
        server = await self.update_server(change.zone)
        current, _ = await self.read_mx(server, change.domain)
        if mx_key(current) == mx_key(change.target):
            serial, _ = await self.read_soa(server, change.zone)
            return MxChangeResult(changed=False, before=current, serial=serial)
        if mx_key(current) not in {mx_key(a) for a in change.accept}:
            raise ApplicationError(
                f"the MX set of {change.domain} changed outside mailmove: the primary serves "
                f"{' '.join(map(str, mx_key(current))) or 'no MX'}; expected one of "
                + " | ".join(" ".join(map(str, mx_key(a))) or "no MX" for a in change.accept),
                non_retryable=True,
                type="MxChangedOutside",
            )
        ring, keyname = self.keyring(change.zone)
        update = dns.update.UpdateMessage(change.zone, keyring=ring, keyname=keyname)
        if current:
            update.present(change.domain + ".", "MX", *(str(r) for r in mx_key(current)))
        else:
            update.absent(change.domain + ".", "MX")
        update.delete(change.domain + ".", "MX")
        for record in mx_key(change.target):
            update.add(change.domain + ".", change.ttl, "MX", str(record))
        try:
            reply = await dns.asyncquery.tcp(update, server.host, timeout=self.settings.dns.timeout, port=server.port)
        except dns.tsig.PeerError as exc:
            raise ApplicationError(
                f"{server} rejected the TSIG signature: {exc!r}", non_retryable=True, type="Tsig"
            ) from exc
        rcode = reply.rcode()
        if rcode in (dns.rcode.NXRRSET, dns.rcode.YXRRSET):
            # the set changed between our read and the update: read again on the next attempt
            raise ApplicationError(
                f"{server}: MX set of {change.domain} changed during the update ({dns.rcode.to_text(rcode)})"
            )
        if rcode != dns.rcode.NOERROR:
            raise ApplicationError(
                f"{server} refused the update of {change.domain} MX: {dns.rcode.to_text(rcode)}",
                non_retryable=rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH, dns.rcode.NOTZONE),
                type="UpdateRefused",
            )
        serial, _ = await self.read_soa(server, change.zone)
        activity.logger.info("MX of %s set to %s (serial %s)", change.domain, mx_key(change.target), serial)
        return MxChangeResult(changed=True, before=current, serial=serial)

    async def _server_view(self, server: HostPort, query: ConvergenceQuery) -> ServerView:
        """Both questions at once; when both fail, the MX question's error is the one shown (it
        says more: "not authoritative" rather than "no SOA"), whichever answer came first."""
        answers = await asyncio.gather(
            self.read_mx(server, query.domain), self.read_soa(server, query.zone), return_exceptions=True
        )
        for failed in answers:
            if isinstance(failed, (dns.exception.DNSException, ApplicationError, OSError)):
                return ServerView(str(server), ok=False, mx=[], serial=None, error=str(failed) or type(failed).__name__)
            if isinstance(failed, BaseException):
                raise failed
        (mx, _), (serial, _) = answers
        return ServerView(str(server), ok=mx_key(mx) == mx_key(query.target), mx=list(mx_key(mx)), serial=serial)

    @activity.defn
    @beating
    async def poll_authoritative(self, query: ConvergenceQuery) -> ConvergenceReport:
        """Poll every authoritative address until all serve the target set, or the window ends.

        An address that serves the target is not asked again: the later rounds wait only for
        the rest (a secondary's transfer).
        """
        servers = [parse_host_port(a, 53, "authoritative") for a in query.authoritative]
        seen: dict[HostPort, ServerView] = {}
        deadline = time.monotonic() + query.window
        while True:
            pending = [s for s in servers if not (s in seen and seen[s].ok)]
            seen.update(
                zip(pending, await asyncio.gather(*(self._server_view(s, query) for s in pending)), strict=True)
            )
            views = [seen[s] for s in servers]
            if all(v.ok for v in views):
                return ConvergenceReport(True, views)
            if time.monotonic() + query.poll > deadline:
                return ConvergenceReport(False, views)
            await asyncio.sleep(query.poll)

    @activity.defn
    @beating
    async def observe_resolvers(self, query: ResolverQuery) -> list[ResolverView]:
        """Every configured resolver, concurrently: what it serves now and for how long."""

        async def view(server: HostPort) -> ResolverView:
            try:
                reply = await self.ask(server, query.domain, "MX", recursive=True)
            except (dns.exception.DNSException, OSError) as exc:
                return ResolverView(str(server), False, [], None, error=str(exc) or type(exc).__name__)
            for rrset in reply.answer:
                if rrset.rdtype == dns.rdatatype.MX:
                    mx = list(mx_key(mx_from(rrset)))
                    return ResolverView(str(server), mx_key(mx) == mx_key(query.target), mx, rrset.ttl)
            return ResolverView(str(server), not query.target, [], None, error=dns.rcode.to_text(reply.rcode()))

        return list(await asyncio.gather(*(view(r) for r in self.settings.dns.resolvers)))
