"""A TCP relay on loopback in front of a server: a slow network or a slow server, on demand.

What clients send is held `delay` seconds before it is passed on (answers come back at once), so a
client that gives up after its timeout has still sent its command: the server runs it later, as a
real slow Redis would. `refuse_new` closes new connections at once (a server at its client limit,
a network blip) while open ones go on working. One thread with its own event loop, stopped on exit.
"""

from __future__ import annotations

import asyncio
import threading

from drill.standins import LOOPBACK

CHUNK_BYTES = 65536


class SlowLink:
    def __init__(self, target_port: int, delay: float = 0.0) -> None:
        self.target_port, self.delay = target_port, delay
        self.refuse_new = False
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="slow-link", daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> SlowLink:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._relay, LOOPBACK, 0)

    async def _close(self) -> None:
        self._server.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _relay(self, client_reader, client_writer) -> None:
        if self.refuse_new:
            client_writer.close()
            return
        server_reader, server_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        try:
            await asyncio.gather(
                self._pump(client_reader, server_writer, delayed=True),
                self._pump(server_reader, client_writer, delayed=False),
            )
        except asyncio.CancelledError:
            pass  # the link is closing: asyncio's server would log a cancelled handler as an error
        finally:
            client_writer.close()
            server_writer.close()

    async def _pump(self, reader, writer, delayed: bool) -> None:
        try:
            while chunk := await reader.read(CHUNK_BYTES):
                if delayed:
                    await asyncio.sleep(self.delay)  # read by now: the delay applies to what is in flight
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()  # one side closed: close the other, as a TCP relay does
