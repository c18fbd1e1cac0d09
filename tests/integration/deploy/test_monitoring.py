"""Prometheus config, rules and their unit tests (promtool), and the Grafana dashboard's shape."""

import json
import subprocess
from pathlib import Path

import yaml

from services.stack.prometheus import local_config, rules_dir

MONITORING = Path(__file__).parents[3] / "services/monitoring"
DASHBOARD = MONITORING / "grafana/dashboards/switchyard.json"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


def test_configs_and_rules_pass_promtool(tmp_path: Path) -> None:
    local = tmp_path / "prometheus.yml"
    local.write_text(local_config("127.0.0.1", 9464, 8002, 5))
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
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids and len(set(ref_ids)) == len(ref_ids)
        assert all(target["expr"] and target["datasource"]["uid"] in uids
                   for target in panel["targets"])  # fmt: skip
    titles = " ".join(panel["title"].lower() for panel in panels)
    for topic in ("requests", "latency", "cache hit", "triton", "confidence", "age", "errors"):
        assert topic in titles
