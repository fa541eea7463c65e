"""Which questions need the whole document (issue 30): each question's stratum, decided in one place.

A stratum says how much of a document an answer needs: `local` (one place), `multi_hop` (a few
places), `aggregation` (many places, or counting/listing over all of them), `whole` (no part of
the document short of all of it would do), `unknown` (nothing says). It comes from, in order:

1. a corpus label that names a KIND of question a place count cannot see (`aggregation`,
   `whole`): counting two planted facts touches two chunks, yet the answer is only right if no
   third one was missed, so the label wins over the measurement. Not an L-Eval subset's label:
   it is a guess about the whole subset ("exam questions over a lecture need all of it"), not
   about the question, and the probe tests exactly that guess on each question (right at some
   k short of the whole: it did not need the whole), so there the measurement wins;
2. the measured context need: the evidence spans (how many chunks, at the run's chunk size,
   they touch; how far apart), else the retrieval probe (compare/run/context_need.py: the smallest
   top-k at which RAG's answer became correct; correct at no k: `whole`);
3. any other corpus label (bAbI task number, L-Eval subset, an imported file's `stratum` tag);
4. `unknown`.
Every assignment keeps its source (`label`, `spans`, `probe`, `none`). Reads the store, never a model.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import duckdb
import pandas as pd

from compare.store.context_need import read_needs

Stratum = Literal["local", "multi_hop", "aggregation", "whole", "unknown"]
STRATA: tuple[Stratum, ...] = ("local", "multi_hop", "aggregation", "whole", "unknown")
Source = Literal["label", "spans", "probe", "none"]
# Places (chunks touched, or the smallest top-k that answered) at and above which a question is
# an aggregation: beyond the top-k of 2-4 most RAG set-ups use, one retrieval cannot hold them all.
AGGREGATION_MIN_PLACES = 4
DEFAULT_CHUNK_TOKENS = 200  # pipelines/rag_spec.py's default chunk_size
# Characters per token where a document's own ratio is unknown (a stored run keeps spans in
# characters but not its documents' texts): English prose under BPE tokenizers runs ~4.
CHARS_PER_TOKEN = 4.0

# bAbI task -> stratum by how many supporting facts its questions rest on (Weston et al. 2015).
BABI_TASKS: dict[int, Stratum] = {
    **{t: "local" for t in (1, 4, 5, 6, 9, 10, 12)},  # one supporting fact
    **{t: "multi_hop" for t in (2, 3, 11, 13, 14, 15, 16, 17, 18, 19, 20)},  # two or more, chained
    7: "aggregation", 8: "aggregation",  # counting, lists/sets
}
# L-Eval subsets: retrieval-style questions are local; exam-style questions over a whole story or
# lecture (QuALITY, TOEFL, sci-fi true/false) need the whole; financial and multi-document QA combine.
# A prior per subset: a question's measured need (the probe) wins over it, even over `whole`.
LEVAL_SUBSETS: dict[str, Stratum] = {
    "topic_retrieval_longchat": "local", "natural_question": "local",
    "financial_qa": "multi_hop", "multidoc_qa": "multi_hop",
    "quality": "whole", "tpo": "whole", "sci_fi": "whole", "coursera": "whole",
}
# What an imported file's `stratum` tag may say, mapped to a stratum (LongBench Pro's "full" /
# "partial" context labels included).
SYNONYMS: dict[str, Stratum] = {
    "local": "local", "single": "local", "single_hop": "local", "partial": "local",
    "multi_hop": "multi_hop", "multihop": "multi_hop", "multi": "multi_hop",
    "aggregation": "aggregation", "aggregate": "aggregation", "counting": "aggregation",
    "whole": "whole", "full": "whole", "whole_document": "whole", "global": "whole",
}
_KIND_LABELS: frozenset[str] = frozenset({"aggregation", "whole"})
_BABI = re.compile(r"^babi-qa(\d+)$")


@dataclass(frozen=True)
class Need:
    """A question's measured context need: `places` is chunks touched (spans) or the smallest
    top-k that answered (probe); None from a probe: correct at no k tried."""

    source: Literal["spans", "probe"]
    places: int | None
    spread_chars: float | None = None  # spans: first start to last end
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS


@dataclass(frozen=True)
class Assignment:
    stratum: Stratum
    source: Source
    need: Need | None = None
    label: Stratum | None = None


def evidence_spans(tags: Mapping[str, Any], evidence: Iterable[Any] = ()) -> list[tuple[float, float]]:
    """[start_char, end_char] of each evidence span: the `evidence_spans` tag (a JSON list, the key
    every corpus with spans sets), else the example's own evidence (Span objects or stored dicts)."""
    raw = tags.get("evidence_spans")
    if isinstance(raw, str):
        raw = json.loads(raw)
    if raw:
        return [(float(s), float(e)) for s, e in raw]
    out = []
    for sp in evidence:
        s, e = (sp["start"], sp["end"]) if isinstance(sp, Mapping) else (sp.start, sp.end)
        out.append((float(s), float(e)))
    return out


