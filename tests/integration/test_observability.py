"""deploy/prometheus and deploy/grafana against real parts: a real Prometheus scraping two real pushservers and Flower.

Real Redis and Celery workers (the session stack), two ``pushserver serve``
replicas logging events to nx-27017, Flower, and Debian's ``prometheus``
with deploy/prometheus/prometheus.yml (its targets rewritten to loopback
ports, a 1 s scrape interval) evaluating deploy/prometheus/alerts.yml. Tasks
run and are watched; then every PromQL of the dashboard and of the alerts is
asked of Prometheus' HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from dev.stack import BIN, Proc, free_port, http_get, http_status, start_pushserver, wait_until
from tests.support.clients import Watcher
from tests.support.stack import PREFORK_QUEUE, SECRET, Stack

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "pushserver.json"
#: Grafana's $__rate_interval, as this test's queries use it: longer than the whole run, so every sample counts.
RATE_INTERVAL = "5m"
#: Metric names in PromQL: ours, Flower's, the process collector's, and Prometheus' own `up`.
METRIC_NAME = re.compile(r"\b(?:pushserver|flower|process)_[a-z0-9_]+\b|\bup\b(?=\{)")


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def panel_targets() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of the dashboard, rows included."""
    found = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"]))

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return found


def metric_names(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))


@dataclass
class Observed:
    """The running replicas, Flower and Prometheus."""

    replicas: list[str]
    flower: str
    prometheus: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now; fails on a PromQL error."""
        status, body = http_get(f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", f"{expr}: {answer}"
        assert answer["data"]["resultType"] in ("vector", "scalar"), answer
        result = answer["data"]["result"]
        return result if answer["data"]["resultType"] == "vector" else [{"metric": {}, "value": result}]

    def values(self, expr: str) -> dict[str, float]:
        """``expr``'s samples keyed by their labels (as text)."""
        return {json.dumps(s["metric"], sort_keys=True): float(s["value"][1]) for s in self.query(expr)}


