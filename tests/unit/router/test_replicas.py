"""The model route over several Triton replicas (in-process servers of Triton's protocol on
their own loopback addresses): calls spread round robin, a replica lost under load costs no
call, a `dns:` target follows its DNS answers (a real DNS server, dnslib), and calls of a
version go to the replicas that serve it."""

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from dnslib import QTYPE, RR, A
from dnslib.server import BaseResolver, DNSHandler, DNSRecord, DNSServer

from router.model import StudentClient
from services.processes.ports import free_port
from tests.unit.aio import run
from tests.unit.router.fakes import FakeTriton, serving_triton, write_model_repository

HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
TEXTS = ["oil prices climb", "the film opens", "a match", "prices climb"]


class Answers(BaseResolver):  # type: ignore[misc]
    """A DNS zone of one name whose A records a test changes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.addresses: list[str] = []

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        if str(request.q.qname).rstrip(".") == self.name and request.q.qtype == QTYPE.A:
            for address in self.addresses:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=1))
        return reply


@pytest.fixture
def dns_zone() -> Iterator[tuple[Answers, int]]:
    zone = Answers("triton.switchyard.test")
    server = DNSServer(zone, port=0, address="127.0.0.1", logger=_Quiet())
    server.start_thread()
    try:
        yield zone, server.server.server_address[1]
    finally:
        server.stop()


class _Quiet:
    def __getattr__(self, name: str) -> object:
        return lambda *args: None


def served(fakes: list[FakeTriton]) -> list[int]:
    return [len(fake.requests) for fake in fakes]


def test_calls_spread_over_replicas_and_a_lost_one_costs_none(tmp_path: Path) -> None:
    repository = write_model_repository(tmp_path / "repository")
    port = free_port("127.0.0.2")

    async def main() -> None:
        async with AsyncExitStack() as stack:
            servers = [
                await stack.enter_async_context(serving_triton(("1", "3"), host, port))
                for host in HOSTS[:3]
            ]
            fakes = [fake for fake, _ in servers]
            target = ",".join(address for _, address in servers)
            student = StudentClient(target, repository, 2.0, [16])
            stack.push_async_callback(student.close)
            await student.load(["topic"])
            model = student.model("topic")
            for _ in range(300):
                await student.classify(model, TEXTS[:1], timeout_s=2.0)
            shares = [n / 300 for n in served(fakes)]
            assert all(0.2 <= share <= 0.47 for share in shares), shares
            # One replica stops while calls are in flight: every call is answered.
            lost_server = servers[1]
            calls = [student.classify(model, TEXTS[:1], timeout_s=2.0) for _ in range(200)]
            stopping = asyncio.get_running_loop().create_task(_stop_soon(lost_server[0]))
            results = await asyncio.gather(*calls, return_exceptions=True)
            await stopping
            assert [r for r in results if isinstance(r, BaseException)] == []
            before = served(fakes)
            for _ in range(60):
                await student.classify(model, TEXTS[:1], timeout_s=2.0)
            after = served(fakes)
            assert after[1] == before[1], "the lost replica gets no more calls once down"
            assert after[0] > before[0] and after[2] > before[2]

    run(main)


async def _stop_soon(fake: FakeTriton) -> None:
    await asyncio.sleep(0.01)
    assert fake.server is not None
    await fake.server.stop(0)


def test_a_dns_target_follows_the_replicas_dns_lists(
    tmp_path: Path, dns_zone: tuple[Answers, int]
) -> None:
    zone, dns_port = dns_zone
    repository = write_model_repository(tmp_path / "repository")
    port = free_port("127.0.0.2")

    async def main() -> None:
        async with AsyncExitStack() as stack:
            fakes = [
                (await stack.enter_async_context(serving_triton(("1", "3"), host, port)))[0]
                for host in HOSTS
            ]
            zone.addresses = HOSTS[:2]
            target = f"dns://127.0.0.1:{dns_port}/{zone.name}:{port}"
            student = StudentClient(target, repository, 2.0, [16])
            stack.push_async_callback(student.close)
            await student.load(["topic"])
            assert sorted(student.replicas.addresses) == [f"{h}:{port}" for h in HOSTS[:2]]
            model = student.model("topic")

            async def spread(calls: int) -> list[int]:
                before = served(fakes)
                for _ in range(calls):
                    await student.classify(model, TEXTS[:1], timeout_s=2.0)
                return [a - b for a, b in zip(served(fakes), before, strict=True)]

            assert [n > 0 for n in await spread(40)] == [True, True, False, False]
            # A replica added (an autoscaler's new pod) gets calls after the next lookup,
            # and one removed gets none.
            zone.addresses = HOSTS[1:4]
            assert await student.replicas.resolve()
            assert [n > 0 for n in await spread(60)] == [False, True, True, True]
            assert not await student.replicas.resolve(), "the same answer changes nothing"
            zone.addresses = []
            assert not await student.replicas.resolve(), "no answer keeps the known replicas"
            assert [n > 0 for n in await spread(30)] == [False, True, True, True]

    run(main)


def test_calls_of_a_version_go_to_the_replicas_that_serve_it(tmp_path: Path) -> None:
    repository = write_model_repository(tmp_path / "repository", versions=("1", "3", "4"))
    port = free_port("127.0.0.2")

    async def main() -> None:
        async with AsyncExitStack() as stack:
            old, _ = await stack.enter_async_context(serving_triton(("3",), HOSTS[0], port))
            new, _ = await stack.enter_async_context(serving_triton(("3", "4"), HOSTS[1], port))
            target = f"{HOSTS[0]}:{port},{HOSTS[1]}:{port}"
            student = StudentClient(target, repository, 2.0, [16], ready_timeout_s=60.0)
            stack.push_async_callback(student.close)
            await student.load(["topic"])
            # One replica has loaded version 4, the other not yet: the router moves to it
            # and sends its calls to the replica that has it.
            await student.follow_versions({})
            assert student.model("topic").version == "4"
            for _ in range(20):
                await student.classify(student.model("topic"), TEXTS[:1], timeout_s=2.0)
            versions = Counter(
                (name, r.model_version) for name, fake in (("old", old), ("new", new))
                for r in fake.requests
            )  # fmt: skip
            assert versions[("new", "4")] == 20 and versions[("old", "4")] == 0

    run(main)
