"""(f) CPU roofline: the engine's prefill FLOP/s over the core's own matmul FLOP/s, per dtype.

    .venv/bin/python -m benchmarks.run --only f

Each arm starts its own managed vLLM (window 4096) and, in the same environment and with the
same thread count, times torch matmuls of the model's shape (512x896 @ 896x4864) in fp32 and
in bf16. The engine's prefill is timed on cold prompts of 1k and 2k tokens (a nonce first: no
cache hit) and turned into FLOP/s with the model's shape (2 x parameters per token plus
attention, compare/serving/probe.py). Arms:

- auto, all cores: the default (compare/serving/cpu.py picks the dtype and binds every core);
- auto, vLLM's binding: the engine on vLLM's own choice of cores (it keeps one for its scheduler);
  also measured with MiniLM encoding on one thread beside it, as RAG questions are embedded;
- forced bf16 vs auto on this CPU (identical where the CPU has native bf16);
- emulated AVX2: oneDNN, MKL and ATen capped at AVX2 and vLLM's AVX2 kernels loaded, to show
  what a CPU without AVX-512 does with float32 (auto's choice there) and with forced bf16.
  This is an emulation on this CPU (its caches and clocks), not a real AVX2 machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from benchmarks.common import Row, load_avg, ratio_row
from compare.serving import weights as models
from compare.serving.client import HttpBackend
from compare.serving.cpu import bind_spec, cpu_info
from compare.serving.probe import ModelDims, model_dims

WINDOW = 4096
SHORT = 128  # the length at which forced bf16 is compared: seconds even where bf16 is emulated
SHAPE = (512, 896, 4864)
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
# Loaded by every Python started with this folder on PYTHONPATH (the vLLM server and its engine
# process): vLLM picks its kernel library by these two calls.
_SITECUSTOMIZE = """
import torch.cpu
torch.cpu._is_avx512_supported = lambda: False
torch.cpu._is_avx512_bf16_supported = lambda: False
"""

_MATMUL = """
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
m, k, n = {shape}
out = {{}}
for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
    a, b = torch.randn(m, k).to(dt), torch.randn(k, n).to(dt)
    a @ b
    reps, t = 0, time.perf_counter()
    while reps < 3 or (time.perf_counter() - t < 1.0 and reps < 50):
        a @ b
        reps += 1
    out[name] = 2 * m * k * n * reps / (time.perf_counter() - t)