def prometheus_config(tmp: Path, replicas: list[str], flower: str) -> Path:
    """deploy/prometheus/prometheus.yml, scraping these loopback targets every second."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    targets = {"pushserver": replicas, "flower": [flower]}
    for job in config["scrape_configs"]:
        path = tmp / f"{job['job_name']}.targets.yml"
        path.write_text(
            yaml.safe_dump([{"targets": [urllib.parse.urlsplit(u).netloc for u in targets[job["job_name"]]]}])
        )
        assert job["file_sd_configs"], "the shipped config reads its targets from files"
        job["file_sd_configs"] = [{"files": [str(path)]}]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def observed(stack: Stack, mongo: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    exe = shutil.which("prometheus")
    assert exe, "prometheus is not installed: `make test` installs Debian's prometheus package"
    tmp = tmp_path_factory.mktemp("observability")
    procs: list[Proc] = []
    try:
        replicas = []
        for i, receiver in ((1, "process"), (2, "thread")):  # both ways events reach the loop
            proc, url = start_pushserver(
                f"pushserver-obs-{i}",
                stack.broker,
                stack.backend,
                tmp,
                secret=SECRET,
                extra=["--mongo", mongo, "--mongo-db", f"obs_{secrets.token_hex(4)}", "--receiver", receiver],
                log_level="INFO",
            )
            procs.append(proc)
            replicas.append(url)
        for url in replicas:
            wait_until(lambda: http_status(url + "/readyz") == 200, 30, f"{url}/readyz")
        flower_port = free_port()
        flower = Proc(
            "flower",
            [
                str(BIN / "celery"),
                f"--broker={stack.broker}",
                "flower",
                f"--port={flower_port}",
                "--address=127.0.0.1",
                "--logging=warning",
            ],
            tmp,
        )
        procs.append(flower)
        flower_url = f"http://127.0.0.1:{flower_port}"
        wait_until(
            lambda: http_status(flower_url + "/healthcheck") == 200 or not flower.alive(), 60, "Flower's /healthcheck"
        )
        assert flower.alive(), flower.log()
        prom_port = free_port()
        prometheus = Proc(
            "prometheus",
            [
                exe,
                f"--config.file={prometheus_config(tmp, replicas, flower_url)}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
            ],
            tmp,
        )
        procs.append(prometheus)
        prom_url = f"http://127.0.0.1:{prom_port}"
        wait_until(
            lambda: http_status(prom_url + "/-/ready") == 200 or not prometheus.alive(), 60, "Prometheus /-/ready"
        )
        assert prometheus.alive(), prometheus.log()
        yield Observed(replicas, flower_url, prom_url)
    finally:
        for proc in reversed(procs):
            proc.stop()


@pytest.fixture(scope="module")
async def workload(stack: Stack, observed: Observed) -> dict[str, list[str]]:
    """Tasks of each outcome run while a client watches them on replica 1; Prometheus has scraped the end."""
    from pushserver.auth import mint_token

    ran: dict[str, list[str]] = {"SUCCESS": [], "FAILURE": []}
    results = [stack.send("demo_progress", 4, 0.05) for _ in range(3)]
    results += [stack.send("demo_progress", 2, 0.05, queue=PREFORK_QUEUE)]
    failures = [stack.send("fail", "for the metrics") for _ in range(2)]
    watcher = await Watcher(observed.replicas[0]).connect()
    try:
        refused = await watcher.subscribe(results[0].id, token="not-a-token")
        assert refused["ok"] is False
        for result, state in [*((r, "SUCCESS") for r in results), *((f, "FAILURE") for f in failures)]:
            ack = await watcher.subscribe(result.id, token=mint_token(SECRET, [result.id]))
            assert ack["ok"] is True
            await watcher.wait_state(result.id, state, timeout=60)
            ran[state].append(result.id)
    finally:
        await watcher.close()
    # A polling read on replica 2: a snapshot served there too.
    status, _ = http_get(
        f"{observed.replicas[1]}/tasks/{results[0].id}",
        headers={"Authorization": f"Bearer {mint_token(SECRET, [results[0].id])}"},
    )
    assert status == 200

    def scraped_the_end() -> bool:
        done = observed.values(
            'pushserver_tasks_finished_total{job="pushserver",name="workers.tasks.demo_progress",state="SUCCESS"}'
        )
        flower = observed.values('sum(flower_events_total{job="flower",type="task-succeeded"})')
        return len(done) == 2 and all(v >= len(results) for v in done.values()) and sum(flower.values()) >= len(results)

    await asyncio.to_thread(wait_until, scraped_the_end, 60, "Prometheus to scrape the finished tasks", 0.5)
    # Two more scrapes of every target, so each series, the newest included, has the two samples rate() needs.
    scrapes = "count_over_time(up[10m])"
    seen = observed.values(scrapes)
    await asyncio.to_thread(
        wait_until,
        lambda: all(observed.values(scrapes).get(k, 0) >= n + 2 for k, n in seen.items()),
        30,
        "two more scrapes of every target",
        0.5,
    )
    return ran


def test_prometheus_scrapes_every_replica_and_flower(observed: Observed, workload: dict[str, list[str]]) -> None:
    up = observed.values("up")
    assert len(up) == 3 and set(up.values()) == {1.0}, up
    jobs = {json.loads(k)["job"] for k in up}
    assert jobs == {"pushserver", "flower"}


def test_every_alert_rule_is_loaded_and_evaluates_cleanly(observed: Observed, workload: dict[str, list[str]]) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        status, body = http_get(f"{observed.prometheus}/api/v1/rules?type=alert")
        rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
        unevaluated = [r for r in rules if r.get("lastEvaluation", "0001").startswith("0001")]
        return rules if status == 200 and rules and not unevaluated else None

    rules = wait_until(evaluated, 30, "every alert rule to be evaluated once")
    assert isinstance(rules, list)
    assert sorted(r["name"] for r in rules) == sorted(r["alert"] for r in alert_rules())
    for rule in rules:
        assert rule["health"] == "ok" and not rule.get("lastError"), rule


@pytest.mark.parametrize(("title", "expr"), panel_targets(), ids=[f"{t}: {e[:40]}" for t, e in panel_targets()])
def test_every_dashboard_query_returns_data(
    observed: Observed, workload: dict[str, list[str]], title: str, expr: str
) -> None:
    result = observed.query(expr.replace("$__rate_interval", RATE_INTERVAL))
    assert result, f"panel {title!r}: {expr} returned nothing"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_every_alert_expression_evaluates_and_its_series_exist(
    observed: Observed, workload: dict[str, list[str]], rule: dict[str, Any]
) -> None:
    observed.query(rule["expr"])  # a PromQL error fails here
    names = metric_names(rule["expr"])
    assert names, rule["expr"]
    for name in names:
        assert observed.query(f'count({{__name__="{name}"}})'), f"{rule['alert']}: no series {name} in Prometheus"
    firing = observed.values(f'ALERTS{{alertname="{rule["alert"]}",alertstate="firing"}}')
    assert not firing, f"{rule['alert']} fires on a healthy stack: {firing}"


def test_every_metric_named_in_rules_and_dashboard_is_exported(
    observed: Observed, workload: dict[str, list[str]]
) -> None:
    exported: set[str] = set()
    for url in [*observed.replicas, observed.flower]:
        status, body = http_get(url + "/metrics")
        assert status == 200
        exported |= {s.name for family in text_string_to_metric_families(body.decode()) for s in family.samples}
    named = set().union(
        *(metric_names(r["expr"]) for r in alert_rules()), *(metric_names(e) for _, e in panel_targets())
    ) - {"up"}
    assert named and not named - exported, f"named but not exported: {sorted(named - exported)}"


def test_task_level_metrics_count_what_ran(observed: Observed, workload: dict[str, list[str]]) -> None:
    finished = 'max by (name, state) (pushserver_tasks_finished_total{job="pushserver"})'
    counts = {(json.loads(k)["name"], json.loads(k)["state"]): v for k, v in observed.values(finished).items()}
    # The session's other tests may run more of these tasks: at least what this workload ran.
    assert counts[("workers.tasks.demo_progress", "SUCCESS")] >= len(workload["SUCCESS"])
    assert counts[("workers.tasks.fail", "FAILURE")] >= len(workload["FAILURE"])
    runtime = observed.values('max(pushserver_task_runtime_seconds_count{name="workers.tasks.demo_progress"})')
    assert list(runtime.values())[0] >= len(workload["SUCCESS"])
    # Three runs of 4 steps of 0.05 s and one of 2: the workers' runtimes add up to at least 0.7 s.
    total = observed.values('max(pushserver_task_runtime_seconds_sum{name="workers.tasks.demo_progress"})')
    assert list(total.values())[0] >= 0.7
    # Each replica, whichever way its receiver runs, hears both workers' heartbeats.
    workers = observed.values('pushserver_worker_online{job="pushserver"}')
    online = {(json.loads(k)["instance"], json.loads(k)["worker"].split("@")[0]): v for k, v in workers.items()}
    for url in observed.replicas:
        instance = urllib.parse.urlsplit(url).netloc
        assert online.get((instance, "threads")) == online.get((instance, "prefork")) == 1.0, online
    assert observed.values('max(pushserver_task_metric_labels_folded_total{label="name"})') == {"{}": 0.0}
