"""The Switchyard client for apps: typed answers, sync and asyncio, TLS and mutual TLS,
deadlines, and retries of UNAVAILABLE.

    from router.client import RouterClient

    with RouterClient("127.0.0.1:50051") as router:
        answer = router.predict("topic", "Oil prices climb as supply tightens")
        print(answer.label, answer.score, answer.route)

Every call is idempotent (a prediction is a read; the queue of low-confidence texts is
deduplicated), so UNAVAILABLE is retried by gRPC itself, `retries` times with backoff, as
the channel's service config says. Errors arrive as `RequestError`, with the status code and
the router's message.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from router import contract
from router.answers import Policy, Prediction, Route, TaskInfo

__all__ = [
    "AsyncRouterClient",
    "Policy",
    "Prediction",
    "RequestError",
    "Route",
    "RouterClient",
    "TaskInfo",
    "TlsConfig",
]


class RequestError(Exception):
    """A call that did not succeed: the gRPC status code and the router's message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


@dataclass(frozen=True)
class TlsConfig:
    """TLS to the router: trust `ca_file` (the system's CAs when None); present `cert_file`
    and `key_file` to a router that requires client certificates (mutual TLS); check the
    router's certificate for `server_name` when the address is not in it."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """OSError if a file cannot be read; ValueError for a certificate without its key."""
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        return grpc.ssl_channel_credentials(
            root_certificates=None if self.ca_file is None else self.ca_file.read_bytes(),
            private_key=None if self.key_file is None else self.key_file.read_bytes(),
            certificate_chain=None if self.cert_file is None else self.cert_file.read_bytes(),
        )


def _options(
    tls: TlsConfig | None, retries: int, max_message_bytes: int, extra: Sequence[tuple[str, Any]]
) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    # Without a retry policy gRPC still retries, transparently, what never left the client.
    if retries > 0:
        policy = {
            "maxAttempts": retries + 1,
            "initialBackoff": "0.05s",
            "maxBackoff": "1s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
        config = {
            "methodConfig": [{"name": [{"service": contract.SERVICE}], "retryPolicy": policy}]
        }
        options.append(("grpc.service_config", json.dumps(config)))
    if tls is not None and tls.server_name is not None:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return options + list(extra)


def _request(
    task: str, text: str, policy: Policy, min_confidence: float
) -> contract.PredictRequest:
    return contract.PredictRequest(
        task=task,
        text=text,
        policy=contract.policy_to_wire(policy),
        min_confidence=min_confidence,
    )


def _batch_request(
    task: str, texts: Sequence[str], policy: Policy, min_confidence: float
) -> contract.PredictBatchRequest:
    return contract.PredictBatchRequest(
        task=task,
        texts=texts,
        policy=contract.policy_to_wire(policy),
        min_confidence=min_confidence,
    )


def _health_request(service: str) -> health_pb2.HealthCheckRequest:
    return health_pb2.HealthCheckRequest(service=service)


def _status_name(reply: health_pb2.HealthCheckResponse) -> str:
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _error(exc: grpc.RpcError) -> RequestError:
    # Both grpc's sync errors and grpc.aio's AioRpcError are Calls with a code and details.
    call: Any = exc
    return RequestError(call.code(), call.details() or "")


class _Settings:
    """What both clients do alike: the channel, its options, and each call's deadline."""

    def __init__(
        self,
        tls: TlsConfig | None,
        timeout_s: float | None,
        retries: int,
        max_message_bytes: int,
        options: Sequence[tuple[str, Any]],
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries}")
        self._tls = tls
        self._timeout_s = timeout_s
        self._options = _options(tls, retries, max_message_bytes, options)

    def channel(self, address: str, kind: Any) -> Any:
        """A channel of `kind`, the `grpc` module or `grpc.aio` (whose factories match)."""
        if self._tls is None:
            return kind.insecure_channel(address, self._options)
        return kind.secure_channel(address, self._tls.credentials(), self._options)

    def timeout(self, timeout_s: float | None) -> float | None:
        return self._timeout_s if timeout_s is None else timeout_s


