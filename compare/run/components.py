"""The built-in components: importing this module registers every built-in kind.

A new pipeline or corpus is one new file (it registers itself with `register_pipeline` or
`register_corpus`, compare/core/registry.py) plus one import line here; a user's own component
needs neither, it is named in the spec with `kind = "python"` and `factory = "pkg.mod:make"`.
"""

from __future__ import annotations

import corpora.aggregate
import corpora.babi
import corpora.beir
import corpora.hf_import
import corpora.jsonl
import corpora.leval
import corpora.needle
import corpora.plugin
import corpora.video_spec
import pipelines.kind_router
import pipelines.llama_retriever
import pipelines.long_context
import pipelines.plugin
import pipelines.rag
import pipelines.routers

BUILTIN_MODULES = (corpora.aggregate, corpora.babi, corpora.beir, corpora.hf_import, corpora.jsonl,
                   corpora.leval, corpora.needle, corpora.plugin, corpora.video_spec, pipelines.long_context,
                   pipelines.plugin, pipelines.rag, pipelines.routers, pipelines.llama_retriever,
                   pipelines.kind_router)
