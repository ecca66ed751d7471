"""docker-compose.yml against the code it runs (docker itself cannot run here).

Each check reads the stack's files (docker-compose.yml, .env.example, docker/)
and returns the problems it finds, as sentences. The repository's own files
must have none; deliberately broken copies must each be caught.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import urlsplit

import click
import pytest
import yaml

from tests.support.compose import (
    REPO,
    Service,
    Stack,
    celery_app_name,
    celery_cli,
    celery_subcommand,
    interpolate,
    pushserver_main,
    pushservers,
    serve_params,
    variables_used,
)

tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")

EXPRESS_SRC = Path("examples/express-dispatch/src")

# Images we do not build: the variables their entry points document.
THIRD_PARTY_ENV = {
    "redis": {"REDISCLI_AUTH"},  # redis-cli's password (the healthcheck's)
    "mongo": {"MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD"},
    "rabbitmq": {"RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"},
    "nginx": set(),
    "prometheus": set(),
    # Grafana reads any setting as GF_<SECTION>_<KEY> (Grafana docs, "Override configuration with environment
    # variables"): the ones docker-compose.yml sets.
    "grafana": {"GF_SECURITY_ADMIN_PASSWORD", "GF_USERS_ALLOW_SIGN_UP", "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"},
}
# Programs of those images a service may run instead of the image's own command.
THIRD_PARTY_PROGRAMS = {"redis": {"redis-server", "sh"}}
INITDB = "/docker-entrypoint-initdb.d"
# Flower reads any of its options as FLOWER_<OPTION> (flower docs, "Configuration").
FLOWER_OPTIONS = {
    "address",
    "auth",
    "auto_refresh",
    "basic_auth",
    "broker_api",
    "ca_certs",
    "certfile",
    "conf",
    "db",
    "debug",
    "enable_events",
    "format_task",
    "inspect_timeout",
    "keyfile",
    "max_workers",
    "max_tasks",
    "natural_time",
    "persistent",
    "port",
    "state_save_interval",
    "xheaders",
    "tasks_columns",
    "url_prefix",
    "unix_socket",
    "cookie_secret",
    "auth_provider",
    "purge_offline_workers",
    "unauthenticated_api",
}


# --- reading the code -----------------------------------------------------------

ENV_NAME = r"[A-Z][A-Z0-9_]*"


def _env_mapping(node: ast.AST) -> bool:
    """``os.environ``, ``environ`` or ``env`` (a Mapping parameter defaulting to os.environ)."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ"
    return isinstance(node, ast.Name) and node.id in ("environ", "env")


def _env_key(node: ast.AST) -> ast.AST | None:
    """The key expression of an environment read, or None when ``node`` is not one."""
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "get" and _env_mapping(func.value):
            return node.args[0]
        if isinstance(func, ast.Attribute) and func.attr == "getenv":
            return node.args[0]
    if isinstance(node, ast.Subscript) and _env_mapping(node.value):
        return node.slice
    return None


def python_env_reads(files: list[Path]) -> set[str]:
    """Variables read by ``files``: direct reads, and names passed to helpers that read them."""
    trees = [ast.parse(path.read_text(), str(path)) for path in files]
    names: set[str] = set()
    helpers: dict[str, int] = {}  # function name -> position of the parameter it reads
    for tree in trees:
        for node in ast.walk(tree):
            key = _env_key(node)
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                names.add(key.value)
        for func in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            params = [a.arg for a in func.args.args]
            for node in ast.walk(func):
                key = _env_key(node)
                if isinstance(key, ast.Name) and key.id in params:
                    helpers[func.name] = params.index(key.id)
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in helpers:
                position = helpers[node.func.id]
                if position < len(node.args):
                    arg = node.args[position]
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        names.add(arg.value)
    return {n for n in names if re.fullmatch(ENV_NAME, n)}


JS_ENV_READS = [
    re.compile(rf"\b(?:process\.)?env\.({ENV_NAME})\b"),  # process.env.X, env.X
    re.compile(rf"\b(?:process\.)?env\[\s*['\"]({ENV_NAME})['\"]\s*\]"),  # env['X']
    re.compile(rf"\b\w+\(\s*env\s*,\s*['\"]({ENV_NAME})['\"]"),  # text(env, 'X', ...)
]


def js_env_reads(files: list[Path]) -> set[str]:
    return {m for path in files for rx in JS_ENV_READS for m in rx.findall(path.read_text())}


def click_envvars(command: click.Command) -> set[str]:
    names: set[str] = set()
    for param in command.params:
        envvar = getattr(param, "envvar", None)
        names.update([envvar] if isinstance(envvar, str) else envvar or [])
    return names


def click_flags(command: click.Command) -> set[str]:
    return {opt for p in command.params for opt in [*p.opts, *p.secondary_opts] if opt.startswith("-")}


# --- reading the stack ------------------------------------------------------------


#: A variable reference: $X or ${X...}; $$ is an escaped dollar.
def url_port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or {"http": 80, "https": 443, "ws": 80, "wss": 443}[parts.scheme]


# --- the checks ----------------------------------------------------------------------


