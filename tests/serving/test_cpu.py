"""dtype and cores from the CPU, and the speed provenance a run records (no server started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from compare.run.spec import validate_spec
from compare.serving.cpu import CpuInfo, bind_spec, choose_dtype, cpu_env, engine_cores, parse_cpuinfo
from compare.serving.server import ManagedServer, ServerConfig, parse_id_list

AVX2_EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 avx fma avx2 bmi2
processor\t: 1
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 avx fma avx2 bmi2
"""
ZEN4 = "model name\t: AMD EPYC 9B14\nflags\t\t: avx avx2 fma avx512f avx512_vnni avx512_bf16\n"
SAPPHIRE = "model name\t: Intel Xeon 8481C\nflags\t\t: avx2 avx512f amx_tile amx_bf16 amx_int8\n"


def _info(text: str, cap: str | None = None, cores: tuple[int, ...] = (0, 1)) -> CpuInfo:
    model, flags = parse_cpuinfo(text)
    return CpuInfo(model=model, flags=flags, cores=cores, isa_cap=cap)


def test_cpuinfo_is_parsed_from_the_first_processor() -> None:
    model, flags = parse_cpuinfo(AVX2_EPYC)
    assert model == "AMD EPYC 7B12"
    assert "avx2" in flags and "avx512f" not in flags


@pytest.mark.parametrize(
    ("text", "cap", "want"),
    [
        (AVX2_EPYC, None, "float32"),  # the CI machine of the issue: bf16 would be emulated
        (ZEN4, None, "bfloat16"),
        (SAPPHIRE, None, "bfloat16"),  # AMX without avx512_bf16 still multiplies bf16 natively
        (ZEN4, "AVX2", "float32"),  # oneDNN capped below bf16: the engine cannot use it
        (ZEN4, "AVX512_CORE_BF16", "bfloat16"),
    ],
)
def test_auto_dtype_follows_native_bf16(text: str, cap: str | None, want: str) -> None:
    dtype, why = choose_dtype("auto", cpu=True, info=_info(text, cap))
    assert dtype == want
    assert why  # the reason is printed at server start and recorded


def test_explicit_dtype_is_kept_and_gpu_is_left_to_vllm() -> None:
    assert choose_dtype("bfloat16", cpu=True, info=_info(AVX2_EPYC))[0] == "bfloat16"
    assert choose_dtype("auto", cpu=False, info=_info(AVX2_EPYC))[0] == "auto"


def test_engine_gets_every_core_on_small_machines_and_leaves_one_on_big_ones() -> None:
    assert engine_cores([1, 0]) == [0, 1]
    assert engine_cores(list(range(16))) == list(range(15))
    assert bind_spec([0, 1]) == "0-1" and bind_spec([0, 2, 5]) == "0,2,5" and bind_spec([3]) == "3"
    assert parse_id_list("0-3,6|8") == [0, 1, 2, 3, 6, 8]
    # a binding already chosen (a replica's share, or the user's) is not overridden
    assert cpu_env({"VLLM_CPU_OMP_THREADS_BIND": "1"}, [0, 1]) == {}
    assert cpu_env({}, [0, 1]) == {"VLLM_CPU_OMP_THREADS_BIND": "0-1"}


def test_managed_server_resolves_dtype_and_binding_and_records_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    server = ManagedServer(ServerConfig(model_path="/m", served_name="m"), port=1)
    cmd = server.command()
    dtype = cmd[cmd.index("--dtype") + 1]
    assert dtype in ("bfloat16", "float32")  # never "auto" on the CPU build: resolved here
    desc = server.describe()
    assert desc["dtype"] == dtype and desc["dtype_reason"]
    cpu = desc["cpu"]
    assert isinstance(cpu, dict) and {"model", "flags", "native_bf16", "cores"} <= cpu.keys()
    assert (dtype == "bfloat16") == cpu["native_bf16"]
    env = server.config.env()
    assert desc["threads"] == len(parse_id_list(env["VLLM_CPU_OMP_THREADS_BIND"])) == cpu["cores"]


def test_a_long_cold_prefill_is_not_taken_for_a_dead_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's own 300 s limit per engine step killed a managed server ~25 min into a 16k-token
    cold prefill on the loaded 2-core CPU: managed servers raise it; the user's value wins."""
    monkeypatch.delenv("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", raising=False)
    server = ManagedServer(ServerConfig(model_path="/m", served_name="m"), port=1)
    assert server.config.env()["VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"] == "7200"
    assert server.describe()["engine_step_timeout_s"] == 7200
    monkeypatch.setenv("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "900")
    assert ServerConfig(model_path="/m", served_name="m").env()["VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"] == "900"


def test_replica_binding_is_not_widened(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    config = ServerConfig(model_path="/m", served_name="m", env_extra=(("VLLM_CPU_OMP_THREADS_BIND", "1"),))
    server = ManagedServer(config, port=1)
    assert server.config.env()["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert server.describe()["threads"] == 1


def test_dtype_auto_keeps_old_run_ids_and_an_explicit_one_changes_them() -> None:
    base = validate_spec({})
    assert validate_spec({"server": {"dtype": "auto"}}).run_id() == base.run_id()
    assert validate_spec({"server": {"dtype": "float32"}}).run_id() != base.run_id()


def test_report_knobs_show_the_cpu_dtype_threads_and_probe() -> None:
    from compare.report.html import speed_line

    server = {"dtype": "float32", "dtype_reason": "no native bf16", "threads": 2, "bind": "0-1",
              "cpu": {"model": "AMD EPYC 7B12", "flags": ["avx2", "fma"], "cores": 2},
              "probe": {"tokens_per_s": 104.4, "prompt_tokens": 516}}
    line = speed_line(server)
    assert line == ("CPU AMD EPYC 7B12 (avx2, fma; 2 cores); dtype float32 (no native bf16); "
                    "2 engine threads (cores 0-1); probe 104 prompt tokens/s on 516 tokens")
    # replicas: the first server's CPU facts; an external server: only what was measured
    assert speed_line({"servers": [server], "probe": server["probe"]}).startswith("CPU AMD EPYC 7B12")
    assert speed_line({"managed": False}) == "–"


def test_git_sha_is_ragvslcs_own_commit_not_the_current_directorys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    from compare.store.db import CHECKOUT, git_sha

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.email=u@x", "-c", "user.name=u", "commit", "-q",
                    "--allow-empty", "-m", "user's project"], check=True)
    user_head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True,
                               text=True, check=True).stdout.strip()
    monkeypatch.chdir(tmp_path)  # the user runs ragvslc from inside their own repository
    ours = subprocess.run(["git", "-C", str(CHECKOUT), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert git_sha() != user_head
    assert git_sha() == (ours.stdout.strip() or None)
    # a copy of the code inside someone else's checkout has no commit of its own
    (tmp_path / "vendored").mkdir()
    assert git_sha(tmp_path / "vendored") is None


def test_the_embedder_device_is_recorded_where_it_is_not_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines import rag

    cpu_params = rag.RagPipeline().params()
    assert "embed_device" not in cpu_params  # every CPU run keeps its params hash
    monkeypatch.setattr(rag, "embed_device", lambda: "cuda")
    assert rag.RagPipeline().params() == {**cpu_params, "embed_device": "cuda"}
