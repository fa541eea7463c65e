"""A loopback TCP proxy that misbehaves on purpose (a fake *below* the client under test).

Only chat-completion requests are disturbed, so /health, /tokenize and /metrics keep telling
the truth about the real server behind it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Literal

Mode = Literal["pass", "stall", "cut"]


class FaultProxy:
    def __init__(self, upstream_port: int, mode: Mode = "pass", cut_after: int = 600) -> None:
        self.upstream_port = upstream_port
        self.mode: Mode = mode
        self.cut_after = cut_after
        self.disturbed = 0
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._open: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    def kill(self) -> None:
        """The replica dies (from any thread): no more connections, open ones cut mid-stream."""

        async def die() -> None:
            self._server.close()
            for w in self._open:
                w.transport.abort()

        asyncio.run_coroutine_threadsafe(die(), self.loop).result(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._open.extend((writer, up_w))
        first = await reader.read(65536)
        chat = b"/chat/completions" in first.split(b"\r\n", 1)[0]
        if chat and self.mode == "stall":
            self.disturbed += 1
            await asyncio.sleep(3600)  # accept the request, never answer
        up_w.write(first)
        await up_w.drain()

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, limit: int | None) -> None:
            sent = 0
            try:
                while data := await src.read(4096):
                    if limit is not None and sent + len(data) > limit:
                        dst.write(data[: max(limit - sent, 0)])
                        await dst.drain()
                        self.disturbed += 1
                        break
                    dst.write(data)
                    await dst.drain()
                    sent += len(data)
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        limit = self.cut_after if chat and self.mode == "cut" else None
        await asyncio.gather(pump(reader, up_w, None), pump(up_r, writer, limit))
