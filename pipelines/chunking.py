"""Chunkers (llama-index node parsers) whose chunks keep their exact character span.

Chunk spans are the ground truth for evidence recall, so a chunk's text is always the exact
slice `doc.text[start_char:end_char]`: a span that is off by a few characters would make a
retrieval look like a miss (or a hit) that it is not. Both splitters count tokens with the
embedder's own word-piece tokenizer, so `chunk_size` means what the embedder will see and a
chunk that fits never gets truncated by it.

- sentence: llama-index `SentenceSplitter`, chunks end at sentence ends where possible
  (the default: whole sentences embed better than fragments);
- token: llama-index `TokenTextSplitter`, fixed-size windows cut at word boundaries
  regardless of sentences (the classic baseline chunker of RAG papers);
- lines: whole lines packed up to `chunk_size`, the overlap in whole lines too. For video
  timelines (`[00:02:31] (screen) ...` per line): a chunk never starts mid-line, so every line
  it holds keeps its time stamp and its seconds map back exactly. llama-index has no line
  packer (its sentence splitter cuts inside a line when sentences run across it); a line
  longer than `chunk_size` alone is cut by the token splitter, its first piece keeping the stamp.
"""

from __future__ import annotations

import importlib.metadata
import re
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from compare.core.types import Document, Span

Splitter = Literal["sentence", "token", "lines"]
SPLITTERS: tuple[Splitter, ...] = ("sentence", "token", "lines")
LINES_VERSION = 1  # of `chunk_lines`: part of an index's cache key
Tokenizer = Callable[[str], Sequence[int]]


class _TextSplitter(Protocol):
    def split_text(self, text: str) -> list[str]: ...


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    start_char: int
    end_char: int
    text: str

    def span(self) -> Span:
        return Span(self.doc_id, self.start_char, self.end_char)


def splitter_id(splitter: Splitter) -> str:
    """Names the splitter and its library version: part of an index's cache key. The version
    comes from the package metadata: importing llama-index (~2 s) only to name a cache hit
    would cost more than the hit saves on small documents."""
    version = importlib.metadata.version("llama-index-core")
    if splitter == "lines":
        return f"ragvslc.lines {LINES_VERSION} (llama_index.TokenTextSplitter {version} for long lines)"
    cls = {"sentence": "SentenceSplitter", "token": "TokenTextSplitter"}[splitter]
    return f"llama_index.{cls} {version}"


