"""Fuzzing the configuration: the TOML file, the `MAILMOVE_*` environment over it, and the
values read out of both (durations, `host:port`, networks).

The property: whatever the file and the environment hold, loading gives settings whose values
can be used, or a ConfigError naming the dotted key (`mailmove` exits 2 with it); never
another exception, a hang, or a duration that breaks later when a timer is made of it.
"""

from __future__ import annotations

import math
from dataclasses import fields
from datetime import timedelta

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mailmove.base.config import Settings, keys_of, load_settings, parse_duration, parse_host_port, parse_settings
from mailmove.base.errors import ConfigError
from mailmove.base.model import Timings
from tests.support.fuzzing import addresses, digits, durations, host_names, junk, names

# every table of the file and its keys, as the settings dataclasses declare them
KEYS = {section: list(keys_of(table)) for section, (table, _) in keys_of(Settings).items()}

# what TOML can hold, and what an operator may plausibly write for a key
_scalars = st.one_of(
    junk,
    st.integers(),
    st.floats(),
    st.booleans(),
    st.datetimes(),
    durations,
    names,
    addresses,
    st.builds("{}:{}".format, st.one_of(host_names(), addresses), digits),
    st.builds("{}/{}".format, addresses, digits),
)
toml_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(junk, inner, max_size=3)),
    max_leaves=8,
)


@st.composite
def documents(draw) -> dict:
    """A parsed configuration file: known sections with mostly known keys, and some of anything."""
    raw: dict = {}
    for section in draw(st.lists(st.sampled_from(sorted(KEYS)), max_size=4, unique=True)):
        keys = draw(st.lists(st.one_of(st.sampled_from(KEYS[section]), junk), max_size=4, unique=True))
        raw[section] = {key: draw(toml_values) for key in keys}
    if draw(st.booleans()):
        raw[draw(st.one_of(st.sampled_from(sorted(KEYS)), junk))] = draw(toml_values)
    return raw


def named(field: str) -> bool:
    """The error names a key of a known table (or the file itself), so a person knows where to look."""
    return field.partition(".")[0] in {*KEYS, "config", "--config"}


def usable(settings: Settings) -> None:
    """What later code relies on: every duration becomes a timer, every port is a port."""
    for seconds in (
        *(getattr(settings.timing, f.name) for f in fields(Timings)),
        settings.dns.timeout,
        settings.portal.timeout,
        settings.smtp.timeout,
        settings.check.timeout,
    ):
        assert math.isfinite(seconds) and seconds >= 0
        timedelta(seconds=seconds)
    for hostport in (settings.gateway.relay, settings.dashboard.listen, *settings.dns.resolvers):
        assert hostport.host and 0 < hostport.port < 65536


@given(st.one_of(durations, st.integers(), st.floats(), st.booleans(), toml_values))
@example(10**400)  # an integer float() cannot take (OverflowError)
@example(math.inf)  # TOML's `inf`
@example("9" * 400)  # a float of infinity
@example("99999999999999999d")  # beyond what a timer (timedelta) can hold
def test_a_duration_is_seconds_a_timer_can_take_or_a_config_error(value):
    try:
        seconds = parse_duration(value, "timing.probe_interval")
    except ConfigError as exc:
        assert exc.field == "timing.probe_interval"
        return
    assert math.isfinite(seconds) and seconds >= 0
    timedelta(seconds=seconds)


@given(st.one_of(st.builds("{}:{}".format, st.one_of(host_names(), addresses), digits), names, addresses, toml_values))
@example("mail.example.org:²")  # str.isdigit() took it, int() did not
@example("mail.example.org:" + "9" * 5000)  # more digits than int() converts
@example("[::1]:٢٥")
def test_host_port_is_a_host_and_a_port_or_a_config_error(value):
    try:
        target = parse_host_port(value, 25, "gateway.relay")
    except ConfigError as exc:
        assert exc.field == "gateway.relay"
        return
    assert target.host and 0 < target.port < 65536


@given(documents())
@example({"paths": {"var": "a\x00b"}})  # a NUL in a path: Path.resolve() raised ValueError
@example({"dns": {"timeout": math.inf}})
@example({"timing": {"escalate_after": 10**400}})
def test_a_configuration_is_settings_or_a_config_error(tmp_path, raw):
    try:
        settings = parse_settings(raw, tmp_path)
    except ConfigError as exc:
        assert named(exc.field)
        return
    usable(settings)


_env_names = st.one_of(
    st.builds(
        lambda section, key: f"MAILMOVE_{section}_{key}".upper(),
        st.sampled_from(sorted(KEYS)),
        st.one_of(st.sampled_from(sorted({k for keys in KEYS.values() for k in keys})), junk),
    ),
    st.builds("MAILMOVE_{}".format, junk),
)
_env_values = st.one_of(
    junk, durations, names, st.sampled_from(["[", "{", "[1, 2", '{ a = "b" }', '["a", 1]', "inf", "nan", "true"])
).filter(lambda v: "\x00" not in v)  # the environment cannot hold a NUL
_toml_lines = st.one_of(
    st.builds("[{}]".format, st.one_of(st.sampled_from(sorted(KEYS)), junk)),
    st.builds("{} = {}".format, st.sampled_from(sorted({k for keys in KEYS.values() for k in keys})), _env_values),
    st.builds('{} = "{}"'.format, st.sampled_from(["url", "listen", "relay", "var"]), junk),
    junk,
)


@given(
    st.one_of(st.lists(_toml_lines, max_size=8).map("\n".join), junk),
    st.dictionaries(_env_names, _env_values, max_size=4),
)
@example("temporal = 5", {"MAILMOVE_TEMPORAL_ADDRESS": "x"})  # a section that is no table, overridden
@example("v = " + "[" * 5000, {})  # nesting deeper than the TOML reader's recursion
@example("", {"MAILMOVE_GATEWAY_MX": "[" * 5000})
@example('[paths]\nvar = "a\\u0000b"', {})
def test_a_file_and_the_environment_are_settings_or_a_config_error(tmp_path, text, environ):
    path = tmp_path / "mailmove.toml"
    path.write_text(text, encoding="utf-8")
    try:
        settings = load_settings(path, environ)
    except ConfigError as exc:
        assert named(exc.field)
        return
    usable(settings)


@given(st.binary(max_size=100))
@example(b"\xff\xfe[temporal]")  # not UTF-8
def test_a_file_of_any_bytes_is_settings_or_a_config_error(tmp_path, data):
    path = tmp_path / "mailmove.toml"
    path.write_bytes(data)
    try:
        load_settings(path, {})
    except ConfigError as exc:
        assert named(exc.field)


def test_a_folder_or_a_nul_for_the_configuration_is_a_config_error(tmp_path):
    for path in (tmp_path, "a\x00b"):
        with pytest.raises(ConfigError) as refused:
            load_settings(path, {})
        assert refused.value.field == "--config"
