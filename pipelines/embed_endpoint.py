"""Embeddings from any OpenAI-compatible `/v1/embeddings` endpoint: vLLM serving an embedding
model with its pooling runner, or a hosted embeddings API.

RAG's default embedder is the local sentence-transformers model (pipelines/embedder.py); this
is the other `TextEmbedder`, so an index build, its cache and the question embedding are one
code path either way. It lives in pipelines/ (plain httpx) rather than compare.serving because
pipelines import only compare.core.

- The base URL is used as given (what the OpenAI SDK calls `base_url`), except that a bare
  `http://host:port` means vLLM's convention, the API under `/v1`.
- The key is read from the environment variable named by `api_key_env`, never stored or
  recorded; an explicitly named variable that is not set is an error naming it. The default
  variable unset sends "EMPTY" (vLLM without --api-key takes any).
- Texts go `batch_size` to a request, in order. 5xx, 408, 429 and connection errors are retried
  with bounded exponential backoff (Retry-After honoured up to the cap); a refused key (401/403)
  and other 4xx are not, since every retry would fail the same way. Failures raise
  `EmbedEndpointError`, a `BackendError`, so RAG's answer() turns them into error rows.
- Vectors are normalised here whatever the endpoint returns, so inner product stays cosine.
- Tokens come from each response's `usage.prompt_tokens` (None where the endpoint sends none).
- Chunk sizes need a tokenizer in this process: a local tokenizer.json (`tokenizer`, default
  the house MiniLM's: exact when the endpoint serves MiniLM, an approximation, recorded in the
  params, for another model).
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
from numpy.typing import NDArray

from compare.core.endpoints import DEFAULT_KEY_ENV, KeyNotSet, api_url, read_key
from compare.core.errors import BackendError
from compare.core.secrets import HeaderValue, SecretNotSet, resolve_headers
from pipelines.chunking import Tokenizer
from pipelines.embedder import DEFAULT_EMBEDDER, Embedded, file_tokenizer

RETRIES = 3  # after the first attempt: four in all
BACKOFF_S = 0.5  # doubled per retry
BACKOFF_CAP_S = 8.0
TIMEOUT_S = 120.0
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class EmbedConfigError(ValueError):
    """An endpoint that cannot be used as configured (its key variable is not set)."""


class EmbedEndpointError(BackendError):
    """The embeddings endpoint could not embed a batch (after its retries, if retryable)."""


class EmbedAuthError(EmbedEndpointError):
    """The endpoint refused the key: every request would fail the same way."""


class EndpointEmbedder:
    """An OpenAI-compatible embeddings endpoint as a `TextEmbedder`; thread-safe (index builds
    and questions are embedded from worker threads). One HTTP client per instance keeps the
    connection open between questions, so a question's retrieval time is not a TCP handshake."""

    def __init__(
        self, base_url: str, model: str, *, api_key_env: str = DEFAULT_KEY_ENV, tokenizer: str | None = None,
        retries: int = RETRIES, backoff_s: float = BACKOFF_S, timeout_s: float = TIMEOUT_S,
        headers: Mapping[str, str | HeaderValue] | None = None,
    ) -> None:
        if urlsplit(base_url).scheme not in ("http", "https"):
            raise EmbedConfigError(f"embed_base_url must be an http(s) URL, got {base_url!r}")
        if not _VAR_NAME.fullmatch(api_key_env):
            raise EmbedConfigError("embed_api_key_env names an environment variable holding the key "
                                   "(letters, digits, _), not the key itself")
        self.name = model
        self.base_url = base_url
        self.url = api_url(base_url) + "/embeddings"
        self.api_key_env = api_key_env
        self.tokenizer_name = tokenizer or DEFAULT_EMBEDDER
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s
        self._headers = dict(headers or {})  # values secret: sent, never recorded (not in params)
        self._key()  # now: a missing variable is a configuration error, not a failed row later
        self._extra_headers()
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self.query_usage = {"requests": 0, "tokens": 0, "retries": 0, "seconds": 0.0}

    @property
    def embed_model(self) -> str | None:
        return self.name

    def _key(self) -> str:
        try:
            return read_key(self.api_key_env, self.url)
        except KeyNotSet as exc:
            raise EmbedConfigError(str(exc)) from None

    def _extra_headers(self) -> dict[str, str]:
        try:
            return resolve_headers(self._headers)
        except SecretNotSet as exc:
            raise EmbedConfigError(f"embed_headers: {exc}") from None

    def params(self) -> dict[str, object]:
        """What a run records: where the vectors came from, never the key (only its variable)."""
        return {"embed_base_url": api_url(self.base_url), "embed_api_key_env": self.api_key_env,
                "embed_tokenizer": self.tokenizer_name}

    def cache_identity(self) -> dict[str, Any]:
        """The model as the endpoint names it, and the tokenizer that cut the chunks; not the
        host, so the same model moved to another port or provider reuses its vectors, and
        never the local model's entry (`embed_source` tells them apart)."""
        return {"embedder": self.name, "embedder_version": "endpoint", "embed_source": "endpoint",
                "embed_tokenizer": self.tokenizer_name}

    def tokenizer(self) -> Tokenizer:
        return file_tokenizer(self.tokenizer_name)

    def check_window(self, chunk_size: int) -> None:
        """The endpoint's window is its own: an over-long chunk comes back as a clear 400."""

    def count_tokens(self, texts: Sequence[str]) -> int | None:
        return None  # only the endpoint's usage counts; a missing one is not guessed

    def threads(self, n: int | None) -> int:
        return 0

    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=httpx.Timeout(self.timeout_s, connect=10.0))
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def embed(
        self, texts: Sequence[str], *, batch_size: int, threads: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Embedded:
        """Unit-length float32 vectors in the order of `texts`, `batch_size` per request."""
        parts: list[NDArray[np.float32]] = []
        tokens: int | None = 0
        requests = retries = 0
        for start in range(0, len(texts), batch_size):
            vecs, used, tried = self._post(texts[start : start + batch_size])
            parts.append(vecs)
            tokens = None if tokens is None or used is None else tokens + used
            requests, retries = requests + 1, retries + tried
            if progress is not None:
                progress(start + len(vecs), len(texts))
        if not parts:
            return Embedded(np.zeros((0, 0), dtype=np.float32), 0)
        return Embedded(np.concatenate(parts), tokens, requests, retries)

    def embed_query(self, text: str) -> NDArray[np.float32]:
        return self.embed_query_counted(text)[0]

    def embed_query_counted(self, text: str) -> tuple[NDArray[np.float32], int | None]:
        """One question's vector and its usage tokens; request, tokens and seconds also add up
        in `query_usage`."""
        t0 = time.perf_counter()
        vecs, used, tried = self._post([text])
        with self._lock:
            u = self.query_usage
            u["requests"] += 1
            u["tokens"] += used or 0
            u["retries"] += tried
            u["seconds"] += time.perf_counter() - t0
        return vecs[0], used

    def _post(self, texts: Sequence[str]) -> tuple[NDArray[np.float32], int | None, int]:
        """One batch: (vectors, usage tokens, retries it took). Raises EmbedEndpointError."""
        body = {"model": self.name, "input": list(texts), "encoding_format": "float"}
        headers = {**self._extra_headers(), "Authorization": f"Bearer {self._key()}"}
        last = ""
        for attempt in range(self.retries + 1):
            wait = min(BACKOFF_CAP_S, self.backoff_s * 2**attempt)
            try:
                resp = self.client().post(self.url, json=body, headers=headers)
            except httpx.TransportError as exc:  # refused, reset, timed out: worth another try
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    vecs, used = _parse(resp, len(texts), self.url)
                    return vecs, used, attempt
                last = f"HTTP {resp.status_code}: {_message(resp)}"
                if resp.status_code in (401, 403):
                    raise EmbedAuthError(f"{self.url} refused the API key in ${self.api_key_env} ({last})")
                if resp.status_code < 500 and resp.status_code not in (408, 429):
                    raise EmbedEndpointError(f"embeddings request to {self.url} failed: {last}")
                wait = min(BACKOFF_CAP_S, max(wait, _retry_after(resp)))
            if attempt < self.retries:
                time.sleep(wait)
        raise EmbedEndpointError(f"embeddings request to {self.url} failed after {self.retries + 1} "
                                 f"attempts: {last}")


def _message(resp: httpx.Response) -> str:
    try:
        err = resp.json().get("error")
    except (ValueError, AttributeError):
        return resp.text[:200]
    if isinstance(err, dict):
        return str(err.get("message", err))[:200]
    return str(err or resp.text)[:200]


def _retry_after(resp: httpx.Response) -> float:
    try:
        return float(resp.headers.get("Retry-After", 0))
    except ValueError:
        return 0.0


def _parse(resp: httpx.Response, n: int, url: str) -> tuple[NDArray[np.float32], int | None]:
    """The response's vectors (floats or base64 float32), normalised, in input order."""
    try:
        payload = resp.json()
        rows = sorted(payload["data"], key=lambda r: int(r["index"]))
        vecs = np.array([
            np.frombuffer(base64.b64decode(r["embedding"]), dtype=np.float32)
            if isinstance(r["embedding"], str) else r["embedding"]
            for r in rows
        ], dtype=np.float32)
    except (ValueError, KeyError, TypeError) as exc:
        raise EmbedEndpointError(f"{url} sent no embeddings list ({type(exc).__name__}: {exc})") from exc
    if vecs.ndim != 2 or len(vecs) != n:
        raise EmbedEndpointError(f"{url} sent {len(vecs)} embeddings for {n} inputs")
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs = np.divide(vecs, norms, out=np.zeros_like(vecs), where=norms > 0)
    usage = payload.get("usage") or {}
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return vecs, int(tokens) if isinstance(tokens, int | float) and not isinstance(tokens, bool) else None
