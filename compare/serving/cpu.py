"""What the CPU can do fast, and the engine settings that follow from it.

Machines of one kind differ from day to day: some have AVX-512 with native bf16, some only
AVX2, where torch's bf16 matmul is emulated and ~60x slower than fp32 (measured: 3,981 ms vs
67 ms for 512x896 @ 896x4864 on one core). So the dtype and the core binding are chosen from
the instruction set and the cores this process may use, and both are recorded with every run:
a latency means nothing without the CPU it came from.
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# Flags that decide speed here: vector width and native low-precision matmul.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "fma")
NATIVE_BF16 = ("avx512_bf16", "amx_bf16")
# oneDNN's ISA cap names, lowest first; a cap below these disables native bf16 for the engine.
_ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
                     "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512",
                     "AVX10_2_512_AMX_2", "ALL", "DEFAULT")

Dtype = Literal["auto", "bfloat16", "float16", "float32"]


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]
    cores: tuple[int, ...]  # the cores this process may run on (affinity), not the machine's
    isa_cap: str | None  # ONEDNN_MAX_CPU_ISA, if set: the engine cannot use more than this

    @property
    def native_bf16(self) -> bool:
        if self.isa_cap is not None and self.isa_cap.upper() not in _ONEDNN_BF16_ISAS:
            return False
        return any(f in self.flags for f in NATIVE_BF16)

    def describe(self) -> dict[str, object]:
        """What `runs.server` records about the CPU (speed provenance)."""
        return {
            "model": self.model,
            "arch": platform.machine(),
            "flags": sorted(f for f in SPEED_FLAGS if f in self.flags),
            "native_bf16": self.native_bf16,
            "cores": len(self.cores),
            **({"isa_cap": self.isa_cap} if self.isa_cap else {}),
        }


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """Model name and flags of the first processor in /proc/cpuinfo (all cores agree)."""
    model, flags = "unknown", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
        if model != "unknown" and flags:
            break
    return model, flags


@functools.cache
def cpu_info() -> CpuInfo:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    model, flags = parse_cpuinfo(text)
    if model == "unknown":
        model = platform.processor() or platform.machine()
    return CpuInfo(
        model=model, flags=flags, cores=tuple(sorted(os.sched_getaffinity(0))),
        isa_cap=os.environ.get("ONEDNN_MAX_CPU_ISA") or None,
    )


def choose_dtype(requested: Dtype | str, *, cpu: bool, info: CpuInfo | None = None) -> tuple[str, str]:
    """(dtype for vLLM, why). An explicit dtype is kept; "auto" on the CPU build is bf16 only
    where the CPU multiplies bf16 natively, else float32; on a GPU vLLM's own "auto" decides."""
    if requested != "auto":
        return str(requested), "set explicitly"
    if not cpu:
        return "auto", "GPU: vLLM picks the model's dtype"
    info = info or cpu_info()
    if info.native_bf16:
        have = ", ".join(f for f in NATIVE_BF16 if f in info.flags)
        return "bfloat16", f"CPU has native bf16 ({have})"
    why = "no avx512_bf16/amx_bf16" if info.isa_cap is None else f"ISA capped at {info.isa_cap}"
    return "float32", f"CPU {why}: bf16 would be emulated (~60x slower matmul), float32 is native"


def engine_cores(cores: Sequence[int]) -> list[int]:
    """Cores for one CPU vLLM server. The client mostly waits on the stream, so on small
    machines the engine gets every core (2 cores: 1.75-2.2x faster prefill than vLLM's default of
    reserving one); from 8 cores on, one is left for the client, its tokenizer and the embedder."""
    cores = sorted(cores)
    return cores if len(cores) < 8 else cores[:-1]


def bind_spec(cores: Iterable[int]) -> str:
    """VLLM_CPU_OMP_THREADS_BIND form: '0-3' for a run, '0,2,5' otherwise."""
    cs = sorted(cores)
    if cs and cs == list(range(cs[0], cs[-1] + 1)) and len(cs) > 1:
        return f"{cs[0]}-{cs[-1]}"
    return ",".join(map(str, cs))


def cpu_env(env: Mapping[str, str], cores: Sequence[int]) -> dict[str, str]:
    """Binding for a CPU server unless the caller (a replica split, the user) already set one."""
    if "VLLM_CPU_OMP_THREADS_BIND" in env:
        return {}
    return {"VLLM_CPU_OMP_THREADS_BIND": bind_spec(engine_cores(cores))}