def check_entry_points(stack: Stack) -> Iterator[str]:
    """Every command names a real program, subcommand and flags."""
    scripts = tomllib.loads((stack.code / "pyproject.toml").read_text())["project"]["scripts"]
    main = pushserver_main()
    python_dockerfile = stack.root / "docker/python.Dockerfile"
    for service in stack.services.values():
        command = service.command
        if not command:
            continue  # the image's own CMD (check_node_image checks ours)
        if "build" not in service.spec and service.image.split("/")[-1].split(":")[0] in THIRD_PARTY_ENV:
            continue  # arguments to a third-party image's entry point (test_monitoring_stack.py checks Prometheus')
        program = command[0]
        if program in THIRD_PARTY_PROGRAMS.get(service.image.split("/")[-1].split(":")[0], ()):
            continue
        if program == "pushserver":
            if scripts.get("pushserver") != "pushserver.cli:main":
                yield "pyproject.toml [project.scripts] has no pushserver = pushserver.cli:main"
            sub = command[1] if len(command) > 1 else ""
            if sub not in main.commands:
                yield f"{service.name}: `pushserver {sub}` is not a command (have {sorted(main.commands)})"
                continue
            known = click_flags(main.commands[sub])
            for token in command[2:]:
                if token.startswith("-") and token.split("=")[0] not in known:
                    yield f"{service.name}: `pushserver {sub}` has no option {token}"
            try:
                serve_params(service)
            except click.ClickException as exc:
                yield f"{service.name}: `pushserver {sub}` refuses its arguments: {exc.format_message()}"
        elif program == "celery":
            global_options, sub, rest = celery_subcommand(command)
            app_name = celery_app_name(global_options)
            if app_name != "workers":
                yield f"{service.name}: celery runs -A {app_name}, not the workers app"
            else:
                from celery import Celery
                from celery.app.utils import find_app

                # What `celery -A workers` loads must be the app workers/app.py defines.
                app = find_app(app_name)
                if not isinstance(app, Celery) or app is not importlib.import_module("workers.app").app:
                    yield f"{service.name}: `-A workers` does not find the Celery app workers.app"
            if sub == "flower":
                text = python_dockerfile.read_text()
                if not re.search(r"pip install[^\n]*\bflower\b", text):
                    yield f"{service.name}: runs flower, but docker/python.Dockerfile does not install it"
                for token in rest:
                    option = token.lstrip("-").split("=")[0].replace("-", "_")
                    if token.startswith("--") and option not in FLOWER_OPTIONS:
                        yield f"{service.name}: flower has no option {token}"
            elif sub not in celery_cli().commands:
                yield f"{service.name}: `celery {sub}` is not a celery command"
            else:
                known = click_flags(celery_cli().commands[sub])
                for token in rest:
                    if token.startswith("-") and token.split("=")[0] not in known:
                        yield f"{service.name}: `celery {sub}` has no option {token}"
        else:
            yield f"{service.name}: unknown program {program!r}"


def env_read_by(stack: Stack, service: Service) -> set[str] | None:
    """What the program ``service`` runs reads from its environment (None: we cannot tell)."""
    command = service.command
    if command[:1] == ["pushserver"] and len(command) > 1 and command[1] in pushserver_main().commands:
        return click_envvars(pushserver_main().commands[command[1]])
    if command[:1] == ["celery"]:
        reads = python_env_reads(sorted((stack.code / "workers").glob("*.py")))
        if celery_subcommand(command)[1] == "flower":
            reads |= {f"FLOWER_{o.upper()}" for o in FLOWER_OPTIONS}
        return reads
    if "build" in service.spec and "node.Dockerfile" in service.spec["build"].get("dockerfile", ""):
        return js_env_reads(sorted((stack.code / EXPRESS_SRC).glob("*.js")))
    base = service.image.split("/")[-1].split(":")[0]
    reads = THIRD_PARTY_ENV.get(base)
    if base == "mongo" and reads is not None:
        reads = reads | js_env_reads(mongo_init_scripts(stack, service))
    return reads


def mongo_init_scripts(stack: Stack, service: Service) -> list[Path]:
    """The scripts the mongo image runs when its volume is first initialised (mounted on INITDB)."""
    scripts: list[Path] = []
    for volume in service.spec.get("volumes") or []:
        source, _, target = str(volume).partition(":")
        if target.split(":")[0].rstrip("/") == INITDB and source.startswith("."):
            scripts += sorted((stack.root / source).glob("*.js"))
    return scripts


def check_env_is_read(stack: Stack) -> Iterator[str]:
    """Every variable set for a service is one its program reads."""
    for service in stack.services.values():
        reads = env_read_by(stack, service)
        if reads is None:
            yield f"{service.name}: cannot tell which variables {service.image or service.command} reads"
            continue
        for name in sorted(set(service.raw_env) - reads):
            yield f"{service.name}: sets {name}, which its program never reads"
        if "env_file" in service.spec:
            yield f"{service.name}: env_file hands it every variable of the file; list the ones it reads"


def check_interpolation(stack: Stack) -> Iterator[str]:
    """Every ${X} is defined in .env.example, and every setting there is used."""
    text = "\n".join(line for line in stack.compose_text.splitlines() if not line.lstrip().startswith("#"))
    used = variables_used(text) | {n for v in stack.env_example.values() for n in variables_used(v)}
    for name in sorted(used - set(stack.env_example)):
        yield f"docker-compose.yml uses ${{{name}}}, which .env.example does not define"
    for name in sorted(set(stack.env_example) - used):
        yield f".env.example defines {name}, which docker-compose.yml never uses"
    for service in stack.services.values():
        try:
            service.env
        except KeyError as exc:
            yield f"{service.name}: {exc.args[0]}"


