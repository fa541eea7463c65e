"""FAISS index over character-exact chunks and their embeddings, cached on disk by content hash.

Indexes are cached because embedding a book on a 2-core CPU takes minutes and a rerun with the
same inputs must not pay it again; the cost of the original build is kept in the cache entry so
a cache hit can still be costed. The cache has two levels: chunks + embeddings keyed by
(documents, splitter, chunk params, embedder), and inside that entry one FAISS file per index
kind and build parameters. Sweeping index kinds (flat, HNSW, IVF) therefore never re-embeds.
Embedding batch size and threads change speed, not meaning, so they are recorded with a build
but are not part of the cache key. The embedder is the local model (named by a string) or an
endpoint (pipelines/embed_endpoint.py): the key holds the endpoint model's identity, never its
host, and a local and an endpoint embedding never share an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from compare.core.types import Document
from pipelines.chunking import Chunk, Splitter, chunk_document, splitter_id
from pipelines.embedder import DEFAULT_EMBEDDER, EmbedProgress, LocalEmbedder, TextEmbedder, current_progress
from pipelines.faiss_kinds import IndexConfig, make_faiss, tune

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
    # Tokens the embedder computed for this index (an endpoint's usage, the local tokenizer's
    # count), kept like build_s so a cache hit can still be priced; None: not known (an entry
    # stored before tokens were counted, an endpoint that sent no usage).
    embed_tokens: int | None = None
    embed_model: str | None = None  # the endpoint model that embedded it; None: in-process
    embed_requests: int = 0
    embed_retries: int = 0


def default_cache_dir() -> Path:
    home = os.environ.get("RAGVSLC_HOME")
    return Path(home) if home else Path.home() / ".cache" / "ragvslc"


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


def as_embedder(embedder: str | TextEmbedder, device: str | None = None) -> TextEmbedder:
    """A name is the local model of that name; anything else already is an embedder."""
    return LocalEmbedder(embedder, device) if isinstance(embedder, str) else embedder


def cache_key(
    docs: Sequence[Document], chunk_size: int, chunk_overlap: int, embedder: str | TextEmbedder,
    splitter: Splitter = "sentence",
) -> str:
    """Hash of everything that decides the chunks and their vectors (not the FAISS kind).
    A local embedder's part is what it was before endpoints existed: its entries stay valid."""
    h = hashlib.sha256()
    header = {
        "format": CACHE_FORMAT,
        "chunker": splitter_id(splitter),
        "chunk_size": chunk_size,
        "chunk_overlap": chunk_overlap,
        **as_embedder(embedder).cache_identity(),
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
    embedder: str | TextEmbedder = DEFAULT_EMBEDDER,
    index: IndexConfig | None = None,
    batch_size: int = 32,
    threads: int | None = None,
    cache_dir: Path | None = None,
    device: str | None = None,
    progress: EmbedProgress | None = None,
) -> tuple[DocIndex, BuildStats]:
    """Chunk, embed and index `docs` as one index, reusing whatever an earlier build stored.

    `embedder` is a local model's name (on `device`) or a `TextEmbedder` such as an endpoint.
    `progress` (default: the one set by `embed_progress`) hears about each embedding batch;
    a cache hit embeds nothing and reports nothing.
    """
    config = index or IndexConfig()
    t0 = time.perf_counter()
    source = as_embedder(embedder, device)
    key = cache_key(docs, chunk_size, chunk_overlap, source, splitter)
    entry = (cache_dir or default_cache_dir()) / "indexes" / key
    loaded = _load_vectors(entry) if (entry / "meta.json").is_file() else None
    if loaded is not None:
        chunks, vecs, meta = loaded
        if "embed_tokens" not in meta:  # stored before tokens were counted: count them now
            meta["embed_tokens"] = source.count_tokens([c.text for c in chunks]) if chunks else 0
    else:
        chunks, vecs, meta = _embed_entry(
            docs, entry, key, t0, chunk_size=chunk_size, chunk_overlap=chunk_overlap, splitter=splitter,
            source=source, batch_size=batch_size, threads=threads, progress=progress or current_progress(),
        )
    file = entry / "faiss" / f"{config.file_id(len(chunks))}.faiss"
    stored = _load_faiss(file, len(chunks)) if loaded is not None else None
    if stored is not None:
        faiss_index, record = stored
    else:
        faiss_index, record = _index_entry(file, vecs, config)

    idx = DocIndex(chunks, vecs, faiss_index, config)
    embed_s, index_s = float(meta["embed_s"]), float(record["index_s"])
    actual = {**record["index"], **config.search_params(record["index"])}
    stats = BuildStats(
        key=key, build_s=embed_s + index_s, load_s=time.perf_counter() - t0, n_chunks=len(chunks),
        bytes=_entry_bytes(entry, file), cache_hit=stored is not None, embed_s=embed_s,
        index_s=index_s, embed_cached=loaded is not None, index=actual,
        threads=int(meta.get("threads", 0)), batch_size=int(meta.get("batch_size", 0)),
        embed_tokens=meta["embed_tokens"], embed_model=meta.get("embed_model"),
        embed_requests=int(meta.get("embed_requests", 0)), embed_retries=int(meta.get("embed_retries", 0)),
    )
    return idx, stats


