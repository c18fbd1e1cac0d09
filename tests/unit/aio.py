"""Running a test's coroutine on an event loop of its own."""

import asyncio
from collections.abc import Awaitable, Callable


def run(main: Callable[[], Awaitable[None]]) -> None:
    """Run `main()` to completion; a failure is raised after the loop has shut down, since
    pytest's outcomes are BaseExceptions, which a loop with gRPC channels does not shut down
    cleanly from."""
    failures: list[BaseException] = []

    async def guarded() -> None:
        try:
            await main()
        except BaseException as exc:
            failures.append(exc)

    asyncio.run(guarded())
    if failures:
        raise failures[0]
