"""vLLM's Prometheus `/metrics`: which series describe a run's server work, read from the text,
and the deltas between two scrapes (of one server, or of replicas each read on its own).

Apart from the HTTP client (compare/serving/client.py) because it is arithmetic on scraped text:
the runner, the router's per-replica counters and the benchmarks read it the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prometheus_client.parser import text_string_to_metric_families

# Prometheus series (vLLM v1 names) whose before/after deltas describe a run's server work.
SERVER_COUNTERS: tuple[str, ...] = (
    "vllm:prefix_cache_queries",
    "vllm:prefix_cache_hits",
    "vllm:prompt_tokens",
    "vllm:generation_tokens",
    "vllm:request_success",
    "vllm:request_prefill_time_seconds_sum",
    "vllm:request_decode_time_seconds_sum",
    "vllm:request_queue_time_seconds_sum",
    "vllm:request_inference_time_seconds_sum",
    "vllm:time_to_first_token_seconds_sum",
    "vllm:e2e_request_latency_seconds_sum",
    "vllm:prompt_tokens_cached",
    "vllm:prompt_tokens_by_source",
    "vllm:request_prefill_kv_computed_tokens_sum",
    "vllm:num_preemptions",
)


def parse_metrics(text: str, names: Sequence[str] = SERVER_COUNTERS) -> dict[str, float]:
    """Sum each wanted Prometheus series over its labels (one model per server here)."""
    wanted = set(names)
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            base = name[: -len("_total")] if name.endswith("_total") else name
            if base in wanted:
                # Split by source (local compute vs cache hit) instead of summing it away.
                key = f"{base}:{sample.labels['source']}" if "source" in sample.labels else base
                out[key] = out.get(key, 0.0) + float(sample.value)
    return out


def metric_deltas(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """What the server did between two scrapes. Several replicas (`replica<i>/<name>`, each read
    from the replica itself): each replica's own deltas, and each name's delta as the sum of
    those, over the replicas read both times (a replica dead at the end has no deltas, and
    subtracting sums would charge its whole history to the others)."""
    per = {k: after[k] - before[k] for k in after if k.startswith("replica") and "/" in k and k in before}
    if not per and not any(k.startswith("replica") and "/" in k for k in after):
        return {k: after[k] - before.get(k, 0.0) for k in after}
    sums: dict[str, float] = {}
    for k, v in per.items():
        name = k.split("/", 1)[1]
        sums[name] = sums.get(name, 0.0) + v
    return {**sums, **per}
