"""A TCP proxy the tests put between a process and Redis, to cut and restore that process's connections.

It is a real network hop, not a mock: the process under test sees exactly
what a dropped network or a restarted load balancer would show it.
"""

from __future__ import annotations

import asyncio
import threading


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; ``cut()`` drops every connection and refuses new ones until ``restore()``;
    ``hold()`` keeps what clients send from reaching the target (a stalled network) until ``release()``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.accepting = True
        self.connections_cut = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._flowing: asyncio.Event | None = None  # made on the proxy's loop; set while requests flow
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)

    def start(self) -> TcpProxy:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("proxy did not start")
        return self

    def cut(self) -> None:
        """Close every proxied connection and refuse new ones."""
        asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(5)

    def restore(self) -> None:
        """Accept connections again."""
        self.accepting = True

    def hold(self) -> None:
        """Stop forwarding requests to the target (they wait in the proxy, in order) until ``release()``."""
        self._loop.call_soon_threadsafe(self._set_flowing, False)

    def release(self) -> None:
        """Forward the held requests, and every later one at once."""
        self._loop.call_soon_threadsafe(self._set_flowing, True)

    def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        (self._flowing.set if flowing else self._flowing.clear)()

    def close(self) -> None:
        """Drop every connection, end the proxy's tasks, and stop its thread and loop."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()

    async def _shutdown(self) -> None:
        # Finish the pipes here, on a live loop: left pending, they would be
        # garbage-collected after the loop closed and fail noisily.
        await self._cut()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _cut(self) -> None:
        self.accepting = False
        for writer in list(self._writers):
            self.connections_cut += 1
            writer.transport.abort()
        self._writers.clear()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def boot() -> None:
            self._flowing = asyncio.Event()
            self._flowing.set()
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(boot())
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.accepting:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool) -> None:
            try:
                while data := await src.read(65536):
                    if upstream and self._flowing is not None:
                        await self._flowing.wait()
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()
                self._writers.discard(dst)

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
