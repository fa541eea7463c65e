"""A prefill probe at server start, and the run's duration estimated from it.

On a CPU the same run takes minutes on one machine and an hour on another (native bf16 or
not, 2 cores or 64). A user who waits should know for how long before the first request, so
the run measures the engine once (one short prompt that no cache can serve), stores the rate
with the run, and turns the corpus's token counts into an estimate.

The estimate counts matmul FLOPs: 2 x (non-embedding parameters) per prompt token plus
attention, which grows with the context (at 8k tokens it is about half the work of a 0.5B
model), so a rate measured on 400 tokens extrapolates to 8k instead of being 2x optimistic.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compare.core.protocols import Plan, Role
from compare.core.types import Example
from compare.serving.client import HttpBackend

PROBE_WORDS = 400  # ~430 prompt tokens: seconds on any CPU, long enough to swamp fixed overhead
PROBE_MAX_TOKENS = 8
_VOCAB = ("river", "stone", "lamp", "window", "orchard", "winter", "harbour", "letter", "garden",
          "candle", "market", "bridge", "forest", "silver", "morning", "valley", "shadow", "engine",
          "paper", "thunder", "meadow", "compass", "lantern")


@dataclass(frozen=True)
class ModelDims:
    """What a prompt token costs: 2 x params FLOPs, plus 4 x attention width per context token."""

    params: int  # non-embedding parameters touched per token (no embedding table, no LM head)
    layers: int
    attn_width: int  # heads x head_dim

    def prefill_flops(self, tokens: int, cached: int = 0) -> float:
        """FLOPs to prefill tokens [cached, tokens): each attends to everything before it."""
        new = max(tokens - cached, 0)
        attn = 2.0 * self.layers * self.attn_width * (tokens * tokens - cached * cached)
        return 2.0 * self.params * new + attn


def model_dims(model_dir: Path | str | None) -> ModelDims | None:
    """From a Hugging Face config.json (llama/qwen/gemma-style blocks with a gated MLP)."""
    if model_dir is None:
        return None
    path = Path(model_dir) / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    cfg = cfg.get("text_config", cfg)
    try:
        h, layers = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"])
        heads, inter = int(cfg["num_attention_heads"]), int(cfg["intermediate_size"])
    except (KeyError, TypeError, ValueError):
        return None
    head_dim = int(cfg.get("head_dim") or h // heads)
    kv = int(cfg.get("num_key_value_heads") or heads) * head_dim
    q = heads * head_dim
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * inter
    return ModelDims(params=per_layer * layers, layers=layers, attn_width=q)


@dataclass(frozen=True)
class ProbeResult:
    prompt_tokens: int
    cached_tokens: int
    ttft_s: float
    tpot_s: float | None
    tokens_per_s: float  # prompt tokens per second of TTFT
    flops_per_s: float | None  # the same rate in matmul FLOP/s, when the model's shape is known
    warmed_by: str | None = None  # what paid a fresh server's one-off set-up before this one

    def describe(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def probe_prompt(seed: str | None = None) -> str:
    """Fresh text every call: a nonce first, so no earlier request shares even one block."""
    nonce = seed or uuid.uuid4().hex
    rng = random.Random(nonce)
    words = " ".join(rng.choice(_VOCAB) for _ in range(PROBE_WORDS))
    return f"Probe {nonce}.\n{words}\nIgnore the words above. Count from 1 to 100, separated by commas."


async def probe(backend: HttpBackend, dims: ModelDims | None = None, *, warmed_by: str | None = None
                ) -> ProbeResult:
    """A cold request whose TTFT is (almost all) prefill on an idle, warmed engine. A fresh CPU
    server's first request pays one-off kernel set-up (1.8 s vs 1.0 s here), so without
    `warmed_by` (what already sent this server a request: the run's discovery chat) a warm-up probe
    goes first. After the discovery chat the first probe is as warm as a second: on three fresh
    servers [AMD EPYC 2c, no native bf16] it was within 4%, 2% and 15% of the mean of two later
    probes, and the second within 3%, 11% and 1% (the noise between cold probes), so the run
    saves one ~500-token prefill."""
    if warmed_by is None:
        await _probe_once(backend, dims)
    return await _probe_once(backend, dims, warmed_by or "a warm-up probe")


async def _probe_once(backend: HttpBackend, dims: ModelDims | None, warmed_by: str | None = None
                      ) -> ProbeResult:
    c = await backend.complete(
        [{"role": "user", "content": probe_prompt()}], max_tokens=PROBE_MAX_TOKENS
    )
    cached = c.cached_tokens or 0
    tpot = (c.e2e_s - c.ttft_s) / (c.output_tokens - 1) if c.output_tokens > 1 else None
    ttft = max(c.ttft_s, 1e-6)
    flops = dims.prefill_flops(c.prompt_tokens, cached) / ttft if dims else None
    return ProbeResult(
        prompt_tokens=c.prompt_tokens, cached_tokens=cached, ttft_s=c.ttft_s, tpot_s=tpot,
        tokens_per_s=(c.prompt_tokens - cached) / ttft, flops_per_s=flops, warmed_by=warmed_by,
    )


@dataclass(frozen=True)
class Request:
    """One planned request, as far as its cost can be known before it runs."""

    prompt_tokens: int
    cached_tokens: int
    max_tokens: int


def planned_requests(
    items: Iterable[tuple[Example, Plan, Role]], overhead_tokens: int = 60
) -> list[Request]:
    """Each (example, the pipeline's declared plan, its role) in run order, with what the
    prefix cache will hold.

    Long context pays a document once; later questions on it reuse the prefix. A retriever pays
    the context it plans (compare.core.protocols.Plan: k chunks, or its budget). A router is
    counted as its retrieval step plus the long-context fallback (an upper bound). No pipeline's
    knob names are read here: a pipeline says what it plans."""
    seen: set[tuple[str, ...]] = set()
    out: list[Request] = []
    for ex, plan, role in items:
        if plan.context_tokens is not None:
            out.append(Request(plan.context_tokens + overhead_tokens, 0, plan.max_tokens))
            if not plan.fallback and role != "router":
                continue
        doc = _doc_tokens(ex)
        warm = ex.doc_ids in seen
        seen.add(ex.doc_ids)
        out.append(Request(doc + overhead_tokens, doc if warm else 0, plan.max_tokens))
    return out


def _doc_tokens(ex: Example) -> int:
    for key in ("doc_tokens", "target_tokens"):
        v = ex.tags.get(key)
        if v is not None:
            try:
                return int(float(v))
            except (TypeError, ValueError):
                continue
    return 0


def estimate_s(requests: Sequence[Request], result: ProbeResult, dims: ModelDims | None) -> float:
    """Seconds of engine time for the requests at the probe's rate (serial, idle engine)."""
    tpot = result.tpot_s or 0.0
    total = 0.0
    for r in requests:
        if dims is not None and result.flops_per_s:
            prefill = dims.prefill_flops(r.prompt_tokens, r.cached_tokens) / result.flops_per_s
        else:
            prefill = max(r.prompt_tokens - r.cached_tokens, 1) / max(result.tokens_per_s, 1e-9)
        total += prefill + r.max_tokens * tpot
    return total


def clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"
