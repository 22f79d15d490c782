"""A reverse proxy's identity header is taken only from a connection that comes from a trusted
proxy's own address: an X-Forwarded-For naming the proxy does not make a loopback client one
(uvicorn's default `proxy_headers` once rewrote the address before auth.py compared it, and
`X-Remote-User: boss` minted an admin token). Real uvicorn, httpx over TCP as the attacker."""

from __future__ import annotations

import httpx

from mailmove.dashboard.auth import list_tokens
from mailmove.dashboard.serve import serving
from tests.support.local_dashboard import base_url, dashboard_settings

PROXIED = {"proxy_header": "X-Remote-User", "roles": {"boss": "admin", "carol": "operator"}}


async def test_a_forwarded_header_does_not_make_a_client_the_proxy(tmp_path):
    settings = dashboard_settings(tmp_path, trusted_proxies=("10.9.9.9",), **PROXIED)
    spoofed = {"X-Remote-User": "boss", "X-Forwarded-For": "10.9.9.9"}
    async with serving(settings, None, login=False), httpx.AsyncClient(base_url=base_url(settings)) as attacker:
        r = await attacker.get("/api/tokens", headers=spoofed)
        assert r.status_code == 401, r.text
        r = await attacker.post("/api/tokens", json={"name": "mine", "role": "admin"}, headers=spoofed)
        assert r.status_code == 401, r.text
        r = await attacker.get("/", headers=spoofed)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert list_tokens(settings) == []


async def test_the_real_proxy_is_judged_by_its_own_address(tmp_path):
    """A proxy on loopback that forwards its client's address still signs its users in: the
    address it adds is not taken for the connection's."""
    settings = dashboard_settings(tmp_path, trusted_proxies=("127.0.0.1",), **PROXIED)
    forwarded = {"X-Remote-User": "carol", "X-Forwarded-For": "203.0.113.7"}
    async with serving(settings, None, login=False), httpx.AsyncClient(base_url=base_url(settings)) as proxy:
        r = await proxy.get("/api/migrations", headers=forwarded)
        assert r.status_code == 200, r.text
        r = await proxy.post("/api/tokens", json={"name": "mine"}, headers=forwarded)
        assert r.status_code == 403 and r.json()["field"] == "role"  # carol is an operator


async def test_a_user_name_that_is_not_one_printable_line_is_refused(tmp_path):
    """The proxy's user becomes the actor of the audit and of e-mail: no control characters, no
    line breaks, no markup, nothing longer than the store keeps."""
    settings = dashboard_settings(tmp_path, trusted_proxies=("127.0.0.1",), **PROXIED)
    async with serving(settings, None, login=False), httpx.AsyncClient(base_url=base_url(settings)) as proxy:
        for name in ("carol\x1b[31m", "carol\tadmin", "<b>carol</b>", "c" * 201):
            r = await proxy.get("/api/migrations", headers={"X-Remote-User": name})
            assert r.status_code == 401 and r.json()["field"] == "X-Remote-User", (name, r.text)