class RouterClient:
    """A blocking client over one gRPC channel; safe to share between threads.

    `timeout_s` is the deadline of every call that does not pass its own (None: no
    deadline). `retries` is how often an UNAVAILABLE call is tried again (0: never).
    `options` are further gRPC channel arguments (keepalive, a local subchannel pool, ...).
    """

    def __init__(
        self,
        address: str,
        *,
        tls: TlsConfig | None = None,
        timeout_s: float | None = 5.0,
        retries: int = 2,
        max_message_bytes: int = 64 << 20,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._settings = _Settings(tls, timeout_s, retries, max_message_bytes, options)
        self._channel: grpc.Channel = self._settings.channel(address, grpc)
        self._stub = contract.RouterStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def predict(
        self,
        task: str,
        text: str,
        *,
        policy: Policy = Policy.AUTO,
        min_confidence: float = 0.0,
        timeout_s: float | None = None,
    ) -> Prediction:
        request = _request(task, text, policy, min_confidence)
        reply = self._call(self._stub.Predict, request, timeout_s)
        return contract.prediction_from_message(reply)

    def predict_batch(
        self,
        task: str,
        texts: Sequence[str],
        *,
        policy: Policy = Policy.AUTO,
        min_confidence: float = 0.0,
        timeout_s: float | None = None,
    ) -> list[Prediction]:
        """One prediction per text, in the order of `texts`."""
        request = _batch_request(task, texts, policy, min_confidence)
        reply = self._call(self._stub.PredictBatch, request, timeout_s)
        return [contract.prediction_from_message(result) for result in reply.results]

    def list_tasks(self, *, timeout_s: float | None = None) -> list[TaskInfo]:
        reply = self._call(self._stub.ListTasks, contract.ListTasksRequest(), timeout_s)
        return [contract.task_from_message(task) for task in reply.tasks]

    def health(self, service: str = "", *, timeout_s: float | None = None) -> str:
        """The gRPC health status of `service` ("" for the router as a whole): SERVING,
        NOT_SERVING, ..."""
        reply = self._call(self._health.Check, _health_request(service), timeout_s)
        return _status_name(reply)

    def _call(self, method: Any, request: Any, timeout_s: float | None) -> Any:
        try:
            return method(request, timeout=self._settings.timeout(timeout_s))
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "RouterClient":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncRouterClient:
    """The asyncio client: the same calls as RouterClient, awaited. Create it, use it and
    close it on one event loop."""

    def __init__(
        self,
        address: str,
        *,
        tls: TlsConfig | None = None,
        timeout_s: float | None = 5.0,
        retries: int = 2,
        max_message_bytes: int = 64 << 20,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._settings = _Settings(tls, timeout_s, retries, max_message_bytes, options)
        self._channel: grpc.aio.Channel = self._settings.channel(address, grpc.aio)
        self._stub = contract.RouterStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def predict(
        self,
        task: str,
        text: str,
        *,
        policy: Policy = Policy.AUTO,
        min_confidence: float = 0.0,
        timeout_s: float | None = None,
    ) -> Prediction:
        request = _request(task, text, policy, min_confidence)
        reply = await self._call(self._stub.Predict, request, timeout_s)
        return contract.prediction_from_message(reply)

    async def predict_batch(
        self,
        task: str,
        texts: Sequence[str],
        *,
        policy: Policy = Policy.AUTO,
        min_confidence: float = 0.0,
        timeout_s: float | None = None,
    ) -> list[Prediction]:
        """One prediction per text, in the order of `texts`."""
        request = _batch_request(task, texts, policy, min_confidence)
        reply = await self._call(self._stub.PredictBatch, request, timeout_s)
        return [contract.prediction_from_message(result) for result in reply.results]

    async def list_tasks(self, *, timeout_s: float | None = None) -> list[TaskInfo]:
        reply = await self._call(self._stub.ListTasks, contract.ListTasksRequest(), timeout_s)
        return [contract.task_from_message(task) for task in reply.tasks]

    async def health(self, service: str = "", *, timeout_s: float | None = None) -> str:
        reply = await self._call(self._health.Check, _health_request(service), timeout_s)
        return _status_name(reply)

    async def _call(self, method: Any, request: Any, timeout_s: float | None) -> Any:
        try:
            return await method(request, timeout=self._settings.timeout(timeout_s))
        except grpc.RpcError as exc:
            raise _error(exc) from None

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncRouterClient":
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