def check_shared_settings(stack: Stack) -> Iterator[str]:
    """The pushserver, the workers and Express agree on the secret, broker and backend."""
    servers = pushservers(stack)
    express = [s for s in stack.services.values() if "PUSHSERVER_PUBLIC_URL" in s.raw_env]
    celery = stack.runs("celery")
    if len(servers) < 2:
        yield f"want at least two `pushserver serve` replicas, have {len(servers)}"
    if not express:
        yield "no Express service (none sets PUSHSERVER_PUBLIC_URL)"
    for service, params in servers:
        if not params.get("secret") or params.get("insecure"):
            yield f"{service.name}: runs without a secret"
        for other in express:
            if params.get("secret") != other.env.get("PUSHSERVER_SECRET"):
                yield f"{service.name}: verifies tokens with another secret than {other.name} signs them with"
        for other in [*celery, *express]:
            for setting, variable in (("broker", "CELERY_BROKER_URL"), ("backend", "CELERY_RESULT_BACKEND")):
                if other.env.get(variable) != params[setting]:
                    yield (
                        f"{service.name}: {setting} {params[setting]} differs from"
                        f" {other.name}'s {variable} {other.env.get(variable)}"
                    )
        if params.get("mongo") and "mongo" not in stack.services:
            yield f"{service.name}: logs events to MongoDB, but there is no mongo service"
    for service in celery:
        _, sub, rest = celery_subcommand(service.command)
        if sub == "worker" and not {"-E", "--events", "--task-events"} & set(rest):
            yield f"{service.name}: a worker without -E sends no task events; the pushservers see nothing"


def nginx_upstream_servers(conf: str) -> list[tuple[str, int]]:
    servers = []
    for block in re.findall(r"upstream\s+\w+\s*\{(.*?)\}", conf, re.S):
        for host, port in re.findall(r"^\s*server\s+([\w.-]+):(\d+)", block, re.M):
            servers.append((host, int(port)))
    return servers


def check_ports(stack: Stack) -> Iterator[str]:
    """Ports agree between the commands, healthchecks, nginx and the public URLs."""
    servers = pushservers(stack)
    upstream = dict(nginx_upstream_servers(stack.nginx_conf))
    if set(upstream) != {s.name for s, _ in servers}:
        yield f"nginx upstream servers {sorted(upstream)} are not the pushservers {[s.name for s, _ in servers]}"
    origins = {o.strip() for _, params in servers for o in (params.get("cors") or "").split(",") if "://" in o}
    for service, params in servers:
        if params["host"] != "0.0.0.0":
            yield f"{service.name}: listens on {params['host']}, unreachable from the proxy"
        if not params["trust_proxy"]:
            yield f"{service.name}: behind nginx without --trust-proxy, every client has the proxy's address"
        if service.name in upstream and upstream[service.name] != params["port"]:
            yield f"{service.name}: listens on {params['port']}, nginx sends to {upstream[service.name]}"
        for url in service.healthcheck_urls():
            if url_port(url) != params["port"]:
                yield f"{service.name}: healthcheck {url} is not on port {params['port']}"

    proxies = [s for s in stack.services.values() if s.image.startswith("nginx")]
    listen = {int(p) for p in re.findall(r"^\s*listen\s+(?:[\d.]+:)?(\d+)", stack.nginx_conf, re.M)}
    for proxy in proxies:
        if not any(
            "/etc/nginx/nginx.conf" in str(v) and "docker/nginx.conf" in str(v) for v in proxy.spec.get("volumes") or []
        ):
            yield f"{proxy.name}: does not mount docker/nginx.conf as /etc/nginx/nginx.conf"
        published = proxy.published()
        if not set(published) & listen:
            yield f"{proxy.name}: publishes {sorted(published)}, nginx listens on {sorted(listen)}"
        public_ports = {published[p] for p in listen if p in published}
        for service in stack.services.values():
            url = service.env.get("PUSHSERVER_PUBLIC_URL")
            if url is not None and url_port(url) not in public_ports:
                yield f"{service.name}: PUSHSERVER_PUBLIC_URL {url} is not the proxy's published port {sorted(public_ports)}"

    for service in stack.services.values():
        if "PUSHSERVER_PUBLIC_URL" not in service.raw_env:
            continue
        port, host = int(service.env.get("PORT", 3000)), service.env.get("HOST", "127.0.0.1")
        published = service.published()
        if port not in published:
            yield f"{service.name}: listens on PORT {port}, publishes {sorted(published)}"
        if host != "0.0.0.0":
            yield f"{service.name}: listens on HOST {host}, unreachable from outside its container"
        for url in service.healthcheck_urls():
            if url_port(url) != port:
                yield f"{service.name}: healthcheck {url} is not on PORT {port}"
        if servers and port in published and not any(url_port(o) == published[port] for o in origins):
            yield f"{service.name}: the page's origin (port {published.get(port)}) is not in PUSHSERVER_CORS_ORIGINS"

    for service in stack.runs("celery"):
        if celery_subcommand(service.command)[1] == "flower":
            ports = [int(t.split("=")[1]) for t in service.command if t.startswith("--port=")] or [5555]
            if ports[0] not in service.published():
                yield f"{service.name}: flower listens on {ports[0]}, publishes {sorted(service.published())}"


def check_healthchecks(stack: Stack) -> Iterator[str]:
    """HTTP healthchecks ask /readyz; the pushservers, redis and mongo have one; depends_on waits for them."""
    for service in stack.services.values():
        for url in service.healthcheck_urls():
            if urlsplit(url).path != "/readyz":
                yield f"{service.name}: healthcheck asks {urlsplit(url).path}, not /readyz"
    for service in stack.runs("pushserver"):
        if not service.healthcheck_urls():
            yield f"{service.name}: no /readyz healthcheck"
    for name in ("redis", "mongo"):
        if not (stack.services.get(name) and stack.services[name].spec.get("healthcheck")):
            yield f"{name}: no healthcheck"
    for service in stack.services.values():
        depends = service.spec.get("depends_on") or {}
        for target, rule in depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends):
            if target not in stack.services:
                yield f"{service.name}: depends on unknown service {target}"
            elif (rule or {}).get("condition") == "service_healthy" and not stack.services[target].spec.get(
                "healthcheck"
            ):
                yield f"{service.name}: waits for {target} to be healthy, but it has no healthcheck"
            elif "profiles" in stack.services[target].spec:
                yield f"{service.name}: depends on {target}, which runs only in a profile"


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore ``patterns`` exclude ``path`` or a folder above it (roughly: fnmatch's
    ``*`` also crosses ``/``, so this errs towards reporting)."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    # Docker's **/x also matches x at the top.
    globs = {g for p in patterns for g in (p.strip("/"), p.strip("/").removeprefix("**/"))}
    return any(fnmatch(prefix, glob) for glob in globs for prefix in prefixes)


