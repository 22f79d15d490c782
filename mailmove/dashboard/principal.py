"""Who is asking, once authenticated (mailmove/dashboard/auth.py): a name for the audit, a role,
and the domains an operator is limited to. Roles: viewer < operator < admin."""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("viewer", "operator", "admin")


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    domains: tuple[str, ...] = ()  # empty: every domain
    via: str = "session"  # session, token, proxy

    def can(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)
