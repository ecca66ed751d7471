"""Settings declare every ``pushserver serve`` flag once: the command line and the README table follow from them."""

from __future__ import annotations

import re
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

import click
import pytest

from pushserver.cli import serve
from pushserver.config import Option, Settings, option_of

README = Path(__file__).resolve().parents[2] / "README.md"
SETTINGS = fields(Settings)


def parse(args: list[str]) -> Settings:
    """What ``pushserver serve ARGS`` would run with, without running it."""
    ctx = serve.make_context("serve", args)
    return Settings.from_options(ctx.params)


@pytest.fixture(autouse=True)
def _no_pushserver_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for setting in SETTINGS:
        for name in option_of(setting).env:
            monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_has_a_flag_an_env_var_and_help(setting: Field[Any]) -> None:
    opt = option_of(setting)
    assert isinstance(opt, Option)
    assert re.fullmatch(r"--[a-z][a-z-]*(/--no-[a-z-]+)?", opt.flag)
    assert opt.env and all(re.fullmatch(r"[A-Z][A-Z_]*", name) for name in opt.env)
    assert opt.env[0].startswith("PUSHSERVER_")
    assert opt.help.strip().endswith(".")


def test_flags_and_env_vars_are_unique() -> None:
    flags = [option_of(s).flag.split("/")[0] for s in SETTINGS]
    envs = [name for s in SETTINGS for name in option_of(s).env]
    assert len(set(flags)) == len(flags)
    assert len(set(envs)) == len(envs)


def test_serve_has_one_option_per_setting_in_field_order() -> None:
    options = [p for p in serve.params if isinstance(p, click.Option) and p.name != "help"]
    assert [p.name for p in options] == [option_of(s).param for s in SETTINGS]
    for param, setting in zip(options, SETTINGS):
        opt = option_of(setting)
        assert param.opts[0] == opt.flag.split("/")[0]
        assert param.show_envvar and param.help == opt.help


def test_no_flags_give_the_dataclass_defaults() -> None:
    assert parse([]) == Settings()


def test_flags_become_settings() -> None:
    settings = parse(
        [
            "--secret",
            "a, b",
            "--cors",
            "https://x.example",
            "--max-backlog",
            "160",
            "--mongo",
            "",
            "--log-level",
            "debug",
            "--forward-args",
            "--insecure",
            "--subscribe-rate",
            "50",
            "--receiver",
            "thread",
            "--port",
            "0",
        ]
    )
    assert settings.secrets == ["a", "b"]
    assert settings.cors_origins == ["https://x.example"]
    assert (settings.hard_backlog, settings.soft_backlog) == (160, 10)
    assert settings.mongo_url is None  # an empty value is no value
    assert settings.log_level == "DEBUG"
    assert settings.forward_args and settings.insecure and not settings.forward_tracebacks
    assert settings.subscribe_burst == 250.0
    assert (settings.receiver, settings.port) == ("thread", 0)


def test_env_vars_become_settings_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://celery-env/0")
    monkeypatch.setenv("PUSHSERVER_MAX_TASKS", "7")
    monkeypatch.setenv("PUSHSERVER_TRUST_PROXY", "1")
    monkeypatch.setenv("PUSHSERVER_EVENT_QUEUE", "replica-a")
    settings = parse(["--max-tasks", "9"])
    assert settings.broker_url == "redis://celery-env/0"
    assert settings.max_tasks == 9
    assert settings.trust_proxy and settings.event_queue == "replica-a"
    monkeypatch.setenv("PUSHSERVER_BROKER_URL", "redis://pushserver-env/0")
    assert parse([]).broker_url == "redis://pushserver-env/0"  # the first env var wins


def test_out_of_range_values_are_refused_by_click() -> None:
    with pytest.raises(click.BadParameter):
        parse(["--max-backlog", "8"])
    with pytest.raises(click.BadParameter):
        parse(["--forward-results", "all"])


def test_readme_configuration_table_lists_every_flag_and_env_var() -> None:
    text = README.read_text()
    section = text[text.index("## Configuration") :]
    section = section[: section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("| `--")]
    flags_column = " ".join(row.split(" | ")[0] for row in rows)
    env_column = " ".join(row.split(" | ")[1] for row in rows)
    for setting in SETTINGS:
        opt = option_of(setting)
        assert f"`{opt.flag.split('/')[0]}" in flags_column, f"README's table lacks {opt.flag}"
        for name in opt.env:
            assert f"`{name}`" in env_column, f"README's table lacks {name} ({opt.flag})"
