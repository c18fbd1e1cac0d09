"""`router.server.serve` in this process: wiring from settings, honest health, metrics on
HTTP, the model route through Triton's protocol, TLS, and the graceful SIGTERM."""

import asyncio
import os
import shutil
import signal
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from click.testing import Result
from typer.testing import CliRunner

from router.client import AsyncRouterClient, Policy, RequestError, Route, RouterClient, TlsConfig
from router.server import serve
from router.settings import RouterSettings
from services.cli import app
from services.contracts.build_report import ServingRecord
from services.contracts.rollout_schema import rollout_key
from services.pipeline.rollout import Rollouts
from services.processes.ports import free_port
from services.processes.redis_server import RedisServer
from services.reliability.testbed import publish_generation
from tests.unit.aio import run
from tests.unit.router.fakes import TOPIC_LABELS, serving_triton, write_model_repository


def router_settings(
    tmp_path: Path, redis_url: str, triton_url: str, **overrides: Any
) -> RouterSettings:
    settings: dict[str, Any] = {
        "model_repository": write_model_repository(tmp_path / "repository"),
        "redis_url": redis_url,
        "triton_url": triton_url,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "health_poll_seconds": 0.05,
        "shutdown_delay_seconds": 0.3,
        "tasks": {
            "topic": {"model": "topic", "cache_namespace": f"serve-{free_port()}"},
            "sentiment": {"model": "sentiment", "cache_namespace": f"serve-{free_port()}"},
        },
    }
    return RouterSettings(**(settings | overrides))


async def health(client: AsyncRouterClient, service: str) -> str:
    try:
        return await client.health(service)
    except RequestError as exc:
        return exc.code.name


def test_serve_answers_both_routes_reports_health_and_stops_on_sigterm(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async def main() -> None:
        async with serving_triton(["1", "3"]) as (triton, triton_url):
            settings = router_settings(tmp_path, redis_server.url, triton_url)
            namespace = settings.tasks["topic"].cache_namespace
            ready = asyncio.Event()
            server = asyncio.create_task(serve(settings, ready))
            await asyncio.wait_for(ready.wait(), 10)
            address = f"127.0.0.1:{settings.grpc_port}"
            async with AsyncRouterClient(address, retries=0) as client:
                for service in ("", "switchyard.v1.Router", "redis", "triton"):
                    deadline = asyncio.get_running_loop().time() + 5
                    while await health(client, service) != "SERVING":
                        assert asyncio.get_running_loop().time() < deadline, service
                        await asyncio.sleep(0.05)
                generation = publish_generation(
                    redis_server.client(), namespace, TOPIC_LABELS, {"oil prices climb": "business"}
                )
                tasks = {info.task: info for info in await client.list_tasks()}
                assert tasks["topic"].model_version == "3"
                deadline = asyncio.get_running_loop().time() + 5
                while (await client.predict("topic", "oil prices climb")).route != Route.CACHE:
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.05)
                cached = await client.predict("topic", "OIL prices  climb")
                assert (cached.label, cached.cache_generation) == ("business", generation)
                fresh = await client.predict("topic", "the film opens", policy=Policy.MODEL_ONLY)
                assert (fresh.route, fresh.model_version) == (Route.MODEL, "3")
                assert triton.requests[-1].model_version == "3"

                url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
                metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read())
                assert b'switchyard_dependency_up{dependency="triton"} 1.0' in metrics
                assert b"switchyard_cache_generation_age_seconds" in metrics

                os.kill(os.getpid(), signal.SIGTERM)
                deadline = asyncio.get_running_loop().time() + 2
                while await health(client, "") != "NOT_SERVING":
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.02)
                # Still answering while load balancers notice, until the delay is over.
                answer = await client.predict("topic", "oil prices climb")
                assert answer.route == Route.CACHE
            await asyncio.wait_for(server, 10)
            with (
                RouterClient(address, retries=0, timeout_s=1.0) as client,
                pytest.raises(RequestError) as error,
            ):
                client.health()
            assert error.value.code == grpc.StatusCode.UNAVAILABLE

    run(main)