def dockerfile_copies(text: str) -> Iterator[tuple[list[str], str, bool]]:
    """(sources, destination, from another stage) for each COPY/ADD."""
    for line in re.sub(r"\\\n", " ", text).splitlines():
        words = line.split()
        if words and words[0].upper() in ("COPY", "ADD"):
            flags = [w for w in words[1:] if w.startswith("--")]
            paths = [w for w in words[1:] if not w.startswith("--")]
            yield paths[:-1], paths[-1], any(f.startswith("--from") for f in flags)


def check_dockerfiles(stack: Stack) -> Iterator[str]:
    """Every service we build has a Dockerfile whose COPY sources exist and are not .dockerignored."""
    built = [s for s in stack.services.values() if "build" in s.spec]
    if not built:
        yield "no service is built from this repository"
    for service in {stack.dockerfile(s): s for s in built}.values():  # each Dockerfile once
        context, dockerfile = stack.dockerfile(service)
        if not dockerfile.is_file():
            yield f"{service.name}: no Dockerfile {dockerfile.relative_to(stack.root)}"
            continue
        ignore_file = stack.root / ".dockerignore"
        ignored = (
            [p.strip() for p in ignore_file.read_text().splitlines() if p.strip() and not p.startswith("#")]
            if ignore_file.is_file()
            else []
        )
        for sources, _, from_stage in dockerfile_copies(dockerfile.read_text()):
            if from_stage:
                continue
            for source in sources:
                if not list(context.glob(source)):
                    yield f"{dockerfile.name}: COPY {source}: no such path in the build context"
                elif dockerignored(source, ignored):
                    yield f"{dockerfile.name}: COPY {source}: excluded by .dockerignore"


def check_node_image(stack: Stack) -> Iterator[str]:
    """The Node image builds the React client where Express serves it from, and runs server.js."""
    text = (stack.root / "docker/node.Dockerfile").read_text()
    scripts = json.loads((stack.code / "examples/react-client/package.json").read_text())["scripts"]
    if "npm run build" not in text or "build" not in scripts:
        yield "node.Dockerfile: does not build the React client with `npm run build`"
    final = text.split("\nFROM ")[-1]
    workdir = re.findall(r"^WORKDIR\s+(\S+)", final, re.M)[-1]
    config = (stack.code / EXPRESS_SRC / "config.js").read_text()
    hops = re.search(r"staticDir:\s*path\.resolve\(here,\s*([^)]*)\)", config).group(1)
    default_static = os.path.normpath(os.path.join(workdir, "src", *re.findall(r"'([^']*)'", hops)))
    copied = [dest for _, dest, from_stage in dockerfile_copies(final) if from_stage]
    static_dirs = {
        s.env.get("STATIC_DIR", default_static)
        for s in stack.services.values()
        if "node.Dockerfile" in str((s.spec.get("build") or {}).get("dockerfile"))
    }
    for static in static_dirs:
        if os.path.normpath(static) not in {os.path.normpath(d) for d in copied}:
            yield f"node.Dockerfile: Express serves {static}, the React build is copied to {copied}"
    cmd = re.findall(r"^CMD\s+(.*)$", final, re.M)[-1]
    entry = next(a for a in yaml.safe_load(cmd) if a.endswith(".js"))
    if not (stack.code / "examples/express-dispatch" / entry).is_file():
        yield f"node.Dockerfile: CMD runs {entry}, which does not exist"


# From the Compose Specification's JSON schema (compose-spec/compose-spec, schema/compose-spec.json).
SERVICE_KEYS = {
    "annotations",
    "attach",
    "blkio_config",
    "build",
    "cap_add",
    "cap_drop",
    "cgroup",
    "cgroup_parent",
    "command",
    "configs",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpu_shares",
    "cpus",
    "cpuset",
    "credential_spec",
    "depends_on",
    "deploy",
    "develop",
    "device_cgroup_rules",
    "devices",
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "entrypoint",
    "env_file",
    "environment",
    "expose",
    "extends",
    "external_links",
    "extra_hosts",
    "gpus",
    "group_add",
    "healthcheck",
    "hostname",
    "image",
    "init",
    "ipc",
    "isolation",
    "label_file",
    "labels",
    "links",
    "logging",
    "mac_address",
    "mem_limit",
    "mem_reservation",
    "mem_swappiness",
    "memswap_limit",
    "models",
    "network_mode",
    "networks",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "pids_limit",
    "platform",
    "ports",
    "post_start",
    "pre_stop",
    "privileged",
    "profiles",
    "provider",
    "pull_policy",
    "read_only",
    "restart",
    "runtime",
    "scale",
    "secrets",
    "security_opt",
    "shm_size",
    "stdin_open",
    "stop_grace_period",
    "stop_signal",
    "storage_opt",
    "sysctls",
    "tmpfs",
    "tty",
    "ulimits",
    "use_api_socket",
    "user",
    "userns_mode",
    "uts",
    "volumes",
    "volumes_from",
    "working_dir",
}
HEALTHCHECK_KEYS = {"disable", "interval", "retries", "test", "timeout", "start_period", "start_interval"}
TOP_LEVEL_KEYS = {"version", "name", "include", "services", "models", "networks", "volumes", "secrets", "configs"}


