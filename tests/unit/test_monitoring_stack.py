"""docker-compose.yml's monitoring profile against deploy/prometheus and deploy/grafana (docker cannot run here).

Like test_compose.py: each check returns the problems it finds, as sentences;
the repository's files must have none, and deliberately broken copies must
each be caught. Prometheus' flags are checked against Debian's ``prometheus``
binary, which ``make test`` installs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path, PurePosixPath

import pytest
import yaml

from tests.support.compose import REPO, Service, Stack, pushservers, serve_params

PROFILE = "monitoring"


def mounts(service: Service, root: Path) -> dict[PurePosixPath, Path]:
    """Container path -> host path of each bind mount (named volumes left out)."""
    found = {}
    for volume in service.spec.get("volumes") or []:
        source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/")):
            found[PurePosixPath(target)] = (root / source).resolve()
    return found


def host_path(service: Service, root: Path, container_path: str) -> Path | None:
    """Where a path inside the container comes from on the host, through the service's bind mounts."""
    path = PurePosixPath(container_path)
    for target, source in sorted(mounts(service, root).items(), key=lambda m: -len(m[0].parts)):
        if path == target or target in path.parents:
            return source.joinpath(*path.parts[len(target.parts) :])
    return None


def flag_value(command: list[str], flag: str, default: str | None = None) -> str | None:
    for i, token in enumerate(command):
        if token.startswith(flag + "="):
            return token.split("=", 1)[1]
        if token == flag and i + 1 < len(command):
            return command[i + 1]
    return default


@cache
def prometheus_flags() -> set[str]:
    exe = shutil.which("prometheus")
    assert exe, "prometheus is not installed: `make test` installs Debian's prometheus package"
    done = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30)
    return set(re.findall(r"--(?:\[no-\])?([a-z][a-z0-9.-]*)", done.stdout + done.stderr))


def file_targets(path: Path) -> set[str]:
    return {t for group in yaml.safe_load(path.read_text()) or [] for t in group.get("targets") or []}


def check_profile(stack: Stack) -> Iterator[str]:
    """Prometheus and Grafana exist, only under the monitoring profile."""
    for name in ("prometheus", "grafana"):
        service = stack.services.get(name)
        if service is None:
            yield f"no {name} service"
        elif service.spec.get("profiles") != [PROFILE]:
            yield f"{name}: profiles {service.spec.get('profiles')}, not [{PROFILE}]"
        else:
            for port in service.spec.get("ports") or []:
                if not str(port).startswith("127.0.0.1:"):
                    yield f"{name}: publishes {port} beyond this machine"


def check_prometheus(stack: Stack) -> Iterator[str]:
    """Prometheus runs with flags it has, on the mounted config, which scrapes every replica and Flower."""
    service = stack.services.get("prometheus")
    if service is None:
        return
    for token in service.command:
        if token.startswith("--") and token[2:].split("=")[0] not in prometheus_flags():
            yield f"prometheus: has no flag {token.split('=')[0]}"
    config_path = host_path(
        service, stack.root, flag_value(service.command, "--config.file", "/etc/prometheus/prometheus.yml") or ""
    )
    if config_path is None or not config_path.is_file():
        yield f"prometheus: --config.file is not a mounted file of this repository ({config_path})"
        return
    config = yaml.safe_load(config_path.read_text())
    jobs = {job["job_name"]: job for job in config.get("scrape_configs") or []}
    want = {
        "pushserver": {f"{s.name}:{params['port']}" for s, params in pushservers(stack)},
        "flower": {
            f"{s.name}:{flag_value(s.command, '--port', '5555')}" for s in stack.runs("celery") if "flower" in s.command
        },
    }
    for job_name, expected in want.items():
        job = jobs.get(job_name)
        if job is None:
            yield f"prometheus.yml: no job {job_name} (alerts.yml and the dashboard use job={job_name!r})"
            continue
        targets = {t for group in job.get("static_configs") or [] for t in group.get("targets") or []}
        for sd in job.get("file_sd_configs") or []:
            for pattern in sd.get("files") or []:
                for path in config_path.parent.glob(pattern):
                    targets |= file_targets(path)
        if targets != expected:
            yield f"prometheus.yml: job {job_name} scrapes {sorted(targets)}, the stack runs {sorted(expected)}"
    for rule_file in config.get("rule_files") or []:
        if not list(config_path.parent.glob(rule_file)):
            yield f"prometheus.yml: rule file {rule_file} does not exist"