def span_need(spans: Sequence[tuple[float, float]], chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
              chars_per_token: float = CHARS_PER_TOKEN) -> Need | None:
    """Chunks the spans touch when the document is cut into windows of chunk_tokens tokens
    (chunk_tokens x chars_per_token characters each, no overlap: the fewest chunks a retriever
    at that size must return), and how far apart the spans lie. None: no spans. A span no longer
    than a chunk counts once, in the window where it starts: RAG's sentence splitter keeps a
    planted sentence whole, so one lying across a window's edge is still one chunk to retrieve."""
    if not spans:
        return None
    width = chunk_tokens * chars_per_token
    touched: set[int] = set()
    for s, e in spans:
        last = s if e - s <= width else e - 1
        touched.update(range(int(s // width), int(last // width) + 1))
    return Need("spans", len(touched), max(e for _, e in spans) - min(s for s, _ in spans), chunk_tokens)


def need_stratum(need: Need) -> Stratum:
    """1 place: local; 2-3: multi_hop; AGGREGATION_MIN_PLACES or more: aggregation; a probe
    correct at no k: whole."""
    if need.places is None:
        return "whole"
    if need.places <= 1:
        return "local"
    return "multi_hop" if need.places < AGGREGATION_MIN_PLACES else "aggregation"


def label_stratum(tags: Mapping[str, Any]) -> Stratum | None:
    """What the corpus itself says: a `stratum` tag, else its task (bAbI number, L-Eval subset,
    needle variant)."""
    said = tags.get("stratum")
    if isinstance(said, str) and said.strip().lower().replace("-", "_") in SYNONYMS:
        return SYNONYMS[said.strip().lower().replace("-", "_")]
    task = str(tags.get("task", ""))
    m = _BABI.match(task)
    if m:
        return BABI_TASKS.get(int(m.group(1)))
    if task in LEVAL_SUBSETS:
        return LEVAL_SUBSETS[task]
    if task in ("needle", "needle-paraphrase", "needle-distractor"):
        return "local"
    if task == "needle-multi":
        n = float(tags.get("n_needles", 0) or 0)
        return "aggregation" if n >= AGGREGATION_MIN_PLACES else "multi_hop"
    return None


def subset_prior(tags: Mapping[str, Any]) -> bool:
    """Whether the label comes from the question's L-Eval subset (and no `stratum` tag of its own)."""
    said = tags.get("stratum")
    own = isinstance(said, str) and said.strip().lower().replace("-", "_") in SYNONYMS
    return not own and str(tags.get("task", "")) in LEVAL_SUBSETS


def assign(tags: Mapping[str, Any], need: Need | None) -> Assignment:
    """The one rule (module docstring): kind labels, then the measurement, then other labels."""
    label = label_stratum(tags)
    if label in _KIND_LABELS and not subset_prior(tags):
        return Assignment(label, "label", need, label)
    if need is not None:
        return Assignment(need_stratum(need), need.source, need, label)
    if label is not None:
        return Assignment(label, "label", None, label)
    return Assignment("unknown", "none", None, None)


_EXAMPLES = """
SELECT e.example_id, e.tags, e.evidence, e.doc_ids,
    json_extract_string(r.corpus_params, '$.content_sha256') AS corpus_key
FROM examples e JOIN runs r USING (run_id) WHERE e.run_id = ?
"""
_CHUNK = """
SELECT max(TRY_CAST(json_extract_string(params, '$.chunk_size') AS INTEGER)) FROM predictions
WHERE run_id = ? AND json_extract_string(params, '$.chunk_size') IS NOT NULL
"""


def run_chunk_tokens(con: duckdb.DuckDBPyConnection, run_id: str) -> int:
    """The run's RAG chunk size (the largest where several differ: the coarsest cut a run asked
    about); the RAG default where the run has no RAG pipeline."""
    row = con.execute(_CHUNK, [run_id]).fetchone()
    return int(row[0]) if row and row[0] else DEFAULT_CHUNK_TOKENS


def run_strata(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """One row per question of the run: example_id, doc_key, stratum, source, context_need
    (places; NaN: whole or unmeasured), spread_chars. What `ragvslc context-need` stored for the
    same corpus (its content hash) is used: its spans measurement at the run's chunk size (cut at
    the document's own characters per token, which a stored run no longer has), and its probe
    where the question has no spans."""
    rows = con.execute(_EXAMPLES, [run_id]).fetchall()
    chunk = run_chunk_tokens(con, run_id)
    stored = read_needs(con, str(rows[0][4])) if rows and rows[0][4] else {}
    out = []
    for ex_id, tags_json, evidence_json, doc_ids, _ in rows:
        tags = json.loads(tags_json)
        need = span_need(evidence_spans(tags, json.loads(evidence_json)), chunk)
        p = stored.get(str(ex_id))
        k = None if p is None or p["context_need"] is None or math.isnan(p["context_need"]) else int(
            p["context_need"])
        if need is not None and p is not None and p["source"] == "spans" and p["chunk_tokens"] == chunk:
            need = Need("spans", k, p["spread_chars"], chunk)
        elif need is None and p is not None and p["source"] == "probe":
            need = Need("probe", k, chunk_tokens=int(p["chunk_tokens"] or chunk))
        a = assign(tags, need)
        out.append({"example_id": ex_id, "doc_key": doc_ids, "stratum": a.stratum, "source": a.source,
                    "context_need": float(a.need.places) if a.need and a.need.places is not None
                    else math.nan,
                    "spread_chars": a.need.spread_chars if a.need and a.need.spread_chars is not None
                    else math.nan})
    return pd.DataFrame(out, columns=["example_id", "doc_key", "stratum", "source", "context_need",
                                      "spread_chars"])