def check_compose_keys(stack: Stack) -> Iterator[str]:
    """No misspelt key: compose would reject the file (or, for x- keys, silently ignore it)."""
    for key in set(stack.compose) - TOP_LEVEL_KEYS:
        if not key.startswith("x-"):
            yield f"docker-compose.yml: unknown top-level key {key}"
    named_volumes = set(stack.compose.get("volumes") or {})
    for service in stack.services.values():
        for key in sorted(set(service.spec) - SERVICE_KEYS):
            yield f"{service.name}: unknown key {key}"
        for key in sorted(set(service.spec.get("healthcheck") or {}) - HEALTHCHECK_KEYS):
            yield f"{service.name}: unknown healthcheck key {key}"
        depends = service.spec.get("depends_on") or {}
        for target, rule in depends.items() if isinstance(depends, dict) else ():
            condition = (rule or {}).get("condition")
            if condition not in ("service_started", "service_healthy", "service_completed_successfully"):
                yield f"{service.name}: depends_on {target} with unknown condition {condition}"
        for volume in service.spec.get("volumes") or []:
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/", "~")) and source not in named_volumes:
                yield f"{service.name}: mounts volume {source}, which the top-level volumes do not declare"


SECRET_NAME = re.compile(r"PASS|SECRET|AUTH")
INTERNAL_PATHS = ("/readyz", "/metrics")


def check_hardening(stack: Stack) -> Iterator[str]:
    """Least privilege: each MongoDB client has its own least-privilege user, Redis and RabbitMQ need a
    password, no secret has an empty default, and nginx keeps /readyz and /metrics inside."""
    secrets = [k for k, v in stack.env_example.items() if not v]
    for service in stack.services.values():
        for name, raw in service.raw_env.items():
            if not SECRET_NAME.search(name) or not variables_used(raw):
                continue
            try:  # as if .env left every secret empty: compose must refuse, not start without one
                value = interpolate(raw, {**stack.values, **{k: "" for k in secrets}})
            except KeyError:
                continue
            yield (
                f"{service.name}: {name} does not require its secret ({raw!r} gives {value!r} when .env"
                " leaves it empty); use ${X:?...}"
            )
    redis = stack.services.get("redis")
    password = ""
    if redis is not None:
        script = " ".join(interpolate(a, stack.values) for a in redis.command)
        # `requirepass "$VAR"` written to a config file (out of `ps`), or --requirepass on the command line.
        from_env = re.search(r"requirepass\b[^$&|;]*\$\{?(\w+)", script)
        on_command_line = re.search(r"--requirepass\s+(\S+)", script)
        if from_env:
            password = redis.env.get(from_env.group(1), "")
        elif on_command_line:
            password = on_command_line.group(1).strip("'\"")
        if not password:
            yield "redis: runs without requirepass: any container on the network can read and forge events"
        elif "--requirepass" in script:
            yield "redis: --requirepass puts the password on the command line, which `ps` shows"
    for service in stack.services.values():
        for name, value in service.env.items():
            for url in re.findall(r"rediss?://[^\s,]+", value):
                if urlsplit(url).hostname == "redis" and (urlsplit(url).password or "") != password:
                    yield f"{service.name}: {name} reaches Redis without its password"
    yield from check_mongo_accounts(stack)
    conf = stack.nginx_conf
    for path in INTERNAL_PATHS:
        block = re.search(rf"location\s*=\s*{re.escape(path)}\s*\{{([^}}]*)\}}", conf)
        if not block or not re.search(r"return\s+40[34]|deny\s+all", block.group(1)):
            yield f"nginx: passes {path} to the outside (want `location = {path} {{ return 404; }}`)"


# Actions a custom MongoDB role of the example app may grant: reading and writing documents, nothing else.
DATA_ACTIONS = {"find", "insert", "update", "remove"}


@dataclass
class MongoUser:
    """An account an init script creates: where, with which credentials and roles."""

    db: str | None
    user: str | None
    password: str | None
    roles: list[tuple[str, str | None]]  # (role, database)
    script: str


def _js_value(token: str, script_vars: Mapping[str, str | None]) -> str | None:
    """A JS token of an init script: a "literal", or a `const x = process.env.X` variable."""
    token = token.strip()
    if token[:1] in "'\"":
        return token.strip("'\"")
    return script_vars.get(token)


def mongo_init_accounts(stack: Stack, mongo: Service) -> tuple[list[MongoUser], dict[tuple[str | None, str], set[str]]]:
    """The users and the custom roles (database, role) → actions the mongo service's init scripts create."""
    users: list[MongoUser] = []
    roles: dict[tuple[str | None, str], set[str]] = {}
    for script in mongo_init_scripts(stack, mongo):
        text = script.read_text()
        script_vars = {js: mongo.env.get(env) for js, env in re.findall(r"const (\w+) = process\.env\.(\w+)", text)}
        for db, body in re.findall(r"getSiblingDB\((\w+|\"[^\"]*\")\)\.createRole\(\{(.*?)\n\}\);", text, re.S):
            name = re.search(r"role:\s*\"(\w+)\"", body)
            actions = {
                a for group in re.findall(r"actions:\s*\[([^\]]*)\]", body) for a in re.findall(r"\"(\w+)\"", group)
            }
            if name:
                roles[(_js_value(db, script_vars), name.group(1))] = actions
        for db, body in re.findall(r"getSiblingDB\((\w+|\"[^\"]*\")\)\.createUser\(\{(.*?)\n\}\);", text, re.S):
            field = {k: v for k, v in re.findall(r"(user|pwd):\s*(\w+|\"[^\"]*\")", body)}
            granted = [
                (role, _js_value(role_db, script_vars))
                for role, role_db in re.findall(r"role:\s*[\"'](\w+)[\"'],\s*db:\s*(\w+|\"[^\"]*\")", body)
            ]
            users.append(
                MongoUser(
                    _js_value(db, script_vars),
                    _js_value(field.get("user", ""), script_vars),
                    _js_value(field.get("pwd", ""), script_vars),
                    granted,
                    script.name,
                )
            )
    return users, roles