def _embed_entry(
    docs: Sequence[Document],
    entry: Path,
    key: str,
    t0: float,
    *,
    chunk_size: int,
    chunk_overlap: int,
    splitter: Splitter,
    source: TextEmbedder,
    batch_size: int,
    threads: int | None,
    progress: EmbedProgress | None,
) -> tuple[list[Chunk], NDArray[np.float32], dict[str, Any]]:
    """A cache miss: chunk and embed, then store the entry, so the next build with the same
    key (any index kind) skips the slow part. `t0` is the build's start: the stored `embed_s`
    is what a hit saves, cache lookup included. A local build counts its tokens after the
    timed part, so counting them never shows up as embedding time."""
    source.check_window(chunk_size)
    tokenizer = source.tokenizer()
    chunks = [c for d in docs for c in chunk_document(d, chunk_size, chunk_overlap, tokenizer, splitter)]
    texts = [c.text for c in chunks]
    t_embed = time.perf_counter()
    done = source.embed(texts, batch_size=batch_size, threads=threads,
                        progress=_per_batch(progress, docs, len(chunks)))
    embed_s, encode_s = time.perf_counter() - t0, time.perf_counter() - t_embed
    vecs = done.vectors
    meta = {
        "key": key,
        "embed_s": embed_s,  # chunking included: both are skipped on a hit
        "encode_s": encode_s,
        "n_chunks": len(chunks),
        "splitter": splitter,
        "chunk_size": chunk_size,
        "chunk_overlap": chunk_overlap,
        "embedder": source.name,
        "embed_model": source.embed_model,
        "embed_tokens": done.tokens if done.tokens is not None else source.count_tokens(texts),
        "embed_requests": done.requests,
        "embed_retries": done.retries,
        "batch_size": batch_size,
        "threads": source.threads(threads),
        "doc_ids": [d.id for d in docs],
    }
    if entry.exists():  # a damaged entry: rename cannot replace it, so clear it first
        shutil.rmtree(entry, ignore_errors=True)
    entry.parent.mkdir(parents=True, exist_ok=True)
    _save_vectors(entry, chunks, vecs, meta)
    return chunks, vecs, meta


def _index_entry(file: Path, vecs: NDArray[np.float32], config: IndexConfig) -> tuple[Any, dict[str, Any]]:
    """Build and store one index kind beside the vectors; its record keeps the build time a
    later hit reports as `index_s`."""
    t_index = time.perf_counter()
    faiss_index, actual = make_faiss(vecs, config)
    record = {"index_s": time.perf_counter() - t_index, "index": actual}
    file.parent.mkdir(parents=True, exist_ok=True)
    _save_faiss(file, faiss_index, record)
    return faiss_index, record
