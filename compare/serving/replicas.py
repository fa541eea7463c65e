"""Several managed vLLM servers of one model, each on its own share of the machine.

On a box with several GPUs, one replica per GPU (or per group of GPUs when the flags ask for
tensor/pipeline parallelism) with ragvslc's document affinity (compare/serving/pool.py) keeps each
document's prefix cache on one replica, which one data-parallel server behind a generic load
balancer does not guarantee. On the CPU build the cores are split the same way
(VLLM_CPU_OMP_THREADS_BIND), so replicas do not fight over the same cores.

The binding is part of each server's recorded description (runs.server), like every other
server knob.

Replicas behind vLLM's router (compare/serving/router.py) get two more flags (`behind_router`):
`--enable-scale-out`, because the router's cache-aware policy asks each worker to render a chat
request into tokens (`/v1/chat/completions/render`) and routes every request to one worker when
it cannot; and a fingerprint naming the replica (`--fingerprint-mode custom`), because no router
header names the worker: every response's `system_fingerprint` does instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

from compare.serving.server import ManagedServer, ServerConfig, ServerError, require_vllm

_TP = ("--tensor-parallel-size", "-tp")
_PP = ("--pipeline-parallel-size", "-pp")


def devices_per_replica(extra_args: Sequence[str]) -> int:
    """GPUs one replica needs: tensor parallel x pipeline parallel size from its flags."""
    size = {"tp": 1, "pp": 1}
    args = list(extra_args)
    for i, a in enumerate(args):
        name, _, inline = a.partition("=")
        key = "tp" if name in _TP else "pp" if name in _PP else None
        if key is None:
            continue
        value = inline or (args[i + 1] if i + 1 < len(args) else "")
        try:
            size[key] = int(value)
        except ValueError as exc:
            raise ServerError(f"{name} needs a whole number, got {value!r}") from exc
    return size["tp"] * size["pp"]


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES if set, else all torch sees."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())]


def bindings(n: int, *, cpu: bool, extra_args: Sequence[str] = ()) -> list[tuple[tuple[str, str], ...]]:
    """Environment for each of n replicas: disjoint CPU cores, or disjoint GPUs."""
    if n < 1:
        raise ServerError(f"replicas must be >= 1, got {n}")
    if cpu:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < n:
            raise ServerError(f"{n} replicas need at least {n} CPU cores; this process may use {len(cores)}")
        size = len(cores) // n
        groups = [cores[i * size : (i + 1) * size] for i in range(n)]
        return [(("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, g))),) for g in groups]
    per = devices_per_replica(extra_args)
    gpus = visible_gpus()
    if len(gpus) < n * per:
        raise ServerError(
            f"{n} replicas x {per} GPU(s) each need {n * per} GPUs; {len(gpus)} visible"
        )
    return [(("CUDA_VISIBLE_DEVICES", ",".join(gpus[i * per : (i + 1) * per])),) for i in range(n)]


def replica_configs(config: ServerConfig, n: int) -> list[ServerConfig]:
    """The same server n times, each bound to its own devices."""
    envs = bindings(n, cpu=require_vllm()[0] == "vllm-cpu", extra_args=config.extra_args)
    return [replace(config, env_extra=e) for e in envs]


FINGERPRINT_PREFIX = "ragvslc-replica-"


def behind_router(configs: Sequence[ServerConfig]) -> list[ServerConfig]:
    """The replicas as a router needs them: chat rendering for its cache-aware policy, and each
    one's name in every response (`system_fingerprint` = ragvslc-replica-<i>, i in worker order).
    Flags the user already set win (vLLM takes the last occurrence, so ours go first)."""
    out = []
    for i, c in enumerate(configs):
        named = {a.partition("=")[0] for a in c.extra_args}
        ours = [] if "--enable-scale-out" in named else ["--enable-scale-out"]
        if "--fingerprint-mode" not in named:
            ours += ["--fingerprint-mode", "custom", "--fingerprint-value", f"{FINGERPRINT_PREFIX}{i}"]
        out.append(replace(c, extra_args=(*ours, *c.extra_args)))
    return out


@contextlib.contextmanager
def managed_replicas(
    configs: Sequence[ServerConfig], progress: Callable[[str], None],
    server_type: type[ManagedServer] = ManagedServer,
) -> Iterator[list[ManagedServer]]:
    """Launch every replica at once (they load side by side), then wait for each; stop them
    all on exit, and all of them if one fails to start. Launched from this thread, not a pool:
    a server dies with the thread that forked it (PR_SET_PDEATHSIG)."""
    servers = [server_type(c, progress=progress) for c in configs]
    with contextlib.ExitStack() as stack:
        for s in servers:
            stack.callback(s.stop)
            s.launch()
        for s in servers:
            s.wait_ready()
        yield servers
