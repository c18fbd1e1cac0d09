"""The Triton replicas behind the model route: one tritonclient channel per replica, calls
spread round robin, an inference its replica cannot take retried on another within the
request's budget, and a replica set that follows DNS while the router runs.

`triton_url` is one of:

    host:port                       one Triton
    host:port,host:port,...         a fixed set (the local stack's `--triton-replicas`)
    dns:///name:port                every address the name resolves to (a Kubernetes headless
                                    Service), resolved again by `resolve`
    dns://server:port/name:port     the same, asking that DNS server

One channel per replica, rather than gRPC's own round_robin over a `dns:` target, because
the router must know each replica apart: gRPC resolves a name again only when a connection
fails, so pods an autoscaler adds would get no traffic, and during a rollout one replica may
serve a version another has not loaded yet (`ready_on`).
"""

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import dns.asyncresolver
import dns.exception
import grpc
import tritonclient.grpc.aio as triton_aio
from opentelemetry import trace
from tritonclient.grpc import InferInput, InferResult
from tritonclient.utils import InferenceServerException

from router.tracing import NO_TRACER, trace_headers

__all__ = ["TritonReplicas"]

_log = logging.getLogger(__name__)
_UNAVAILABLE = str(grpc.StatusCode.UNAVAILABLE)
_DEADLINE_EXCEEDED = str(grpc.StatusCode.DEADLINE_EXCEEDED)
# What a call gets from a replica that is going away: it never answered, so another may.
# (A cancellation of the router's own shows as asyncio's CancelledError, never as these.)
_RETRYABLE = {_UNAVAILABLE, str(grpc.StatusCode.CANCELLED)}
_CHECK_S = 2.0
# A replica that failed is asked again only after this, unless no other one is left.
_COOLDOWN_S = 1.0


@dataclass
class _Replica:
    address: str
    client: triton_aio.InferenceServerClient
    ready: dict[str, set[str]] = field(default_factory=dict)
    """model -> the versions this replica reported READY at the last check."""
    failed_at: float = float("-inf")


