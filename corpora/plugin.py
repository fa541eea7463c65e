"""A user's own corpus: `kind = "python"`, `factory = "pkg.mod:make"`, `options = {...}`.

The factory is called with the options (plus `tokenize` and `data_dir` when it accepts them)
and returns a Corpus, or an awaitable of one. Its documents' lengths are measured with the
served model's tokenizer like every loaded corpus, and the factory and options are recorded in
the corpus params.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from pydantic import Field, field_validator

from compare.core.config import Strict
from compare.core.plugins import load_factory
from compare.core.protocols import BuildContext
from compare.core.registry import register_corpus
from compare.core.types import Corpus
from corpora.records import with_doc_tokens


class PythonCorpusSpec(Strict):
    kind: Literal["python"] = "python"
    factory: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("factory")
    @classmethod
    def _importable(cls, ref: str) -> str:
        load_factory(ref)
        return ref


@register_corpus(PythonCorpusSpec)
async def _build(cs: PythonCorpusSpec, ctx: BuildContext) -> Corpus:
    make = load_factory(cs.factory)
    accepts = inspect.signature(make).parameters
    extra = {k: v for k, v in (("tokenize", ctx.tokenize), ("data_dir", ctx.data_dir)) if k in accepts}
    got = make(**cs.options, **extra)
    corpus = await got if inspect.isawaitable(got) else got
    if not isinstance(corpus, Corpus):
        raise TypeError(f"factory {cs.factory!r} returned {type(corpus).__name__}, not a Corpus")
    params = {**corpus.params, "factory": cs.factory, "options": cs.options}
    return await with_doc_tokens(Corpus(corpus.name, corpus.documents, corpus.examples, params), ctx.tokenize)