def check_grafana(stack: Stack) -> Iterator[str]:
    """Grafana gets the datasource (this stack's Prometheus) and the dashboards, which use that datasource."""
    service = stack.services.get("grafana")
    prometheus = stack.services.get("prometheus")
    if service is None or prometheus is None:
        return
    provisioning = host_path(service, stack.root, "/etc/grafana/provisioning")
    if provisioning is None or not provisioning.is_dir():
        yield "grafana: /etc/grafana/provisioning is not a mounted folder of this repository"
        return
    uids = set()
    address = flag_value(prometheus.command, "--web.listen-address", "0.0.0.0:9090") or ""
    for path in sorted((provisioning / "datasources").glob("*.y*ml")):
        for source in yaml.safe_load(path.read_text()).get("datasources") or []:
            uids.add(source.get("uid"))
            if (
                source.get("type") == "prometheus"
                and source.get("url") != f"http://prometheus:{address.split(':')[-1]}"
            ):
                yield f"grafana: datasource {source.get('name')} points at {source.get('url')}, not this stack's Prometheus"
    dashboards: list[Path] = []
    for path in sorted((provisioning / "dashboards").glob("*.y*ml")):
        for provider in yaml.safe_load(path.read_text()).get("providers") or []:
            folder = host_path(service, stack.root, provider.get("options", {}).get("path", ""))
            if folder is None or not folder.is_dir():
                yield f"grafana: dashboard provider {provider.get('name')} reads a folder that is not mounted"
            else:
                dashboards += sorted(folder.glob("*.json"))
    if not dashboards:
        yield "grafana: no dashboard is provisioned"
    for path in dashboards:
        for panel in json.loads(path.read_text()).get("panels", []):
            for item in [panel, *panel.get("targets", [])]:
                uid = (item.get("datasource") or {}).get("uid")
                if uid is not None and uid not in uids:
                    yield f"{path.name}: panel {panel.get('title')!r} uses datasource {uid}, which is not provisioned"
    home = service.env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home is not None and not (host_path(service, stack.root, home) or Path("/nonexistent")).is_file():
        yield f"grafana: home dashboard {home} is not a mounted file"


CHECKS: list[Callable[[Stack], Iterator[str]]] = [check_profile, check_prometheus, check_grafana]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_the_monitoring_profile_is_consistent(check: Callable[[Stack], Iterator[str]]) -> None:
    assert list(check(Stack(REPO))) == []


def test_the_replicas_scraped_are_those_the_stack_runs() -> None:
    stack = Stack(REPO)
    assert {s.name for s, _ in pushservers(stack)} == {"pushserver-1", "pushserver-2"}
    assert all(serve_params(s)["port"] == 8000 for s, _ in pushservers(stack))


def broken_copy(tmp_path: Path, file: str, old: str, new: str) -> Stack:
    for name in ("docker-compose.yml", ".env.example", ".dockerignore"):
        shutil.copy(REPO / name, tmp_path / name)
    for folder in ("docker", "deploy"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    target = tmp_path / file
    text = target.read_text()
    assert old in text, f"{file} no longer contains {old!r}: update this test"
    target.write_text(text.replace(old, new))
    return Stack(tmp_path)


BROKEN = [
    (
        "docker-compose.yml",
        "profiles: [monitoring]\n    restart: unless-stopped\n    command",
        "restart: unless-stopped\n    command",
        "prometheus: profiles None",
    ),
    (
        "docker-compose.yml",
        '"--storage.tsdb.retention.time=15d"',
        '"--storage.retention=15d"',
        "no flag --storage.retention",
    ),
    (
        "docker-compose.yml",
        "./deploy/prometheus:/etc/prometheus:ro",
        "./deploy/prom:/etc/prometheus:ro",
        "--config.file is not a mounted file",
    ),
    ("docker-compose.yml", '"127.0.0.1:9090:9090"', '"9090:9090"', "beyond this machine"),
    (
        "deploy/prometheus/targets/pushserver.yml",
        "- pushserver-2:8000",
        "- pushserver-2:8001",
        "job pushserver scrapes",
    ),
    ("deploy/prometheus/targets/flower.yml", "- flower:5555", "- flower:5556", "job flower scrapes"),
    ("deploy/prometheus/prometheus.yml", "job_name: pushserver", "job_name: push", "no job pushserver"),
    (
        "deploy/grafana/provisioning/datasources/prometheus.yml",
        "http://prometheus:9090",
        "http://localhost:9090",
        "not this stack's Prometheus",
    ),
    (
        "deploy/grafana/provisioning/datasources/prometheus.yml",
        "uid: prometheus",
        "uid: prom",
        "which is not provisioned",
    ),
    (
        "deploy/grafana/provisioning/dashboards/pushserver.yml",
        "path: /etc/grafana/dashboards",
        "path: /var/lib/grafana/dashboards",
        "reads a folder that is not mounted",
    ),
    (
        "docker-compose.yml",
        "./deploy/grafana/provisioning:",
        "./deploy/grafana/provision:",
        "/etc/grafana/provisioning is not a mounted folder",
    ),
]


@pytest.mark.parametrize(("file", "old", "new", "problem"), BROKEN, ids=[b[3] for b in BROKEN])
def test_a_broken_monitoring_stack_is_caught(tmp_path: Path, file: str, old: str, new: str, problem: str) -> None:
    stack = broken_copy(tmp_path, file, old, new)
    problems = [p for check in CHECKS for p in check(stack)]
    assert any(problem in p for p in problems), problems
