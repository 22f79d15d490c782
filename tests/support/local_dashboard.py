"""A dashboard for the attacks on sign-in: the real app on uvicorn (dashboard.serve.serving) on a
free loopback port, with a SQLite store of its own and no Temporal (the pages these attacks use
read the store alone)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mailmove.base.config import HostPort, Settings, load_settings
from mailmove.sandbox.bind import free_port


def dashboard_settings(tmp_path: Path, **dashboard) -> Settings:
    config = tmp_path / "mailmove.toml"
    config.write_text('[paths]\nvar = "var"\n')
    return on_new_port(load_settings(config, environ={}), **dashboard)


def on_new_port(settings: Settings, **dashboard) -> Settings:
    """The same store and session secret, another listen port, these `dashboard` keys changed:
    a second dashboard, or the first one restarted with another configuration."""
    listen = HostPort("127.0.0.1", free_port())
    return replace(settings, dashboard=replace(settings.dashboard, listen=listen, **dashboard))


def base_url(settings: Settings) -> str:
    return f"http://{settings.dashboard.listen}"
