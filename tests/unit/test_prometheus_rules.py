"""deploy/prometheus/ through Debian's promtool: the config and rules are valid, and every alert's unit test passes.

``make test`` installs promtool (Debian's ``prometheus`` package) when it is
missing; without it these tests fail rather than skip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml is in the dev extra")

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts.test.yml"


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, (
        "promtool is not installed: `make test` installs Debian's prometheus package (apt-get install prometheus)"
    )
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def test_config_and_rules_are_valid() -> None:
    for args in (("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml")):
        done = promtool(*args)
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_unit_test_passes() -> None:
    done = promtool("test", "rules", ALERT_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_every_alert_has_a_runbook_and_a_case_where_it_fires_and_one_where_it_does_not() -> None:
    cases: dict[str, list[list]] = {}
    for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            cases.setdefault(case["alertname"], []).append(case["exp_alerts"])
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["annotations"].get("runbook", "").strip(), f"{name} has no runbook annotation"
        assert rule["annotations"].get("summary"), f"{name} has no summary"
        assert rule["labels"].get("severity") in ("critical", "warning", "info"), name
        assert any(expected for expected in cases.get(name, [])), f"no test of {name} firing"
        assert any(not expected for expected in cases.get(name, [])), f"no test of {name} staying quiet"


@pytest.mark.parametrize("alert", [rule["alert"] for rule in alert_rules()])
def test_the_unit_tests_catch_an_alert_that_never_fires(alert: str, tmp_path: Path) -> None:
    groups = yaml.safe_load(ALERTS.read_text())
    for group in groups["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == alert:
                rule["expr"] = "vector(1) > 2"  # never true
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(groups))
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    done = promtool("test", "rules", ALERT_TESTS.name, cwd=tmp_path)
    assert done.returncode != 0, f"alerts.test.yml still passes with {alert} broken"
    assert f"alertname: {alert}" in done.stdout + done.stderr
