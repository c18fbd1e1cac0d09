"""Baseline gRPC servers for `switchyard bench`, each in its own process like the router.

    python -m bench.servers floor --port P --redis-url URL
    python -m bench.servers teacher --port P --build DIR --task TASK

`floor` is the least any Python gRPC cache service can do: the router's own contract, one
Redis GET per request, no validation, no metrics. `teacher` is what a user would deploy
without Switchyard: the tuned teacher with Hugging Face transformers behind the same contract.
"""

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import grpc
import typer

from router import contract
from router.answers import Route

app = typer.Typer(help="Baseline servers for `switchyard bench`.")
_CACHE, _MODEL = contract.route_to_wire(Route.CACHE), contract.route_to_wire(Route.MODEL)


class FloorServicer(contract.RouterServicer):
    def __init__(self, redis_url: str) -> None:
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(redis_url)

    async def Predict(  # noqa: N802 - the RPC's name
        self, request: contract.PredictRequest, context: grpc.aio.ServicerContext
    ) -> contract.PredictResponse:
        value = await self._redis.get(f"bench:floor:{request.text}")
        label = value.decode() if isinstance(value, bytes) else str(value)
        return contract.PredictResponse(label=label, score=1.0, route=_CACHE)


class TeacherServicer(contract.RouterServicer):
    def __init__(self, build: Path, task: str) -> None:
        from services.batch.teacher import TeacherInfo

        self._labeller = TeacherInfo.read(build, task).labeller(batch_size=1)

    async def Predict(  # noqa: N802 - the RPC's name
        self, request: contract.PredictRequest, context: grpc.aio.ServicerContext
    ) -> contract.PredictResponse:
        # In the event loop on purpose: the plain deployment runs one forward pass at a time.
        answer = self._labeller.label([request.text])[0]
        return contract.PredictResponse(
            label=answer.label,
            score=answer.scores[answer.label],
            scores=answer.scores,
            route=_MODEL,
        )


async def _serve(servicer: contract.RouterServicer, port: int) -> None:
    server = grpc.aio.server()
    contract.add_RouterServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stopping.set)
    print("ready", flush=True)
    await stopping.wait()
    await server.stop(1)


@app.command()
def floor(port: Annotated[int, typer.Option()], redis_url: Annotated[str, typer.Option()]) -> None:
    asyncio.run(_serve(FloorServicer(redis_url), port))


@app.command()
def teacher(
    port: Annotated[int, typer.Option()],
    build: Annotated[Path, typer.Option()],
    task: Annotated[str, typer.Option()],
) -> None:
    asyncio.run(_serve(TeacherServicer(build, task), port))


if __name__ == "__main__":
    app()
