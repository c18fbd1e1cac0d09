"""Readiness checks of the stack's servers, each bounded by a timeout."""

import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["http_ok", "router_serving"]


def router_serving(
    address: str,
    service: str = "",
    timeout_s: float = 2.0,
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str | None = None,
) -> str:
    """The router's gRPC health status name, or why it could not be read. With `credentials`
    over TLS, checking the certificate against `server_name` if given, else the address."""
    if credentials is None:
        channel = grpc.insecure_channel(address)
    else:
        options = [] if server_name is None else [("grpc.ssl_target_name_override", server_name)]
        channel = grpc.secure_channel(address, credentials, options)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """True when GET `url` answers 200 (Triton's /v2/health/ready, Prometheus's /-/ready)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