def mongo_clients(stack: Stack) -> list[tuple[Service, str, str]]:
    """Each service that connects to MongoDB: its connection string and the database it owns (writes)."""
    found = [
        (service, params["mongo"], params["mongo_db"]) for service, params in pushservers(stack) if params.get("mongo")
    ]
    for service in stack.services.values():
        url = service.env.get("MONGO_URL")
        if url:
            # Express names its database MONGO_DB; the workers theirs MONGO_WORKERS_DB.
            own = (
                service.env.get("MONGO_DB")
                if service.command[:1] != ["celery"]
                else service.env.get("MONGO_WORKERS_DB")
            )
            found.append((service, url, own or ""))
    return found


def check_mongo_accounts(stack: Stack) -> Iterator[str]:
    """Each service reaching MongoDB logs in as its own user, created by an init script in the database it
    owns, with readWrite on that database alone plus roles of its own that only read or write documents."""
    mongo = stack.services.get("mongo")
    if mongo is None:
        return
    users, roles = mongo_init_accounts(stack, mongo)
    root = mongo.env.get("MONGO_INITDB_ROOT_USERNAME")
    programs_of_user: dict[str | None, set[str]] = {}
    for service, raw_url, own_db in mongo_clients(stack):
        url = urlsplit(raw_url)
        query = dict(part.partition("=")[::2] for part in url.query.split("&") if part)
        auth_source = query.get("authSource", url.path.strip("/") or "admin")
        if url.username == root:
            yield f"{service.name}: connects to MongoDB as the root user {root}"
            continue
        programs_of_user.setdefault(url.username, set()).add(" ".join(service.command[:2]) or service.name)
        account = next((u for u in users if (u.user, u.password) == (url.username, url.password)), None)
        if account is None:
            yield (
                f"{service.name}: connects to MongoDB as {url.username}, a user no init script creates"
                " with that password (so not readWrite alone on its database)"
            )
            continue
        if account.db != own_db or auth_source != account.db:
            yield (
                f"{service.name}: uses database {own_db} (authSource {auth_source}), but its user"
                f" {account.user} is created in {account.db}"
            )
        for role, role_db in account.roles:
            if role == "readWrite":
                if role_db != account.db:
                    yield (
                        f"mongo: {account.script} grants {account.user} readWrite on {role_db}, not its own"
                        f" database {account.db}: not readWrite alone on its own database"
                    )
            elif (role_db, role) in roles:
                extra = roles[(role_db, role)] - DATA_ACTIONS
                if extra:
                    yield f"mongo: role {role} on {role_db} grants {sorted(extra)}, beyond reading and writing documents"
            else:
                yield (
                    f"mongo: {account.script} grants {account.user} the role {role} on {role_db}:"
                    " not readWrite alone nor a role of its own"
                )
    for user, programs in programs_of_user.items():
        if len(programs) > 1:
            yield f"MongoDB user {user} is shared by {sorted(programs)}: each needs its own"


def with_and_without_settings(check: Callable[[Stack], Iterator[str]]) -> Callable[[Stack], Iterator[str]]:
    """Run ``check`` with .env.example's settings, then with compose's defaults for them."""

    def both(stack: Stack) -> Iterator[str]:
        yield from check(stack)
        yield from (f"{problem} (with compose's defaults)" for problem in check(stack.with_defaults()))

    both.__name__ = check.__name__
    return both


CHECKS: list[Callable[[Stack], Iterator[str]]] = [
    check_compose_keys,
    check_entry_points,
    check_env_is_read,
    check_interpolation,
    with_and_without_settings(check_shared_settings),
    with_and_without_settings(check_ports),
    check_healthchecks,
    check_dockerfiles,
    check_node_image,
    with_and_without_settings(check_hardening),
]


# --- the tests --------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack() -> Stack:
    return Stack(REPO)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_the_stack_is_consistent_with_the_code(stack: Stack, check: Callable[[Stack], Iterator[str]]) -> None:
    assert list(check(stack)) == []


def test_the_stack_has_every_service(stack: Stack) -> None:
    assert {
        "redis",
        "mongo",
        "rabbitmq",
        "worker",
        "beat",
        "pushserver-1",
        "pushserver-2",
        "proxy",
        "flower",
        "express",
    } <= set(stack.services)
    assert stack.services["rabbitmq"].spec["profiles"] == ["rabbitmq"]
    assert stack.services["worker"].command == ["celery", "-A", "workers", "worker", "-E", "-l", "info"]


