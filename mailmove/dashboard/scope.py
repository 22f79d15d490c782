"""What an operator limited to some domains may name in a start request: every name in it is
compared with their domains before the request is validated, so that a refusal says only "not
yours", never what the configuration holds for somebody else's domain (a zone, a key, a server
that does not answer).

- The moved domain, the old and the new server, every sender domain and the domain of every
  listed address must be one of the operator's domains or lie within one.
- The legacy MX host, the contact, and the relay test's sender and recipient (their domains) may
  also lie outside everything managed (the zones of `dns.zones` and the departments' domains of
  `dashboard.operator_domains`): a hoster's MX, a contact at another provider. Within a managed
  name they must be the operator's too.

Names are compared as A-labels (IDNA 2008 with UTS 46 mapping, lower case), so `CHEM.Example.org`
and its U-label form are the same name; one that does not encode is compared as written, in lower
case, so it can pass only as a name within the operator's own domains (validation then refuses it).
An empty name is left to validation, which says that it is missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mailmove.base.addresses import listed_domains
from mailmove.base.config import Settings
from mailmove.base.errors import BadInput
from mailmove.base.inputs import DomainMoveRequest, ServerMoveRequest
from mailmove.base.names import BadName, to_alabel
from mailmove.dashboard.principal import Principal


def comparable(name: str) -> str:
    """The A-label of `name`, or the name as written in lower case when it has none."""
    try:
        return to_alabel(name)
    except BadName:
        return name.strip().rstrip(".").lower()


def within(name: str, domains: Iterable[str]) -> bool:
    """Whether `name` is one of `domains` or lies within one."""
    name = comparable(name)
    return any(name == d or name.endswith("." + d) for d in map(comparable, domains))


def sees(principal: Principal, name: str) -> bool:
    """Whether `principal` may see and act on the domain or host `name` (every one, unlimited)."""
    return not principal.domains or within(name, principal.domains)


@dataclass(frozen=True)
class Scope:
    principal: Principal
    zones: tuple[str, ...]  # the managed zones

    def own(self, field: str, name: str) -> None:
        if name.strip() and not within(name, self.principal.domains):
            yours = ", ".join(self.principal.domains)
            raise BadInput(field, f"{name.strip()[:100]!r} is not within your domains ({yours})")

    def own_if_managed(self, field: str, name: str) -> None:
        if within(name, self.zones):
            self.own(field, name)

    def mailbox(self, field: str, address: str) -> None:
        self.own_if_managed(field, address.rpartition("@")[2])


def _scope(settings: Settings, principal: Principal) -> Scope:
    """Managed: the configured zones, and every department's domains that the configuration
    names (`dashboard.operator_domains`), which may lie outside them (the centre's DNS)."""
    departments = (domain for domains in settings.dashboard.operator_domains.values() for domain in domains)
    return Scope(principal, (*(zone.name for zone in settings.dns.zones), *departments, *principal.domains))


def check_domain_move(settings: Settings, principal: Principal, request: DomainMoveRequest) -> None:
    """A BadInput naming the first field that names what is not the operator's (see above)."""
    if not principal.domains:
        return
    scope = _scope(settings, principal)
    scope.own("domain", request.domain)
    scope.own_if_managed("legacy_mx", request.legacy_mx)
    for domain in sorted(listed_domains(request.addresses_text, request.domain)):
        scope.own("addresses", domain)
    scope.mailbox("contact", request.contact)


def check_server_move(settings: Settings, principal: Principal, request: ServerMoveRequest) -> None:
    """A BadInput naming the first field that names what is not the operator's (see above)."""
    if not principal.domains:
        return
    scope = _scope(settings, principal)
    scope.own("old", request.old)
    scope.own("new", request.new)
    for domain in request.sender_domains:
        scope.own("sender_domain", domain)
    for field in ("contact", "mail_from", "rcpt"):
        scope.mailbox(field, getattr(request, field))
