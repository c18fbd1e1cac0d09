"""Prometheus for the local stack: the scrape config written for the ports `up` chose.

The jobs and rules are the same as in docker-compose (services/monitoring/prometheus), so the
recording rules, alerts and the Grafana dashboard work unchanged on either.
"""

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ROUTER_JOB", "TRITON_JOB", "local_config", "rules_dir"]

ROUTER_JOB = "switchyard-router"
TRITON_JOB = "triton"


def rules_dir() -> Path:
    """The recording and alerting rules, from the installed package's data."""
    return Path(str(resources.files("services.monitoring") / "prometheus" / "rules"))


def local_config(
    host: str, router_metrics: int, triton_metrics: list[int], interval_s: float
) -> str:
    """The scrape config of the router and every Triton replica (their metrics ports)."""
    tritons = [f"{host}:{port}" for port in triton_metrics]
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": f"{interval_s:g}s",
            "evaluation_interval": f"{interval_s:g}s",
        },
        "rule_files": [str(rules_dir() / "*.yml")],
        "scrape_configs": [
            {"job_name": ROUTER_JOB, "static_configs": [{"targets": [f"{host}:{router_metrics}"]}]},
            {"job_name": TRITON_JOB, "static_configs": [{"targets": tritons}]},
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)
