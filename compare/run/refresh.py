"""Bring a stored run's questions up to date with its corpus before rescoring.

A gold answer gets corrected, a generator's evidence spans get fixed, a corpus starts declaring
its headline metric: the stored replies are still replies to the same questions, so they can be
scored again against the corrected examples without paying for the model again. What cannot be
refreshed is a question whose prompt changed: its reply answers something else. The test for
that is exact: the run's recorded content hash (`corpus_params.content_sha256`) recomputed from
the *new* documents and the *stored* examples must equal what the run recorded; then the
documents are the ones the model read, and only the examples' gold side moved.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from compare.core import registry
from compare.core.protocols import BuildContext
from compare.core.registry import spec_kind
from compare.core.types import Corpus, Example
from compare.run.spec import RunSpec
from compare.run.survey import model_dir
from compare.serving import weights as models
from compare.serving.tokenizers import load_tokenizer
from compare.store.db import Store
from compare.store.rows import gold_columns


@dataclass
class Refresh:
    """What `score` found for one run; `reason` says why a run was left as stored."""

    run_id: str
    refreshed: list[str] = field(default_factory=list)
    reason: str | None = None

    def line(self) -> str:
        if self.reason:
            return f"{self.run_id}: examples not refreshed ({self.reason})"
        if not self.refreshed:
            return f"{self.run_id}: examples up to date"
        return f"{self.run_id}: refreshed {len(self.refreshed)} example(s): {', '.join(self.refreshed[:8])}"


def refresh_examples(
    store: Store, run_ids: Sequence[str] | None, data_dir: Path | None = None
) -> list[Refresh]:
    """Rebuild each run's corpus from its stored spec and update its stale examples in place."""
    every = store.con.execute("SELECT run_id FROM runs ORDER BY run_id").fetchall()
    ids = list(run_ids or [r[0] for r in every])
    return [_refresh_one(store, run_id, data_dir) for run_id in ids]


def _refresh_one(store: Store, run_id: str, data_dir: Path | None) -> Refresh:
    row = store.con.execute("SELECT spec, corpus_params FROM runs WHERE run_id = ?", [run_id]).fetchone()
    if row is None:
        return Refresh(run_id, reason="no such run")
    params: dict[str, Any] = json.loads(row[1] or "{}")
    recorded = params.get("content_sha256")
    if not recorded:
        return Refresh(run_id, reason="the run recorded no corpus content hash (stored before hashes)")
    try:
        corpus = asyncio.run(_build(RunSpec.model_validate(json.loads(row[0])), data_dir))
    except Exception as exc:  # any reason the corpus cannot be rebuilt here leaves the run as stored
        return Refresh(run_id, reason=f"its corpus cannot be rebuilt here: {type(exc).__name__}: {exc}")
    if corpus.content_sha256() == recorded:
        return Refresh(run_id)
    stored = store.examples(run_id)
    why = _why_not(stored, corpus, recorded)
    if why:
        return Refresh(run_id, reason=f"{why}: the stored replies answer other prompts; run it again")
    new = {ex.id: ex for ex in corpus.examples}
    changed = [i for i, ex in new.items() if gold_columns(ex) != gold_columns(stored[i])]
    store.refresh_examples(run_id, [new[i] for i in changed], {
        "at": datetime.now(UTC).isoformat(timespec="seconds"), "examples": len(changed),
        "from_sha256": recorded, "to_sha256": corpus.content_sha256(),
    })
    return Refresh(run_id, refreshed=changed)


def _why_not(stored: dict[str, Example], corpus: Corpus, recorded: str) -> str | None:
    """Why the stored replies cannot be scored against the rebuilt examples, if they cannot."""
    new = {ex.id: ex for ex in corpus.examples}
    if set(stored) != set(new):
        return (f"the corpus now asks other questions ({len(set(new) - set(stored))} new, "
                f"{len(set(stored) - set(new))} gone)")
    moved = [i for i, ex in new.items()
             if (ex.question, ex.doc_ids) != (stored[i].question, stored[i].doc_ids)]
    if moved:
        return f"{len(moved)} question(s) now read differently ({', '.join(moved[:3])})"
    as_asked = Corpus(corpus.name, corpus.documents, [stored[ex.id] for ex in corpus.examples])
    if as_asked.content_sha256() != recorded:
        return "its documents changed since the run"
    return None


async def _build(spec: RunSpec, data_dir: Path | None) -> Corpus:
    """The corpus as a resumed run would build it, counted by the served model's own tokenizer
    files (the same counts vLLM's /tokenize gives), or the tokenizer the spec names."""
    folder = model_dir(spec.server.model)
    ref = spec.server.tokenizer or (str(folder) if folder else models.DEFAULT_MODEL)
    tok = load_tokenizer(ref, served=spec.server.model)
    entry = registry.CORPORA[spec_kind(type(spec.corpus))]
    return await entry.build(spec.corpus, BuildContext(tok.tokenize, data_dir))
