"""Readiness of the stack's HTTP servers (Triton, Prometheus), bounded by a timeout. The
router's gRPC health is asked through its client (`router.client`)."""

import urllib.error
import urllib.request

__all__ = ["http_ok"]


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """True when GET `url` answers 200 (Triton's /v2/health/ready, Prometheus's /-/ready)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