class TritonReplicas:
    def __init__(
        self,
        target: str,
        channel_args: Sequence[tuple[str, Any]],
        drain_s: float = 10.0,
        tracer: trace.Tracer = NO_TRACER,
    ) -> None:
        self._drain_s = drain_s
        self._tracer = tracer
        self._channel_args = list(channel_args)
        self._replicas: list[_Replica] = []
        self._turn = itertools.count()
        self._retired: set[asyncio.Task[None]] = set()
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._name = ""
        self._port = 0
        if target.startswith("dns:"):
            self._name, self._port, self._resolver = _dns_target(target)
        else:
            addresses = [address.strip() for address in target.split(",") if address.strip()]
            if not addresses:
                raise ValueError(f"triton_url {target!r} names no Triton")
            self._use(addresses)

    @property
    def addresses(self) -> list[str]:
        return [replica.address for replica in self._replicas]

    @property
    def follows_dns(self) -> bool:
        return self._resolver is not None

    async def resolve(self) -> bool:
        """Look the DNS name up again and connect to the replicas that appeared (those that
        went away are closed once their calls are done); False when nothing changed or the
        lookup failed (the known replicas stay)."""
        if self._resolver is None:
            return False
        try:
            answer = await self._resolver.resolve(self._name, "A", search=True, lifetime=_CHECK_S)
        except dns.exception.DNSException as exc:
            # No ready Triton pod yet, or DNS down: model calls fail until the next lookup.
            _log.warning("cannot resolve %s (%s); keeping %s", self._name, exc, self.addresses)
            return False
        found = sorted(f"{record.address}:{self._port}" for record in answer)
        if found == sorted(self.addresses):
            return False
        self._use(found)
        return True

    def _use(self, addresses: list[str]) -> None:
        known: dict[str, _Replica | None] = {r.address: r for r in self._replicas}
        self._replicas = [
            known.pop(address, None) or _Replica(address, self._connect(address))
            for address in addresses
        ]
        for gone in filter(None, known.values()):
            # A new call no longer picks it; closed once its calls in flight are over (closing
            # the channel would cancel them).
            job = asyncio.create_task(_close_later(gone.client, self._drain_s))
            self._retired.add(job)
            job.add_done_callback(self._retired.discard)

    def _connect(self, address: str) -> triton_aio.InferenceServerClient:
        return triton_aio.InferenceServerClient(address, channel_args=self._channel_args)

    def _in_turn(self, model: str, version: str) -> list[_Replica]:
        """Every replica once, starting with the next in the rotation: first those not failed
        lately that serve `version` (or whose versions are not known yet), then the rest."""
        if not self._replicas:
            return []
        start = next(self._turn) % len(self._replicas)
        rotation = self._replicas[start:] + self._replicas[:start]
        cooled = time.monotonic() - _COOLDOWN_S

        def preferred(replica: _Replica) -> bool:
            versions = replica.ready.get(model)
            serves = not version or versions is None or version in versions
            return serves and replica.failed_at < cooled

        return [r for r in rotation if preferred(r)] + [r for r in rotation if not preferred(r)]

    async def infer(
        self, model: str, version: str, inputs: list[InferInput], timeout_s: float
    ) -> InferResult:
        """The result of the first replica that answers; a replica that is unavailable (down,
        or without the version) hands the call to the next while `timeout_s` lasts."""
        deadline = time.monotonic() + timeout_s
        failure: InferenceServerException | None = None
        for replica in self._in_turn(model, version):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise InferenceServerException(
                    "the budget ran out while replicas failed", status=_DEADLINE_EXCEEDED
                )
            try:
                with self._tracer.start_as_current_span(
                    "triton ModelInfer", kind=trace.SpanKind.CLIENT
                ) as span:
                    if span.is_recording():
                        span.set_attributes({
                            "rpc.system.name": "grpc",
                            "server.address": replica.address,
                            "switchyard.model": model,
                            "switchyard.model_version": version,
                        })  # fmt: skip
                    result: InferResult = await replica.client.infer(
                        model,
                        inputs,
                        model_version=version,
                        client_timeout=remaining,
                        headers=trace_headers(),
                    )
                return result
            except InferenceServerException as exc:
                if exc.status() not in _RETRYABLE:
                    raise
                replica.failed_at = time.monotonic()
                failure = exc
        raise failure or InferenceServerException("no Triton replica to ask", status=_UNAVAILABLE)

    async def ready_on(self, model: str, version: str = "") -> int:
        """How many replicas report the model (this version of it) READY; each replica's
        answer is kept, so calls of that version go to replicas that have it."""
        answers = await asyncio.gather(
            *(self._is_ready(replica, model, version) for replica in self._replicas)
        )
        return sum(answers)

    async def _is_ready(self, replica: _Replica, model: str, version: str) -> bool:
        try:
            ready = bool(
                await asyncio.wait_for(replica.client.is_model_ready(model, version), _CHECK_S)
            )
        except TimeoutError:
            # A replica too busy to answer in time is no news: one slow check must not move
            # a pinned version or end a canary.
            return version in replica.ready.get(model, set())
        except (InferenceServerException, OSError):
            ready = False
        if version:
            versions = replica.ready.setdefault(model, set())
            if ready:
                versions.add(version)
            else:
                versions.discard(version)
        return ready

    async def metadata(self, model: str) -> dict[str, Any]:
        """The model's metadata from the first replica that gives it."""
        failure: InferenceServerException | None = None
        for replica in self._in_turn(model, ""):
            try:
                metadata: dict[str, Any] = await replica.client.get_model_metadata(
                    model, as_json=True, client_timeout=_CHECK_S
                )
                return metadata
            except InferenceServerException as exc:
                failure = exc
        raise failure or InferenceServerException("no Triton replica to ask", status=_UNAVAILABLE)

    async def close(self) -> None:
        retired = list(self._retired)
        for job in retired:
            job.cancel()
        await asyncio.gather(*retired, return_exceptions=True)
        for replica in self._replicas:
            await replica.client.close()
        self._replicas = []


async def _close_later(client: triton_aio.InferenceServerClient, after_s: float) -> None:
    try:
        await asyncio.sleep(after_s)
    finally:
        with contextlib.suppress(Exception):
            await client.close()


def _dns_target(target: str) -> tuple[str, int, dns.asyncresolver.Resolver]:
    """The name, port and resolver of `dns:[//server[:port]]/name:port`."""
    parts = urlsplit(target)
    name, _, port = parts.path.lstrip("/").rpartition(":")
    if not name or not port.isdigit():
        raise ValueError(f"triton_url {target!r}: a dns: target is dns:///NAME:PORT")
    if not parts.netloc:
        return name, int(port), dns.asyncresolver.Resolver()
    resolver = dns.asyncresolver.Resolver(configure=False)
    server, _, server_port = parts.netloc.rpartition(":")
    resolver.nameservers = [server or parts.netloc]
    resolver.port = int(server_port) if server and server_port.isdigit() else 53
    return name, int(port), resolver
