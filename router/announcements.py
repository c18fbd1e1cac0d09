"""One Redis pub/sub channel followed for as long as the router runs.

The subscription is made again after Redis restarts or the connection drops; `on_subscribed`
runs after every (re)subscription, so the follower can read what it may have missed.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as redis
from redis.asyncio.client import PubSub

__all__ = ["Announcements"]

_log = logging.getLogger(__name__)
_RETRY_S = 1.0


class Announcements:
    def __init__(
        self,
        client: "redis.Redis",
        channel: str,
        on_message: Callable[[str], Awaitable[None]],
        on_subscribed: Callable[[], Awaitable[None]],
    ) -> None:
        self._client = client
        self._channel = channel
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow())

    async def close(self, timeout_s: float) -> bool:
        """Stop following; False when the listener did not stop within `timeout_s`."""
        self._closing = True
        if self._task is None:
            return True
        self._task.cancel()
        done, _ = await asyncio.wait([self._task], timeout=timeout_s / 10)
        if not done and self._pubsub is not None:
            # redis-py can lose a cancellation that lands in one of its calls (Python 3.11's
            # asyncio.wait_for may swallow it); the task then reads the subscription forever.
            # Closing the subscription's connection ends that read.
            await self._pubsub.aclose()
            done, _ = await asyncio.wait([self._task], timeout=timeout_s)
        for task in done:
            # Whatever the listener died of while shutting down no longer matters.
            if not task.cancelled():
                task.exception()
        return bool(done)

    async def _follow(self) -> None:
        while not self._closing:
            try:
                if isinstance(self._client, redis.RedisCluster):
                    await self._client.initialize()  # its pub/sub needs the slots known
                pubsub = self._pubsub = self._client.pubsub()
                await pubsub.subscribe(self._channel)
                await self._on_subscribed()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        await self._on_message(message["data"].decode())
            except Exception as exc:  # redis-py's cluster client raises more than RedisError
                if self._pubsub is not None:
                    with contextlib.suppress(Exception):
                        await self._pubsub.aclose()  # its connection goes back to the pool
                if self._closing:
                    return
                _log.warning(
                    "%s announcements lost (%s); retrying", self._channel, type(exc).__name__
                )
                await asyncio.sleep(_RETRY_S)