async def check(address: str, *options: str) -> Result:
    """`switchyard router check` run in a thread, while this loop serves the router."""
    arguments = ["router", "check", "--address", address, *options]
    return await asyncio.to_thread(CliRunner().invoke, app, arguments)


def test_health_follows_each_dependency(tmp_path: Path) -> None:
    """No Triton, and a Redis that goes away: overall health stays up while one route can
    answer, and says NOT_SERVING when neither can."""
    private = RedisServer(tmp_path)
    private.start()

    async def main() -> None:
        settings = router_settings(tmp_path, private.url, f"127.0.0.1:{free_port()}")
        ready = asyncio.Event()
        server = asyncio.create_task(serve(settings, ready))
        await asyncio.wait_for(ready.wait(), 10)
        address = f"127.0.0.1:{settings.grpc_port}"
        async with AsyncRouterClient(address, retries=0) as client:
            await asyncio.sleep(0.2)
            assert (await health(client, "triton"), await health(client, "")) == (
                "NOT_SERVING",
                "SERVING",
            )
            # `router check`, as a probe sees it: 0 serving, 1 answering otherwise.
            assert (await check(address)).exit_code == 0
            one = await check(address, "--service", "triton")
            assert (one.exit_code, one.output.strip()) == (1, f"router at {address}: NOT_SERVING")
            with pytest.raises(RequestError) as error:
                await client.predict("topic", "nobody cached this")
            assert error.value.code == grpc.StatusCode.UNAVAILABLE
            assert "triton" in error.value.details
            private.stop()
            deadline = asyncio.get_running_loop().time() + 5
            while await health(client, "") != "NOT_SERVING":
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            assert await health(client, "redis") == "NOT_SERVING"
            both = await check(address)
            assert both.exit_code == 1
            assert both.output.strip() == (
                f"router at {address}: NOT_SERVING (redis, triton not serving)"
            )
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(server, 10)

    try:
        run(main)
    finally:
        private.stop()


def test_tls_on_the_port(tmp_path: Path, redis_server: RedisServer) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert_file.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key_file))

    async def main() -> None:
        settings = router_settings(
            tmp_path, redis_server.url, f"127.0.0.1:{free_port()}",
            tls_cert_file=cert_file, tls_key_file=key_file,
        )  # fmt: skip
        ready = asyncio.Event()
        server = asyncio.create_task(serve(settings, ready))
        await asyncio.wait_for(ready.wait(), 10)
        address = f"127.0.0.1:{settings.grpc_port}"
        async with AsyncRouterClient(address, tls=TlsConfig(ca_file=ca_file), retries=0) as client:
            assert [info.task for info in await client.list_tasks()] == ["sentiment", "topic"]
        async with AsyncRouterClient(address, retries=0) as plaintext:
            with pytest.raises(RequestError) as error:
                await plaintext.list_tasks()
            assert error.value.code == grpc.StatusCode.UNAVAILABLE
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(server, 10)

    run(main)


def test_a_port_in_use_is_a_clear_error(tmp_path: Path, redis_server: RedisServer) -> None:
    async def main() -> None:
        settings = router_settings(tmp_path, redis_server.url, f"127.0.0.1:{free_port()}")
        first = asyncio.Event()
        server = asyncio.create_task(serve(settings, first))
        await asyncio.wait_for(first.wait(), 10)
        second = settings.model_copy(update={"metrics_port": free_port()})
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{settings.grpc_port}"):
            await serve(second)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(server, 10)

    run(main)


