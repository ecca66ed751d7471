"""The docker-compose stack as data: its services, their commands and environment after interpolation, and the
settings each ``pushserver serve`` in it would run with (docker itself cannot run here)."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any
from unittest import mock

import click
import yaml

REPO = Path(__file__).resolve().parents[2]


VARIABLE = re.compile(r"\$(?:\$|\{(?P<braced>[A-Za-z_]\w*)|(?P<bare>[A-Za-z_]\w*))")
OPERATORS = (":-", ":?", "-", "?")


def variables_used(text: str) -> set[str]:
    """Every variable ``text`` refers to, nested defaults included."""
    return {m.group("braced") or m.group("bare") for m in VARIABLE.finditer(text) if m.group(0) != "$$"}


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution: $X, ${X}, ${X:-default}, ${X-default}, ${X:?err}, $$, and defaults
    that hold references themselves (``${URL:-redis://:${PASSWORD}@redis}``)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        m = VARIABLE.match(text, i) if text[i] == "$" else None
        if m is None:
            out.append(text[i])
            i += 1
            continue
        if m.group(0) == "$$":
            out.append("$")
            i = m.end()
            continue
        if m.group("bare"):
            out.append(env.get(m.group("bare")) or "")
            i = m.end()
            continue
        name, j = m.group("braced"), m.end()
        op = next((o for o in OPERATORS if text.startswith(o, j)), None)
        j += len(op or "")
        depth, k = 0, j  # the argument runs to the matching brace
        while k < len(text) and (text[k] != "}" or depth):
            if text.startswith("${", k):
                depth += 1
                k += 1
            elif text[k] == "}":
                depth -= 1
            k += 1
        arg, i = text[j:k], k + 1
        value = env.get(name)
        unset = not value if op in (":-", ":?") else value is None
        if unset and op in (":-", "-"):
            out.append(interpolate(arg, env))
        elif unset and op in (":?", "?"):
            raise KeyError(f"${{{name}}} is required: {arg}")
        else:
            out.append(value or "")
    return "".join(out)


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            env[key.strip()] = value.strip().strip("'\"")
    return env


def argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


@dataclass
class Service:
    name: str
    spec: dict[str, Any]
    values: Mapping[str, str]  # .env values used to resolve ${...}

    @property
    def command(self) -> list[str]:
        return argv(self.spec.get("command"))

    @property
    def image(self) -> str:
        return str(self.spec.get("image", ""))

    @property
    def raw_env(self) -> dict[str, str]:
        env = self.spec.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.partition("=")[::2] for item in env)
        return {str(k): "" if v is None else str(v) for k, v in env.items()}

    @property
    def env(self) -> dict[str, str]:
        return {k: interpolate(v, self.values) for k, v in self.raw_env.items()}

    def published(self) -> dict[int, int]:
        """Container port -> host port."""
        ports: dict[int, int] = {}
        for entry in self.spec.get("ports") or []:
            parts = interpolate(str(entry), self.values).split("/")[0].split(":")
            ports[int(parts[-1])] = int(parts[-2] if len(parts) > 1 else parts[-1])
        return ports

    def healthcheck_urls(self) -> list[str]:
        test = " ".join(argv((self.spec.get("healthcheck") or {}).get("test")))
        return re.findall(r"https?://[^\s'\"]+", test)


@dataclass
class Stack:
    """The stack files under ``root``; the code they refer to under ``code``."""

    root: Path
    code: Path = REPO
    defaults: bool = False  # resolve ${...} as if .env set only the secrets: compose's defaults apply

    def with_defaults(self) -> Stack:
        return Stack(self.root, self.code, defaults=True)

    @cached_property
    def compose_text(self) -> str:
        return (self.root / "docker-compose.yml").read_text()

    @cached_property
    def compose(self) -> dict[str, Any]:
        return yaml.safe_load(self.compose_text)

    @cached_property
    def env_example(self) -> dict[str, str]:
        return read_env_file(self.root / ".env.example")

    @cached_property
    def values(self) -> dict[str, str]:
        """.env.example with its empty secrets filled in, as a user's .env would be (compose interpolates
        ${X} in .env values too)."""
        filled = {k: v or f"filled-{k.lower()}" for k, v in self.env_example.items() if not (self.defaults and v)}
        return {k: interpolate(v, filled) for k, v in filled.items()}

    @cached_property
    def services(self) -> dict[str, Service]:
        return {name: Service(name, spec or {}, self.values) for name, spec in self.compose["services"].items()}

    @cached_property
    def nginx_conf(self) -> str:
        """docker/nginx.conf without its comments."""
        return re.sub(r"#[^\n]*", "", (self.root / "docker/nginx.conf").read_text())

    def dockerfile(self, service: Service) -> tuple[Path, Path]:
        """(build context, under ``code``; Dockerfile, under ``root``) of a service we build."""
        build = service.spec["build"]
        context = self.code / build.get("context", ".")
        return context, self.root / build.get("context", ".") / build.get("dockerfile", "Dockerfile")

    def runs(self, program: str) -> list[Service]:
        return [s for s in self.services.values() if s.command[:1] == [program]]


def pushserver_main() -> click.Group:
    from pushserver.cli import main

    return main


def celery_cli() -> click.Group:
    from celery.bin.celery import celery

    return celery


def celery_subcommand(command: list[str]) -> tuple[list[str], str, list[str]]:
    """Split ``celery [global options] sub [options]`` into its three parts."""
    takes_value = {o for p in celery_cli().params if not getattr(p, "is_flag", False) for o in p.opts}
    i = 1
    while i < len(command) and command[i].startswith("-"):
        i += 1 if "=" in command[i] or command[i] not in takes_value else 2
    return command[1:i], command[i] if i < len(command) else "", command[i + 1 :]


def celery_app_name(global_options: list[str]) -> str | None:
    for i, token in enumerate(global_options):
        if token in ("-A", "--app") and i + 1 < len(global_options):
            return global_options[i + 1]
        if token.startswith("--app="):
            return token.split("=", 1)[1]
    return None


def serve_params(service: Service) -> dict[str, Any]:
    """The settings ``pushserver serve`` would run with in ``service``: its flags, then its env."""
    args = service.command[1:]
    command = pushserver_main().commands[args[0]]
    with mock.patch.dict(os.environ, service.env, clear=True):
        return command.make_context(args[0], args[1:]).params


def pushservers(stack: Stack) -> list[tuple[Service, dict[str, Any]]]:
    """Each service running ``pushserver serve`` with the settings it gets (unparsable ones left out:
    check_entry_points reports them)."""
    found = []
    for service in stack.runs("pushserver"):
        try:
            if service.command[1] == "serve":
                found.append((service, serve_params(service)))
        except (IndexError, KeyError, click.ClickException):
            pass
    return found
