"""A scripted OpenAI-style server on loopback (SSE chunks, JSON replies): a fake *below* the
client, shared by the timing tests of the client and of the pipelines."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def sse_chunk(content: str | None, finish: str | None = None) -> bytes:
    body = {
        "id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
        "choices": [{"index": 0, "delta": {"content": content} if content is not None else {},
                     "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def sse_usage(prompt: int, cached: int, out: int) -> bytes:
    body = {
        "id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out,
                  "prompt_tokens_details": {"cached_tokens": cached}},
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def send_json(handler: BaseHTTPRequestHandler, body: dict[str, object]) -> None:
    data = json.dumps(body).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A loopback server for `handler` on a free port, its base URL while open."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
