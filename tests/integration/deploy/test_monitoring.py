"""Prometheus config, rules and their unit tests (promtool), and the Grafana dashboard's shape."""

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from router.metrics import RouterMetrics
from services.stack.prometheus import local_config, rules_dir

MONITORING = Path(__file__).parents[3] / "services/monitoring"
DASHBOARD = MONITORING / "grafana/dashboards/switchyard.json"
# The series each metric type exports (prometheus-client names a counter's family without
# its `_total`); `_created` samples are left out, nothing here reads them.
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
# What the Rollouts row reads: the router's series and the rollout recording rules.
ROLLOUT_METRICS = (
    "switchyard_model_texts_total",
    "switchyard_model_served_version",
    "switchyard_model_candidate_version",
    "switchyard_model_version_failures_total",
    "task_role:switchyard_model_call_errors:ratio_rate5m",
    "task_role:switchyard_model_confidence:mean5m",
    "task_model_version:switchyard_shadow_answers:agreement_ratio_rate5m",
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


def test_configs_and_rules_pass_promtool(tmp_path: Path) -> None:
    local = tmp_path / "prometheus.yml"
    local.write_text(local_config("127.0.0.1", 9464, [8002, 8012], 5))
    for config in (MONITORING / "prometheus/compose.yml", local):
        result = promtool("check", "config", "--syntax-only", str(config))
        assert result.returncode == 0, result.stdout + result.stderr
    rules = sorted(rules_dir().glob("*.yml"))
    assert rules
    result = promtool("check", "rules", *map(str, rules))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(MONITORING / "prometheus/tests/switchyard_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_rule_fails_promtool(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "groups:\n  - name: x\n    rules:\n      - record: a:b\n        expr: rate(x[\n"
    )
    assert promtool("check", "rules", str(broken)).returncode != 0


def test_dashboard_structure() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    datasources = yaml.safe_load(
        (MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    uids = {source["uid"] for source in datasources}
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["datasource"]["uid"] in uids
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}  # fmt: skip
        assert not cells & occupied, f"panel {panel['title']!r} overlaps another"
        occupied |= cells
        if panel["type"] == "row":  # a heading across the dashboard, with no query of its own
            assert grid["x"] == 0 and grid["w"] == 24 and panel["targets"] == []
            continue
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids and len(set(ref_ids)) == len(ref_ids)
        assert all(target["expr"] and target["datasource"]["uid"] in uids
                   for target in panel["targets"])  # fmt: skip
    titles = " ".join(panel["title"].lower() for panel in panels)
    for topic in ("requests", "latency", "cache hit", "triton", "confidence", "age", "errors"):
        assert topic in titles


def test_dashboard_has_a_rollouts_row() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    (row,) = [panel for panel in panels if panel["type"] == "row" and panel["title"] == "Rollouts"]
    below = [panel for panel in panels if panel["gridPos"]["y"] > row["gridPos"]["y"]]
    titles = " ".join(panel["title"].lower() for panel in below)
    for topic in ("answers per second", "canary share", "error ratio by role",
                  "confidence by role", "shadow agreement", "versions", "failures"):  # fmt: skip
        assert topic in titles
    queries = " ".join(target["expr"] for panel in below for target in panel["targets"])
    for metric in ROLLOUT_METRICS:
        assert metric in queries
    # The confidence histogram now has a series per role: shadow answers are the candidate's
    # on a sample of texts already answered, so the live confidence panels leave them out.
    for panel in panels:
        for target in panel["targets"]:
            if "switchyard_model_confidence_bucket" in target["expr"]:
                assert 'role!="shadow"' in target["expr"], panel["title"]


def test_dashboard_has_a_quality_row() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    (row,) = [p for p in panels if p["type"] == "row" and p["title"] == "Quality on live traffic"]
    below = [panel for panel in panels if panel["gridPos"]["y"] > row["gridPos"]["y"]]
    queries = " ".join(target["expr"] for panel in below for target in panel["targets"])
    shown = (
        "task:switchyard_teacher_agreement:blended5m",
        "task:switchyard_teacher_agreement_low:blended5m",
        "task:switchyard_teacher_agreement_high:blended5m",
        "switchyard_quality_student_agreement",
        "switchyard_quality_scored_samples",
        "increase(switchyard_cache_hits_total[1h])",  # the coverage
    )
    for series in shown:
        assert series in queries


def _router_series() -> set[str]:
    registry = CollectorRegistry()
    RouterMetrics(registry)
    return {family.name + suffix for family in registry.collect()
            for suffix in SUFFIXES[family.type]}  # fmt: skip


def _metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: the router's (switchyard_*), Triton's
    (nv_*), Prometheus's own `up` and recording rules' (level:metric:operations); strings
    and labels left out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr).replace("$__rate_interval", "1m")
    names = re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)
    return {name for name in names
            if ":" in name or name == "up" or name.startswith(("switchyard_", "nv_"))}  # fmt: skip


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((MONITORING / "prometheus/rules/switchyard.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_query_names_an_exported_metric_or_a_recording_rule() -> None:
    rules = _rules()
    recorded = {rule["record"] for rule in rules if "record" in rule}
    known = _router_series() | recorded | {"up"}
    for metric in ("switchyard_model_calls_total", "switchyard_model_confidence_sum",
                   "switchyard_model_version_failures_total"):  # fmt: skip
        assert metric in known
    panels = json.loads(DASHBOARD.read_text())["panels"]
    queries = [(panel["title"], target["expr"]) for panel in panels for target in panel["targets"]]
    queries += [(rule.get("record") or rule["alert"], rule["expr"]) for rule in rules]
    for where, expr in queries:
        names = _metric_names(expr)
        assert names, f"{where}: {expr!r} names no metric"
        unknown = {name for name in names if not name.startswith("nv_")} - known
        assert not unknown, f"{where}: {sorted(unknown)} is neither exported nor recorded"
