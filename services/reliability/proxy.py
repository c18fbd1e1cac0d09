"""A TCP proxy on loopback that can stall: bytes stop flowing both ways until it resumes.

Put between the router and Triton it makes a Triton that answers nothing, for as long as a
scenario wants, without touching Triton itself (whose python backend aborts when its
processes are frozen with SIGSTOP: its stub health check times out and the reload crashes).
"""

import asyncio
import contextlib
import threading

from services.processes.ports import free_port

__all__ = ["StallingProxy"]

_CHUNK = 1 << 16


class StallingProxy:
    """Forwards `127.0.0.1:port` to `127.0.0.1:upstream_port` from a thread of its own."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port(host)
        self._upstream_port = upstream_port
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stalling-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(10) or self._server is None:
            raise RuntimeError(f"the proxy could not listen on {self.host}:{self.port}")

    def stall(self, stalled: bool) -> None:
        self._loop.call_soon_threadsafe(self._flowing.clear if stalled else self._flowing.set)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._flowing.set()
        with contextlib.suppress(OSError):
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._connect, self.host, self.port)
            )
        self._started.set()
        if self._server is None:
            return
        self._loop.run_forever()
        self._server.close()
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.host, self._upstream_port
            )
        except OSError:
            writer.close()  # upstream down: the client sees the connection closed
            return
        await asyncio.gather(
            self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
        )

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(_CHUNK):
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.close()