def test_the_env_scan_finds_what_the_code_reads() -> None:
    workers = python_env_reads(sorted((REPO / "workers").glob("*.py")))
    assert {
        "CELERY_BROKER_URL",
        "CELERY_RESULT_BACKEND",
        "CELERY_VISIBILITY_TIMEOUT",
        "NIGHTLY_REPORT_EVERY",
        "OUTBOX_DIR",
        "MEDIA_DIR",
        "SMTP_URL",
        "MAIL_FROM",
        "WORKERS_RETRY_BACKOFF",
        "MONGO_URL",
        "MONGO_APP_DB",
        "MONGO_WORKERS_DB",
        "ARCHIVE_AFTER_DAYS",
    } <= workers
    express = js_env_reads(sorted((REPO / EXPRESS_SRC).glob("*.js")))
    assert {
        "PORT",
        "HOST",
        "PUSHSERVER_SECRET",
        "PUSHSERVER_PUBLIC_URL",
        "CELERY_BROKER_URL",
        "CELERY_RESULT_BACKEND",
        "CELERY_QUEUE",
        "TOKEN_TTL",
        "TOKEN_TTL_SECONDS",
        "CELERY_NODE_CLIENT",
        "SESSION_TTL_SECONDS",
        "STATIC_DIR",
        "MONGO_URL",
        "MONGO_DB",
        "MONGO_WORKERS_DB",
    } <= express


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $SET $$SET", env) == "x d  d x $SET"
    assert interpolate("${UNSET:-a${SET}b${UNSET:-c}} ${SET:-${UNSET:?never asked}}", env) == "axbc x"
    assert variables_used("${A:-x${B}y} $C $$D") == {"A", "B", "C"}
    with pytest.raises(KeyError):
        interpolate("${EMPTY:?fill it}", env)


def broken_copy(tmp_path: Path, file: str, old: str, new: str) -> Stack:
    for name in ("docker-compose.yml", ".env.example", ".dockerignore"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "docker", tmp_path / "docker")
    target = tmp_path / file
    text = target.read_text()
    assert old in text, f"{file} no longer contains {old!r}: update this test"
    target.write_text(text.replace(old, new))
    return Stack(tmp_path)


