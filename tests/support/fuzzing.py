"""What the fuzz tests (test_fuzz_*.py) share: hypothesis's profiles and the strategies for the
shapes outside input takes (host names and IDNs, addresses, durations).

The profile `ci` (the default) keeps every fuzz file under a minute on two cores; `deep`
(`MAILMOVE_FUZZ=deep`, with `pytest --timeout 0`) runs a hundred times more, for bug hunting.
No example database: what a run found is kept as an `@example` on the property instead.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from mailmove.base.config import Settings, parse_settings

settings.register_profile(
    "ci",
    max_examples=100,
    deadline=timedelta(seconds=2),  # a parser that takes longer than this on one input is hanging
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("deep", parent=settings.get_profile("ci"), max_examples=10_000)
settings.load_profile(os.environ.get("MAILMOVE_FUZZ", "ci"))

# any text a person or a peer may send: control characters, format marks, any script
junk = st.text(max_size=80)
digits = st.one_of(st.from_regex(r"[0-9]{1,6}", fullmatch=True), st.text("0123456789²³¹٠١٢३४", max_size=8))

label = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
    st.text(st.characters(categories=("Ll", "Lu", "Lo", "Mn", "Nd", "Pd")), min_size=1, max_size=12),
    st.builds("xn--{}".format, st.from_regex(r"[a-z0-9-]{0,12}", fullmatch=True)),
    st.sampled_from(["-a", "a-", "a_b", "ß", "ﬀ", "İ", "\u200d", "a" * 64, "ａ", "١٢"]),
    junk,
)


@st.composite
def host_names(draw) -> str:
    """Names as people type them: mostly plausible, some with a trailing dot, blanks or junk."""
    labels = draw(st.lists(label, min_size=1, max_size=5))
    name = ".".join(labels + draw(st.sampled_from([["tu-darmstadt", "de"], ["test"], []])))
    decoration = draw(st.sampled_from(["", ".", " ", "..", "@", "/"]))
    return draw(st.sampled_from([name, name + decoration, decoration + name, name.upper()]))


names = st.one_of(host_names(), junk)
# names that pass, so that the checks after the name are reached too
plausible_domains = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]\.tu-darmstadt\.de", fullmatch=True),
    st.sampled_from(["chem.tu-darmstadt.de", "MÜLLER.tu-darmstadt.de", "xn--mller-kva.tu-darmstadt.de", "a.test."]),
)
plausible_hosts = st.builds("{}.{}".format, st.sampled_from(["mail", "mx2", "smtp", "bücher"]), plausible_domains)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
addresses = st.one_of(ipv4, ipv6, junk, st.sampled_from(["0.0.0.0", "::", "224.0.0.1", "1.2.3.4/32", "fe80::1%eth0"]))


@st.composite
def mailboxes(draw, domain: str | None = None) -> str:
    local = draw(st.one_of(st.from_regex(r"[a-z0-9._+-]{1,20}", fullmatch=True), junk, st.just('"a b"')))
    return f"{local}@{domain or draw(names)}"


durations = st.one_of(
    st.from_regex(r"[0-9]{1,4}(\.[0-9]{1,3})?(ms|s|m|h|d|w)?", fullmatch=True),
    st.lists(st.from_regex(r"[0-9]{1,3}[smhdw]", fullmatch=True), min_size=1, max_size=4).map("".join),
    st.text("0123456789.smhdw ²١", max_size=30),
    junk,
)


def closed_port() -> int:
    """A loopback port nobody listens on (taken from the kernel, then let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def reaching_nothing(base: Path, **sections: dict) -> Settings:
    """Settings in `base` with a TSIG key and a portal nobody answers at, `sections` merged in:
    every check of a start runs, no packet leaves loopback."""
    (base / "tsig.key").write_text('key "k" { algorithm hmac-sha256; secret "c2VjcmV0"; };\n')
    raw = {
        "dns": {"tsig_keyfile": "tsig.key"},
        "database": {"url": "sqlite:///store.db"},
        "portal": {"url": f"http://127.0.0.1:{closed_port()}/"},
    }
    for name, values in sections.items():
        raw[name] = raw.get(name, {}) | values
    return parse_settings(raw, base)
