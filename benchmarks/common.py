"""What every benchmark shares: the server, a cold-cache reset, /metrics deltas, result rows.

Every number a benchmark prints is a ratio against a baseline measured in the same run on the
same server, because this machine is shared (2 cores, other developers' jobs): absolute seconds
move with the load, ratios of interleaved or back-to-back measurements much less. The load
average is recorded with each result so a reader can tell a quiet run from a busy one.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from compare.serving import weights as models
from compare.serving.prometheus import metric_deltas, parse_metrics

BENCH_WINDOW = 16384
PREFILL_KEYS = (
    "vllm:prompt_tokens",
    "vllm:prompt_tokens_by_source:local_compute",
    "vllm:prompt_tokens_by_source:local_cache_hit",
    "vllm:prefix_cache_hits",
    "vllm:prefix_cache_queries",
    "vllm:request_prefill_time_seconds_sum",
    "vllm:request_success",
)


@dataclass
class Row:
    """One line of the table: a measurement against its baseline, both from this run."""

    bench: str
    what: str
    baseline: str
    baseline_value: float
    value: float
    unit: str
    ratio: float  # >1 means better than the baseline, whatever the unit (see `higher_is_better`)
    goal: str = ""
    met: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ratio_row(
    bench: str, what: str, baseline: str, base: float, value: float, unit: str, *,
    higher_is_better: bool, goal: float | None = None, goal_text: str = "",
    details: Mapping[str, Any] | None = None,
) -> Row:
    """A row whose ratio reads "x times the baseline" for throughput-like units and
    "x times the baseline's time" for latency-like ones (so a goal is stated as written)."""
    ratio = value / base if base else float("nan")
    met = None
    if goal is not None:
        met = ratio >= goal if higher_is_better else ratio <= goal
    return Row(bench, what, baseline, round(base, 4), round(value, 4), unit, round(ratio, 3),
               goal_text, met, dict(details or {}))


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


@contextlib.contextmanager
def server(base_url: str | None, window: int = BENCH_WINDOW, kv_cache_gib: int = 2,
           extra_args: Sequence[str] = ()) -> Iterator[str]:
    """The given server, or a managed vLLM with a window long enough for the grids.

    The managed one runs in vLLM's dev mode so that /reset_prefix_cache exists: each arm of a
    comparison can then start from the same cold cache.
    """
    if base_url:
        yield base_url.rstrip("/")
        return
    from compare.serving.server import ManagedServer, ServerConfig

    os.environ["VLLM_SERVER_DEV_MODE"] = "1"  # ServerConfig.env() passes the environment on
    path = models.prepare(models.DEFAULT_MODEL)
    config = ServerConfig(model_path=str(path), served_name=models.DEFAULT_MODEL,
                          max_model_len=window, kv_cache_gib=kv_cache_gib, extra_args=tuple(extra_args))
    say = lambda m: print(f"  {m}", flush=True)  # noqa: E731
    with ManagedServer(config, progress=say) as srv:
        say(f"vLLM ready at {srv.base_url} after {srv.startup_s:.0f}s")
        yield srv.base_url


BLOCK = 128  # vLLM's CPU KV block size (tokens)


def cache_blocks(window: int) -> int:
    """KV blocks for a cache of about one `window`-token prompt (vLLM keeps one block aside)."""
    return window // BLOCK + 1


def bounded_server(window: int) -> contextlib.AbstractContextManager[str]:
    """A managed vLLM whose KV cache holds about one `window`-token prompt: the regime of long
    documents on a GPU, where the cache holds a handful of them and order decides what is reused."""
    return server(None, window=window, kv_cache_gib=1,
                  extra_args=("--num-gpu-blocks-override", str(cache_blocks(window))))


def reset_cache(base_url: str) -> bool:
    """Empty the server's prefix cache (dev mode only); False when the server does not allow it."""
    for _ in range(10):
        try:
            resp = httpx.post(f"{base_url}/reset_prefix_cache", timeout=30)
        except httpx.HTTPError:
            return False
        if resp.status_code != 200:
            return False
        if resp.json().get("success", True):
            return True
        time.sleep(0.5)  # blocks still held by a finishing request: try again
    return False


def scrape(base_url: str) -> dict[str, float]:
    try:
        resp = httpx.get(f"{base_url}/metrics", timeout=30)
    except httpx.HTTPError:
        return {}
    return parse_metrics(resp.text) if resp.status_code == 200 else {}


@contextlib.contextmanager
def server_work(base_url: str) -> Iterator[dict[str, float]]:
    """Fill the yielded dict with the prefill counters' deltas over the block."""
    out: dict[str, float] = {}
    before = scrape(base_url)
    yield out
    after = scrape(base_url)
    delta = metric_deltas(before, after)
    out.update({k: round(delta.get(k, 0.0), 3) for k in PREFILL_KEYS})


def computed_tokens(work: Mapping[str, float]) -> float:
    """Prompt tokens the server actually prefilled (not served from its prefix cache)."""
    if "vllm:prompt_tokens_by_source:local_compute" in work and work.get("vllm:prompt_tokens"):
        return work["vllm:prompt_tokens_by_source:local_compute"]
    return work.get("vllm:prompt_tokens", 0.0) - work.get("vllm:prefix_cache_hits", 0.0)


def print_table(rows: Sequence[Row]) -> None:
    cols = ("bench", "what", "baseline", "baseline_value", "value", "unit", "ratio", "goal", "met")
    cells = [[str(getattr(r, c)) if c != "met" else {True: "yes", False: "NO", None: ""}[r.met]
              for c in cols] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def write_results(out: Path, rows: Sequence[Row], raw: Mapping[str, Any], started: float) -> None:
    """A benchmark's numbers to a file (rows, raw detail, its wall seconds and the load beside it),
    then its table: the one shape every benchmark that keeps raw detail writes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": [r.as_dict() for r in rows], "raw": raw,
                               "seconds": round(time.perf_counter() - started, 1),
                               "load_avg_1m": load_avg()}, indent=1, default=str))
    print_table(rows)