BROKEN = [
    ("docker-compose.yml", '"--trust-proxy"]', '"--trust-proxies"]', "has no option --trust-proxies"),
    ("docker-compose.yml", '["pushserver", "serve"', '["pushserver", "server"', "`pushserver server` is not a command"),
    ("docker-compose.yml", '"--port", "8000"', '"--port", "8001"', "listens on 8001, nginx sends to 8000"),
    ("docker-compose.yml", '"--port", "8000"', '"--port", "eighty"', "refuses its arguments"),
    ("docker-compose.yml", '"--host", "0.0.0.0"', '"--host", "127.0.0.1"', "unreachable from the proxy"),
    ("docker-compose.yml", "PUSHSERVER_CORS_ORIGINS: $", "PUSHSERVER_CORS: $", "sets PUSHSERVER_CORS, which"),
    ("docker-compose.yml", "OUTBOX_DIR: /data/outbox", "OUTBOX_PATH: /data/outbox", "sets OUTBOX_PATH, which"),
    ("docker-compose.yml", "TOKEN_TTL_SECONDS: ${TOKEN_TTL", "TOKEN_LIFETIME: ${TOKEN_TTL", "sets TOKEN_LIFETIME"),
    ("docker-compose.yml", '"-A", "workers", "worker"', '"-A", "tasks", "worker"', "not the workers app"),
    ("docker-compose.yml", '"worker", "-E"', '"worker", "--events-on"', "has no option --events-on"),
    ("docker-compose.yml", '"worker", "-E", ', '"worker", ', "a worker without -E"),
    ("docker-compose.yml", "127.0.0.1:8000/readyz", "127.0.0.1:8000/healthz", "asks /healthz, not /readyz"),
    ("docker-compose.yml", "127.0.0.1:8000/readyz", "127.0.0.1:8080/readyz", "is not on port 8000"),
    ("docker-compose.yml", 'ports: ["3000:3000"]', 'ports: ["3000:3001"]', "listens on PORT 3000, publishes [3001]"),
    ("docker-compose.yml", 'ports: ["8000:8000"]', 'ports: ["8080:8000"]', "is not the proxy's published port"),
    ("docker-compose.yml", "${TOKEN_TTL:-900}", "${TOKEN_LIFETIME:-900}", "uses ${TOKEN_LIFETIME}"),
    ("docker-compose.yml", "@redis:6379/1}\n    # Not the root", "@redis:6379/2}\n    # Not the root", "differs from"),
    (
        "docker-compose.yml",
        "PUSHSERVER_SECRET: ${PUSHSERVER_SECRET:?set PUSHSERVER_SECRET in .env (see .env.example)}\n      # Served",
        "PUSHSERVER_SECRET: ${MONGO_ROOT_PASSWORD}\n      # Served",
        "another secret",
    ),
    (
        ".env.example",
        "PUSHSERVER_PUBLIC_URL=http://localhost:8000",
        "PUSHSERVER_PUBLIC_URL=http://localhost:9000",
        "is not the proxy's published port",
    ),
    (
        ".env.example",
        "PUSHSERVER_CORS_ORIGINS=http://localhost:3000,http://127.0.0.1:3000",
        "PUSHSERVER_CORS_ORIGINS=http://localhost:5173",
        "not in PUSHSERVER_CORS_ORIGINS",
    ),
    (".env.example", "TOKEN_TTL=900\n", "", "does not define"),
    ("docker/nginx.conf", "server pushserver-2:8000", "server pushserver-2:9000", "nginx sends to 9000"),
    ("docker/nginx.conf", "listen 8000;", "listen 80;", "nginx listens on [80]"),
    ("docker/python.Dockerfile", ' "flower>=2.0,<3"', "", "does not install it"),
    ("docker/python.Dockerfile", "COPY workers ./workers", "COPY worker ./workers", "COPY worker: no such path"),
    ("docker/node.Dockerfile", "/app/examples/react-client/dist", "/app/react-client/dist", "Express serves"),
    (".dockerignore", "**/dist", "**/dist\nworkers", "excluded by .dockerignore"),
    ("docker-compose.yml", "    stop_grace_period: 60s", "    stop_grace: 60s", "unknown key stop_grace"),
    ("docker-compose.yml", "start_period: 15s", "start_after: 15s", "unknown healthcheck key start_after"),
    ("docker-compose.yml", '["worker-data:/data"]', '["workers-data:/data"]', "mounts volume workers-data"),
    # issue 11: least privilege
    (
        "docker-compose.yml",
        "${PUSHSERVER_MONGO_USER:-pushserver}:${PUSHSERVER_MONGO_PASSWORD:?set PUSHSERVER_MONGO_PASSWORD"
        " in .env}@mongo",
        "${MONGO_ROOT_USER:-admin}:${MONGO_ROOT_PASSWORD:?x}@mongo",
        "as the root user admin",
    ),
    ("docker-compose.yml", "?authSource=${PUSHSERVER_MONGO_DB:-pushserver}", "?authSource=admin", "authSource admin"),
    ("docker/mongo-init/pushserver-user.js", 'role: "readWrite"', 'role: "dbOwner"', "not readWrite alone"),
    ("docker/mongo-init/pushserver-user.js", "db: dbName }", 'db: "admin" }', "not readWrite alone"),
    ("docker-compose.yml", '      - "./docker/mongo-init:/docker-entrypoint-initdb.d:ro"\n', "", "not readWrite alone"),
    # issue 18: Express and the workers on MongoDB, each with its own user and database
    (
        "docker-compose.yml",
        'MONGO_URL: "mongodb://${EXPRESS_MONGO_USER:-express}:${EXPRESS_MONGO_PASSWORD:?set EXPRESS_MONGO_PASSWORD'
        " in .env}@mongo",
        'MONGO_URL: "mongodb://${MONGO_ROOT_USER:-admin}:${MONGO_ROOT_PASSWORD:?x}@mongo',
        "express: connects to MongoDB as the root user",
    ),
    (
        "docker-compose.yml",
        'MONGO_URL: "mongodb://${WORKERS_MONGO_USER:-workers}:${WORKERS_MONGO_PASSWORD:?set WORKERS_MONGO_PASSWORD'
        ' in .env}@mongo:27017/${WORKERS_MONGO_DB:-workers}?authSource=${WORKERS_MONGO_DB:-workers}"',
        'MONGO_URL: "mongodb://${EXPRESS_MONGO_USER:-express}:${EXPRESS_MONGO_PASSWORD:?x}@mongo:27017/${APP_MONGO_DB:-app}'
        '?authSource=${APP_MONGO_DB:-app}"',
        "shared by",
    ),
    (
        "docker/mongo-init/app-users.js",
        '[{ role: "readWrite", db: appDb }, { role: "reportsReader"',
        '[{ role: "readWriteAnyDatabase", db: "admin" }, { role: "reportsReader"',
        "not readWrite alone nor a role of its own",
    ),
    (
        "docker/mongo-init/app-users.js",
        '[{ role: "readWrite", db: workersDb }, { role: "workersOnApp"',
        '[{ role: "readWrite", db: appDb }, { role: "workersOnApp"',
        "not readWrite alone on its own database",
    ),
    (
        "docker/mongo-init/app-users.js",
        'actions: ["find", "update", "remove"]',
        'actions: ["find", "update", "remove", "dropDatabase"]',
        "beyond reading and writing documents",
    ),
    (
        "docker-compose.yml",
        "      MONGO_DB: ${APP_MONGO_DB:-app}\n",
        "      MONGO_DB: ${WORKERS_MONGO_DB:-workers}\n",
        "express: uses database workers",
    ),
    ("docker-compose.yml", "printf 'requirepass %s", "printf 'port %s", "redis: runs without requirepass"),
    (
        "docker-compose.yml",
        "REDISCLI_AUTH: ${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}",
        "REDISCLI_AUTH: ${REDIS_PASSWORD:-}",
        "REDISCLI_AUTH does not require its secret",
    ),
    (
        "docker-compose.yml",
        'command: ["sh", "-c", "umask',
        'command: ["redis-server", "--requirepass", "x"]\n    x: ["sh", "-c", "umask',
        "puts the password on the command line",
    ),
    (
        "docker-compose.yml",
        "redis://:${REDIS_PASSWORD}@redis:6379/0}\n      CELERY_RESULT",
        "redis://redis:6379/0}\n      CELERY_RESULT",
        "reaches Redis without its password",
    ),
    (
        ".env.example",
        "CELERY_BROKER_URL=redis://:${REDIS_PASSWORD}@redis",
        "CELERY_BROKER_URL=redis://redis",
        "reaches Redis without its password",
    ),
    (
        "docker-compose.yml",
        "${RABBITMQ_PASSWORD:?set RABBITMQ_PASSWORD in .env}",
        "${RABBITMQ_PASSWORD:-}",
        "RABBITMQ_DEFAULT_PASS does not require its secret",
    ),
    (
        "docker-compose.yml",
        "${RABBITMQ_PASSWORD:?set RABBITMQ_PASSWORD in .env}",
        "${RABBITMQ_PASSWORD:-guest}",
        "RABBITMQ_DEFAULT_PASS does not require its secret",
    ),
    (
        "docker/nginx.conf",
        "location = /readyz {\n            return 404;",
        "location = /readyz {\n            proxy_pass http://pushserver;",
        "nginx: passes /readyz to the outside",
    ),
    ("docker/nginx.conf", "location = /metrics {", "location = /metricz {", "nginx: passes /metrics to the outside"),
]


@pytest.mark.parametrize(("file", "old", "new", "problem"), BROKEN, ids=[b[3] for b in BROKEN])
def test_a_broken_stack_is_caught(tmp_path: Path, file: str, old: str, new: str, problem: str) -> None:
    stack = broken_copy(tmp_path, file, old, new)
    problems = [p for check in CHECKS for p in check(stack)]
    assert any(problem in p for p in problems), problems
