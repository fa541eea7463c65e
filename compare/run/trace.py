"""A timestamped request trace (JSONL) replayed as a load step (issue 28 item 1).

A production log says when each request came and what it asked about; replaying it puts the
strategies under the traffic the deployment really sees (bursts, quiet spells, a hot document)
instead of a Poisson stand-in. One JSON object per line:

- the time: `timestamp` in **milliseconds** (Mooncake's traces, as AIPerf replays them), or
  `timestamp_ms`, or `timestamp_s` / `offset_s` in seconds; offsets are taken from the earliest
  line, so absolute epoch times work as well as offsets;
- the document: `doc_id` (a corpus document id), or `doc_index` (0-based, corpus order), or,
  failing both, Mooncake's `hash_ids`: lines whose first block hash is the same share a prefix,
  so they are given the same document (the k-th distinct first hash gets document k mod n);
- optional `input_length` / `output_length` (tokens): recorded with the request (its example's
  tags), not enforced: the prompt is the pipeline's own over the mapped document.

Each document's questions are asked in turn, as in a rate step. A line that cannot be read is a
`TraceError` naming the file and the line; the CLI turns it into one line and exit 2.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from compare.core.types import Example

# Accepted time fields and their unit in seconds, in the order they are looked for.
TIME_FIELDS = (("timestamp", 1e-3), ("timestamp_ms", 1e-3), ("timestamp_s", 1.0), ("offset_s", 1.0))
LENGTH_FIELDS = ("input_length", "output_length")


class TraceError(ValueError):
    """A trace that cannot be replayed; the message names the file and the line."""


@dataclass(frozen=True)
class TraceLine:
    """One request of the trace: its offset (s from the first), its document, its lengths."""

    line: int  # 1-based line number in the file
    offset_s: float
    doc_id: str | None
    doc_index: int | None
    first_hash: Any
    lengths: Mapping[str, int]


def read_trace(path: Path | str) -> list[TraceLine]:
    """Every request line of the file (blank lines skipped), in time order (stable)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read the trace: {exc.strerror}") from exc
    raw: list[tuple[int, float, dict[str, Any]]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{path}:{n}: not JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise TraceError(f"{path}:{n}: a line must be a JSON object")
        raw.append((n, _time(obj, path, n), obj))
    if not raw:
        raise TraceError(f"{path}: the trace has no requests")
    start = min(t for _, t, _ in raw)
    out = [_line(n, t - start, obj, path) for n, t, obj in raw]
    return sorted(out, key=lambda r: r.offset_s)


def _time(obj: Mapping[str, Any], path: Path, n: int) -> float:
    for name, unit in TIME_FIELDS:
        if name in obj:
            v = obj[name]
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise TraceError(f"{path}:{n}: {name} must be a finite number (got {v!r})")
            return float(v) * unit
    names = ", ".join(f for f, _ in TIME_FIELDS)
    raise TraceError(f"{path}:{n}: no time field (one of {names}; `timestamp` is in ms)")


def _line(n: int, offset_s: float, obj: Mapping[str, Any], path: Path) -> TraceLine:
    doc_id, index, first = obj.get("doc_id"), obj.get("doc_index"), None
    if doc_id is not None and not isinstance(doc_id, str):
        raise TraceError(f"{path}:{n}: doc_id must be a string (got {doc_id!r})")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0):
        raise TraceError(f"{path}:{n}: doc_index must be an integer >= 0 (got {index!r})")
    if doc_id is None and index is None:
        hashes = obj.get("hash_ids")
        if not isinstance(hashes, list) or not hashes:
            raise TraceError(f"{path}:{n}: no document: give doc_id, doc_index or a non-empty hash_ids")
        first = json.dumps(hashes[0])
    lengths: dict[str, int] = {}
    for name in LENGTH_FIELDS:
        v = obj.get(name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise TraceError(f"{path}:{n}: {name} must be an integer >= 0 (got {v!r})")
        lengths[name] = v
    return TraceLine(n, offset_s, doc_id, index, first, lengths)


def trace_arrivals(
    lines: Sequence[TraceLine], examples: Sequence[Example], label: str, scale: float, path: Path | str,
    questions_per_doc: int | None = None,
) -> list[tuple[float, Example, str]]:
    """(due offset s, the request's own example, the corpus question id) per line: each line's
    document mapped as the module says, its questions in turn, offsets times `scale`."""
    by_doc: dict[str, list[Example]] = {}
    for ex in examples:  # corpus order, as the rate steps' popularity ranks documents
        by_doc.setdefault(ex.doc_ids[0] if ex.doc_ids else "", []).append(ex)
    if not by_doc:
        raise TraceError("the corpus has no questions to send")
    docs = list(by_doc)
    firsts: dict[Any, int] = {}
    asked: dict[str, int] = {}
    out: list[tuple[float, Example, str]] = []
    for i, tl in enumerate(lines):
        if tl.doc_id is not None:
            if tl.doc_id not in by_doc:
                shown = ", ".join(docs[:5]) + (" …" if len(docs) > 5 else "")
                raise TraceError(f"{path}:{tl.line}: doc_id {tl.doc_id!r} is not a document of the corpus "
                                 f"with questions ({len(docs)}: {shown})")
            doc = tl.doc_id
        elif tl.doc_index is not None:
            if tl.doc_index >= len(docs):
                raise TraceError(f"{path}:{tl.line}: doc_index {tl.doc_index} is out of range "
                                 f"(the corpus has {len(docs)} document(s) with questions)")
            doc = docs[tl.doc_index]
        else:
            doc = docs[firsts.setdefault(tl.first_hash, len(firsts)) % len(docs)]
        pool = by_doc[doc][:questions_per_doc] if questions_per_doc else by_doc[doc]
        ex = pool[asked.get(doc, 0) % len(pool)]
        asked[doc] = asked.get(doc, 0) + 1
        tags = {**ex.tags, "load_question": ex.id, "load_step": label, "trace_line": float(tl.line),
                **{f"trace_{k}": float(v) for k, v in tl.lengths.items()}}
        out.append((tl.offset_s * scale, replace(ex, id=f"{ex.id}@{label}#{i}", tags=tags), ex.id))
    return out