print(json.dumps(out))
"""


def matmul_flops(threads: int, env: Mapping[str, str]) -> dict[str, float]:
    """Matmul FLOP/s per dtype in a fresh process (ISA caps are read at start-up)."""
    import json
    import subprocess
    import sys

    code = _MATMUL.format(shape=SHAPE)
    res = subprocess.run([sys.executable, "-c", code, str(threads)], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=900, check=True)
    return {k: float(v) for k, v in json.loads(res.stdout.strip().splitlines()[-1]).items()}


@contextlib.contextmanager
def arm_server(dtype: str, env: Mapping[str, str]) -> Iterator[tuple[str, dict[str, object]]]:
    from compare.serving.server import ManagedServer, ServerConfig

    path = models.prepare(models.DEFAULT_MODEL)
    config = ServerConfig(model_path=str(path), served_name=models.DEFAULT_MODEL, max_model_len=WINDOW,
                          kv_cache_gib=1, dtype=dtype, env_extra=tuple(env.items()))
    with ManagedServer(config, progress=lambda m: print(f"  {m}", flush=True)) as srv:
        yield srv.base_url, srv.describe()


def _prompt(tokens: int, nonce: str) -> str:
    # ~1.08 tokens per word of this vocabulary with Qwen's tokenizer; the true count comes back.
    words = ("alpha", "river", "stone", "lamp", "garden", "winter", "market", "bridge")
    body = " ".join(words[(i * 7 + len(nonce)) % len(words)] for i in range(int(tokens / 1.08)))
    return f"{nonce}\n{body}\nSay OK."


async def _prefill(url: str, tokens: int, dims: ModelDims, repeats: int) -> dict[str, float]:
    ttfts, n = [], 0
    async with HttpBackend(url, models.DEFAULT_MODEL, timeout_s=3600) as b:
        await b.complete([{"role": "user", "content": _prompt(64, f"warm {time.time_ns()}")}], max_tokens=1)
        for _ in range(repeats):
            c = await b.complete([{"role": "user", "content": _prompt(tokens, f"cold {time.time_ns()}")}],
                                 max_tokens=1)
            ttfts.append(c.ttft_s)
            n = c.prompt_tokens
    best = min(ttfts)  # least disturbed by the other jobs on a shared machine
    return {"prompt_tokens": n, "ttft_s": best, "tokens_per_s": n / best,
            "flops_per_s": dims.prefill_flops(n) / best}


@contextlib.contextmanager
def _embedding_beside() -> Iterator[dict[str, int]]:
    """MiniLM encoding on one thread, non-stop, as RAG questions are embedded next to vLLM."""
    from pipelines.embedder import load_embedder, torch_threads

    model = load_embedder()
    stop = threading.Event()
    count = {"encodes": 0}

    def loop() -> None:
        with torch_threads(1):
            while not stop.is_set():
                model.encode(["where is the needle hidden in this long book?"] * 4)
                count["encodes"] += 1

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield count
    finally:
        stop.set()
        t.join()


def bench_cpu_roofline(lengths: tuple[int, ...] = (1024, 2048), repeats: int = 2,
                       emulate_avx2: bool = True) -> tuple[list[Row], dict[str, Any]]:
    dims = model_dims(models.models_dir() / models.DEFAULT_MODEL)
    assert dims is not None
    info = cpu_info()
    cores = list(info.cores)
    all_cores = {"VLLM_CPU_OMP_THREADS_BIND": bind_spec(cores)}
    raw: dict[str, Any] = {"cpu": info.describe(), "shape": SHAPE, "lengths": lengths}
    rows: list[Row] = []

    def arm(name: str, dtype: str, env: Mapping[str, str], threads: int, beside: bool = False,
            arm_lengths: tuple[int, ...] = (SHORT, *lengths)) -> dict[str, Any]:
        print(f"  [f] arm {name}: dtype {dtype}, env {dict(env)}", flush=True)
        out: dict[str, Any] = {"dtype": dtype, "env": dict(env), "threads": threads}
        out["matmul_flops"] = matmul_flops(threads, {k: v for k, v in env.items() if k != "PYTHONPATH"})
        with arm_server(dtype, env) as (url, desc):
            out["server"] = {k: desc.get(k) for k in ("dtype", "dtype_reason", "bind", "threads")}
            for n in arm_lengths:
                out[f"prefill_{n}"] = asyncio.run(_prefill(url, n, dims, repeats))
            if beside:
                with _embedding_beside() as count:
                    out[f"prefill_{arm_lengths[-1]}_beside_embedding"] = asyncio.run(
                        _prefill(url, arm_lengths[-1], dims, repeats))
                out["embeds_beside"] = count["encodes"]
        out["load_avg_1m"] = load_avg()
        raw[name] = out
        return out

    auto = arm("auto_all_cores", "auto", all_cores, len(cores), beside=True)
    resolved = str(auto["server"]["dtype"])
    vllm_bind = arm("auto_vllm_binding", "auto", {"VLLM_CPU_OMP_THREADS_BIND": "auto"},
                    max(len(cores) - 1, 1), beside=True)
    n = lengths[-1]
    key = f"prefill_{n}"
    rows.append(ratio_row("f_cpu", f"prefill {n} tok, all {len(cores)} cores", "vLLM's own binding",
                          vllm_bind[key]["tokens_per_s"], auto[key]["tokens_per_s"], "tok/s",
                          higher_is_better=True))
    bkey = f"{key}_beside_embedding"
    rows.append(ratio_row("f_cpu", f"prefill {n} tok + MiniLM beside, all cores", "vLLM's binding + MiniLM",
                          vllm_bind[bkey]["tokens_per_s"], auto[bkey]["tokens_per_s"], "tok/s",
                          higher_is_better=True))
    for length in lengths:
        k = f"prefill_{length}"
        roof = auto["matmul_flops"]["bfloat16" if resolved == "bfloat16" else "float32"]
        rows.append(ratio_row("f_cpu", f"prefill FLOP/s {length} tok ({resolved}, auto)",
                              f"{resolved} matmul roofline", roof / 1e9, auto[k]["flops_per_s"] / 1e9,
                              "GFLOP/s", higher_is_better=True, goal=0.7, goal_text=">= 0.7"))
    if resolved != "bfloat16":
        forced = arm("forced_bf16", "bfloat16", all_cores, len(cores), arm_lengths=(SHORT,))
        rows.append(ratio_row("f_cpu", f"prefill {SHORT} tok, auto dtype", "forced bf16",
                              forced[f"prefill_{SHORT}"]["tokens_per_s"],
                              auto[f"prefill_{SHORT}"]["tokens_per_s"],
                              "tok/s", higher_is_better=True))
    if emulate_avx2:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "sitecustomize.py").write_text(_SITECUSTOMIZE)
            env = {**AVX2_ENV, **all_cores, "PYTHONPATH": os.pathsep.join(
                [tmp, *filter(None, [os.environ.get("PYTHONPATH")])])}
            fp32 = arm("emulated_avx2_float32", "float32", env, len(cores))
            bf16 = arm("emulated_avx2_bf16", "bfloat16", env, len(cores), arm_lengths=(SHORT,))
        rows.append(ratio_row("f_cpu", f"emulated AVX2: prefill {SHORT} tok, float32 (auto)", "forced bf16",
                              bf16[f"prefill_{SHORT}"]["tokens_per_s"],
                              fp32[f"prefill_{SHORT}"]["tokens_per_s"],
                              "tok/s", higher_is_better=True))
        for length in lengths:
            k = f"prefill_{length}"
            rows.append(ratio_row("f_cpu", f"emulated AVX2 prefill FLOP/s {length} tok (float32)",
                                  "float32 matmul roofline", fp32["matmul_flops"]["float32"] / 1e9,
                                  fp32[k]["flops_per_s"] / 1e9, "GFLOP/s", higher_is_better=True,
                                  goal=0.7, goal_text=">= 0.7"))
        rows.append(ratio_row("f_cpu", "emulated AVX2 matmul bf16", "fp32",
                              fp32["matmul_flops"]["float32"] / 1e9, fp32["matmul_flops"]["bfloat16"] / 1e9,
                              "GFLOP/s", higher_is_better=True))
    return rows, raw