def _node_parsers() -> Any:
    """llama-index's node parsers. Its import makes pydantic warn about its own field
    definitions (`validate_default` on a union member): not ours to fix, and noise in every
    run's output, so that one warning is silenced for that one import."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*'validate_default' attribute.*")
        import llama_index.core.node_parser as parsers
    return parsers


def make_splitter(
    splitter: Splitter, chunk_size: int, chunk_overlap: int, tokenizer: Tokenizer
) -> _TextSplitter:
    """A llama-index splitter counting with `tokenizer` (never llama-index's tiktoken default)."""
    parsers = _node_parsers()
    if splitter == "sentence":
        return parsers.SentenceSplitter(
            chunk_size=chunk_size, chunk_overlap=chunk_overlap, tokenizer=tokenizer
        )
    if splitter == "token":
        # Newlines are a backup separator, so a chunk may span paragraph breaks: fixed size
        # first, structure second, which is what distinguishes it from the sentence splitter.
        return parsers.TokenTextSplitter(
            chunk_size=chunk_size, chunk_overlap=chunk_overlap, tokenizer=tokenizer,
            separator=" ", backup_separators=["\n"],
        )
    raise ValueError(f"splitter must be one of {SPLITTERS}, got {splitter!r}")


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


def chunk_lines(doc: Document, chunk_size: int, chunk_overlap: int, tokenizer: Tokenizer) -> list[Chunk]:
    """Whole lines packed up to chunk_size tokens; the next chunk repeats the previous one's last
    lines that fit in chunk_overlap tokens (and always adds at least one new line)."""
    spans: list[tuple[int, int, int]] = []  # char start, char end, tokens
    pos = 0
    for line in doc.text.split("\n"):
        if line.strip():
            spans.append((pos, pos + len(line), len(tokenizer(line))))
        pos += len(line) + 1
    chunks: list[Chunk] = []
    windows: _TextSplitter | None = None  # made for the first over-long line only (imports llama-index)
    i = 0
    while i < len(spans):
        start, end, n = spans[i]
        if n > chunk_size:  # one over-long line: token windows, the first keeps the stamp
            if windows is None:
                windows = make_splitter("token", chunk_size, chunk_overlap, tokenizer)
            for c in _split_chunks(Document(doc.id, doc.text[start:end]), windows):
                chunks.append(Chunk(doc.id, start + c.start_char, start + c.end_char, c.text))
            i += 1
            continue
        j = i + 1
        while j < len(spans) and n + spans[j][2] <= chunk_size:
            n += spans[j][2]
            j += 1
        chunks.append(Chunk(doc.id, start, spans[j - 1][1], doc.text[start:spans[j - 1][1]]))
        if j >= len(spans):
            break
        back, kept = j, 0  # overlap: whole lines from the end of this chunk, never all of it
        while back - 1 > i and kept + spans[back - 1][2] <= min(chunk_overlap, chunk_size - spans[j][2]):
            back -= 1
            kept += spans[back][2]
        i = back
    return chunks


def _split_chunks(doc: Document, parser: _TextSplitter) -> list[Chunk]:
    chunks: list[Chunk] = []
    prev = -1
    for piece in parser.split_text(doc.text):
        if not piece.strip():
            continue
        # Overlapping chunks start strictly after the previous start, never before it.
        found = locate(doc.text, piece, prev + 1)
        if found is None:
            raise RuntimeError(f"{doc.id}: cannot place chunk {len(chunks)} in the source text")
        s, e = found
        chunks.append(Chunk(doc.id, s, e, doc.text[s:e]))
        prev = s
    return chunks


def chunk_document(
    doc: Document,
    chunk_size: int,
    chunk_overlap: int,
    tokenizer: Tokenizer,
    splitter: Splitter = "sentence",
) -> list[Chunk]:
    """Chunks of one document with exact character spans; an empty document has none."""
    if not doc.text.strip():
        return []
    if splitter == "lines":
        return chunk_lines(doc, chunk_size, chunk_overlap, tokenizer)
    # split_text rather than get_nodes_from_documents: the node path only adds the same
    # str.find that `locate` starts with (leaving spans unset when it fails) and prints a
    # warning to stdout for small chunk sizes.
    return _split_chunks(doc, make_splitter(splitter, chunk_size, chunk_overlap, tokenizer))


async def longest_fitting_prefix(
    n: int, size: Callable[[int], Awaitable[int]], budget: int
) -> tuple[int, int, bool]:
    """How many of `n` ranked chunks fit `budget` when taken best first: (count, the prefix's
    size, whether the budget stopped it), `size(m)` being the tokens of the first m joined.

    A prefix's size grows with its length (passages are joined by a separator, never merged),
    so the prefix is found by doubling then bisection: O(log n) calls of `size` (each may be a
    server round trip), not n. RAG's token-budget selection (pipelines/rag.py).
    """
    fits, fits_n, over = 0, 0, None  # `fits` chunks fit with fits_n tokens; `over` do not
    m = 1
    while over is None and fits < n:
        m = min(m, n)
        tokens = await size(m)
        if tokens > budget:
            over = m
        else:
            fits, fits_n, m = m, tokens, m * 2
    if over is None:
        return n, fits_n, False
    while over - fits > 1:
        mid = (fits + over) // 2
        tokens = await size(mid)
        if tokens <= budget:
            fits, fits_n = mid, tokens
        else:
            over = mid
    return fits, fits_n, True