def test_cards_give_each_task_its_serving_settings_and_settings_override_them(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    serving = ServingRecord(confidence_threshold=0.8, max_text_length=12)

    async def main() -> None:
        async with serving_triton(["1"]) as (_, triton_url):
            settings = router_settings(
                tmp_path, redis_server.url, triton_url,
                model_repository=write_model_repository(
                    tmp_path / "carded", ["1"], serving=serving
                ),
                tasks={"sentiment": {"max_text_length": 30}},
            )  # fmt: skip
            server = asyncio.create_task(serve(settings, ready := asyncio.Event()))
            await asyncio.wait_for(ready.wait(), 10)
            address = f"127.0.0.1:{settings.grpc_port}"
            async with AsyncRouterClient(address, retries=0) as client:
                tasks = {info.task: info for info in await client.list_tasks()}
                assert tasks["topic"].confidence_threshold == pytest.approx(0.8)
                assert tasks["topic"].max_text_length == 12
                assert tasks["sentiment"].max_text_length == 30
                with pytest.raises(RequestError, match="the limit for task 'topic' is 12"):
                    await client.predict("topic", "a text longer than twelve")
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(server, 10)

    run(main)


def _add_model(repository: Path, name: str, labels: list[str]) -> None:
    """A new model folder, written aside and renamed in, as a build publishes one."""
    scratch = write_model_repository(repository.parent / f"scratch-{name}", ["1"], {name: labels})
    (scratch / name).rename(repository / name)


CACHED = [("topic", TOPIC_LABELS, "tech")]


def test_a_model_added_to_the_repository_is_served_without_failing_a_request(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The new task joins once Triton serves its model; traffic on the others never fails."""
    new_labels = ["billing", "bug", "other"]

    async def main() -> None:
        async with serving_triton(["1"]) as (triton, triton_url):
            # No task in the settings: the repository alone says what is served.
            settings = router_settings(
                tmp_path, redis_server.url, triton_url, task_poll_seconds=0.05, tasks={}
            )
            server = asyncio.create_task(serve(settings, ready := asyncio.Event()))
            await asyncio.wait_for(ready.wait(), 10)
            address = f"127.0.0.1:{settings.grpc_port}"
            failures: list[RequestError] = []
            answered = 0
            stop = asyncio.Event()

            async def traffic(client: AsyncRouterClient) -> None:
                nonlocal answered
                while not stop.is_set():
                    try:
                        await client.predict("topic", "the film opens", policy=Policy.MODEL_ONLY)
                        answered += 1
                    except RequestError as exc:
                        failures.append(exc)

            async with AsyncRouterClient(address, retries=0) as client:
                load = asyncio.create_task(traffic(client))
                _add_model(settings.model_repository, "intents", new_labels)
                await asyncio.sleep(0.5)
                # Triton does not serve it yet: the router must not offer the task.
                assert "intents" not in [info.task for info in await client.list_tasks()]
                triton.labels["intents"] = new_labels
                deadline = asyncio.get_running_loop().time() + 5
                while "intents" not in [info.task for info in await client.list_tasks()]:
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.05)
                answer = await client.predict("intents", "the invoice is wrong")
                assert (answer.route, answer.label in new_labels) == (Route.MODEL, True)
                # Its cache namespace is followed too, and the others' still are.
                for task, labels, label in (("intents", new_labels, "bug"), *CACHED):
                    publish_generation(
                        redis_server.client(), task, labels, {"the app crashes": label}
                    )
                    while (await client.predict(task, "the app crashes")).route != Route.CACHE:
                        assert asyncio.get_running_loop().time() < deadline, task
                        await asyncio.sleep(0.05)
                shutil.rmtree(settings.model_repository / "sentiment")
                while "sentiment" in [info.task for info in await client.list_tasks()]:
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.05)
                stop.set()
                await load
            assert failures == [] and answered > 0
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(server, 10)

    run(main)


def test_sighup_rereads_the_task_set_at_once(tmp_path: Path, redis_server: RedisServer) -> None:
    async def main() -> None:
        async with serving_triton(["1"]) as (triton, triton_url):
            settings = router_settings(
                tmp_path, redis_server.url, triton_url, task_poll_seconds=3600
            )
            server = asyncio.create_task(serve(settings, ready := asyncio.Event()))
            await asyncio.wait_for(ready.wait(), 10)
            address = f"127.0.0.1:{settings.grpc_port}"
            async with AsyncRouterClient(address, retries=0) as client:
                triton.labels["intents"] = ["billing", "bug"]
                _add_model(settings.model_repository, "intents", ["billing", "bug"])
                os.kill(os.getpid(), signal.SIGHUP)
                deadline = asyncio.get_running_loop().time() + 5
                while "intents" not in [info.task for info in await client.list_tasks()]:
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.05)
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(server, 10)

    run(main)


def test_no_task_at_all_is_a_clear_error(tmp_path: Path, redis_server: RedisServer) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    settings = router_settings(
        tmp_path, redis_server.url, f"127.0.0.1:{free_port()}", model_repository=empty, tasks={}
    )
    with pytest.raises(ValueError, match="no task to serve"):
        asyncio.run(serve(settings))


def _add_version(repository: Path, version: str, broken: bool = False) -> None:
    """A new version folder of topic, written aside and renamed in, as a build publishes one."""
    scratch = write_model_repository(repository.parent / f"scratch-v{version}", [version])
    folder = scratch / "topic" / version
    if broken:
        (folder / "tokenizer.json").write_text("{not a tokenizer")
    folder.rename(repository / "topic" / version)


def test_the_router_follows_the_version_triton_serves_without_a_failed_request(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async def main() -> None:
        async with serving_triton(["1", "3"]) as (triton, triton_url):
            settings = router_settings(
                tmp_path, redis_server.url, triton_url, version_poll_seconds=0.05
            )
            server = asyncio.create_task(serve(settings, ready := asyncio.Event()))
            await asyncio.wait_for(ready.wait(), 10)
            address = f"127.0.0.1:{settings.grpc_port}"
            failures: list[RequestError] = []
            versions: list[str] = []
            stop = asyncio.Event()

            async def traffic(client: AsyncRouterClient) -> None:
                while not stop.is_set():
                    try:
                        answer = await client.predict("topic", "the film", policy=Policy.MODEL_ONLY)
                        versions.append(answer.model_version)
                    except RequestError as exc:
                        failures.append(exc)

            async def until_version(version: str) -> None:
                deadline = asyncio.get_running_loop().time() + 5
                while not versions or versions[-1] != version:
                    assert asyncio.get_running_loop().time() < deadline, versions[-1:]
                    await asyncio.sleep(0.02)

            async with AsyncRouterClient(address, retries=0) as client:
                load = asyncio.create_task(traffic(client))
                await until_version("3")
                _add_version(settings.model_repository, "5")
                await asyncio.sleep(0.3)
                assert versions[-1] == "3", "a version Triton does not serve yet is not used"
                triton.served_versions = ["3", "5"]  # Triton loaded 5 beside 3
                await until_version("5")
                triton.served_versions = ["5"]  # and released 3 after the switch
                _add_version(settings.model_repository, "7", broken=True)
                triton.served_versions = ["5", "7"]
                await asyncio.sleep(0.5)
                assert versions[-1] == "5", "a version whose files do not load is never used"
                stop.set()
                await load
                url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
                text = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read())
            assert failures == []
            # Every answer names a version Triton served when it was computed.
            assert set(versions) == {"3", "5"}
            assert b'switchyard_model_served_version{model="topic"} 5.0' in text
            failed = b'switchyard_model_version_failures_total{model="topic",version="7"} 1.0'
            assert failed in text
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(server, 10)

    run(main)


def test_two_routers_follow_promote_canary_and_rollback_together_without_a_failed_request(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Each change reaches both routers within a second or two, announced on pub/sub."""
    model = "topic"

    async def main() -> None:
        async with serving_triton(["1", "3"]) as (_, triton_url):
            first = router_settings(tmp_path / "a", redis_server.url, triton_url)
            second = router_settings(tmp_path / "b", redis_server.url, triton_url)
            # A poll far slower than the test: only the announcement can move them in time.
            first = first.model_copy(update={"version_poll_seconds": 30.0})
            second = second.model_copy(update={"version_poll_seconds": 30.0})
            redis_server.client().delete(rollout_key(model))
            servers = []
            for settings in (first, second):
                ready = asyncio.Event()
                servers.append(asyncio.create_task(serve(settings, ready)))
                await asyncio.wait_for(ready.wait(), 10)
            rollouts = Rollouts(redis_server.client(), first.model_repository)
            clients = [
                AsyncRouterClient(f"127.0.0.1:{s.grpc_port}", retries=0) for s in (first, second)
            ]
            failures: list[RequestError] = []
            seen: list[list[str]] = [[], []]
            stop = asyncio.Event()

            async def traffic(index: int) -> None:
                while not stop.is_set():
                    try:
                        answer = await clients[index].predict(
                            model, "the film", policy=Policy.MODEL_ONLY
                        )
                        seen[index].append(answer.model_version)
                    except RequestError as exc:
                        failures.append(exc)

            async def both_answer_with(version: str) -> float:
                started = asyncio.get_running_loop().time()
                while not all(s and s[-1] == version for s in seen):
                    assert asyncio.get_running_loop().time() - started < 2.0, (version, seen)
                    await asyncio.sleep(0.01)
                return asyncio.get_running_loop().time() - started

            try:
                load = [asyncio.create_task(traffic(i)) for i in range(2)]
                await both_answer_with("3")
                await asyncio.to_thread(rollouts.promote, model, "1")
                await both_answer_with("1")
                # A canary over every text: the candidate answers, on both routers.
                await asyncio.to_thread(rollouts.canary, model, "3", 1.0, 0.0)
                await both_answer_with("3")
                tasks = await clients[1].list_tasks()
                topic = next(task for task in tasks if task.task == model)
                assert (topic.model_version, topic.candidate_version) == ("1", "3")
                await asyncio.to_thread(rollouts.rollback, model)
                await both_answer_with("1")
                await asyncio.to_thread(rollouts.promote, model, "latest")
                await both_answer_with("3")
                stop.set()
                await asyncio.gather(*load)
            finally:
                for client in clients:
                    await client.close()
                for server in servers:
                    server.cancel()
                await asyncio.gather(*servers, return_exceptions=True)
                redis_server.client().delete(rollout_key(model))
            assert failures == []

    run(main)


def test_a_model_whose_files_do_not_load_leaves_the_others_serving_until_mended(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async def main() -> None:
        async with serving_triton(["1", "3"]) as (_, triton_url):
            settings = router_settings(
                tmp_path, redis_server.url, triton_url, task_poll_seconds=0.05
            )
            sentiment = settings.model_repository / "sentiment"
            for version in ("1", "3"):
                (sentiment / version / "tokenizer.json").write_text("{not a tokenizer")
            server = asyncio.create_task(serve(settings, ready := asyncio.Event()))
            await asyncio.wait_for(ready.wait(), 10)
            async with AsyncRouterClient(f"127.0.0.1:{settings.grpc_port}", retries=0) as client:
                assert [task.task for task in await client.list_tasks()] == ["topic"]
                answer = await client.predict("topic", "the film", policy=Policy.MODEL_ONLY)
                assert answer.model_version == "3"
                good = settings.model_repository / "topic" / "3" / "tokenizer.json"
                shutil.copy(good, sentiment / "3" / "tokenizer.json")
                for _ in range(100):
                    if len(await client.list_tasks()) == 2:
                        break
                    await asyncio.sleep(0.05)
                assert [task.task for task in await client.list_tasks()] == ["sentiment", "topic"]
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(server, 10)

    run(main)
