"""Shared fixtures: one real vLLM server per test session, real model, real files.

This file sits at the top of tests/, so every subfolder (tests/serving/, tests/run/, ...) sees
the same session-scoped server: one per session however the modules are laid out. Helpers
that are not fixtures (hand-built stores, price sheets, scripted servers) are in tests/fixtures/.

Set RAGVSLC_TEST_BASE_URL to reuse a server you already started (`ragvslc serve
--max-model-len 2048`) while iterating; CI always starts its own.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from compare.serving import weights as models
from compare.serving.client import HttpBackend

TEST_WINDOW = 4096  # small window: short prompts keep the suite fast and overflow cheap; fits one L-Eval doc


@pytest.fixture(scope="session")
def model_path() -> Path:
    return models.prepare(models.DEFAULT_MODEL)


@pytest.fixture(scope="session")
def server_url(model_path: Path) -> Iterator[str]:
    external = os.environ.get("RAGVSLC_TEST_BASE_URL")
    if external:
        _SERVER.append(external)
        yield external
        return
    from compare.serving.server import ManagedServer, ServerConfig

    config = ServerConfig(
        model_path=str(model_path), served_name=models.DEFAULT_MODEL, max_model_len=TEST_WINDOW,
        kv_cache_gib=1,
    )
    with ManagedServer(config, progress=lambda m: None) as server:
        print(f"\nvLLM ready at {server.base_url} after {server.startup_s:.0f}s ({server.settings_line()})")
        _SERVER.append(server.base_url)
        yield server.base_url
        _print_work(server.base_url)


def _print_work(base_url: str) -> None:
    """What the suite asked of the session server: prompt tokens prefilled, tokens generated and
    engine seconds; with the probe's rate on another CPU this says how long the suite takes there."""
    import httpx

    from compare.serving.prometheus import parse_metrics

    try:
        m = parse_metrics(httpx.get(f"{base_url}/metrics", timeout=10).text)
    except httpx.HTTPError:
        return
    computed = m.get("vllm:prompt_tokens_by_source:local_compute", m.get("vllm:prompt_tokens", 0.0))
    _SUMMARY.append(
        f"session vLLM: {m.get('vllm:request_success', 0):.0f} requests, {computed:,.0f} prompt tokens "
        f"prefilled, {m.get('vllm:generation_tokens', 0):,.0f} generated, prefill "
        f"{m.get('vllm:request_prefill_time_seconds_sum', 0):.0f} s, decode "
        f"{m.get('vllm:request_decode_time_seconds_sum', 0):.0f} s")


_SUMMARY: list[str] = []  # filled when the session server stops (the last test's teardown)
_SERVER: list[str] = []  # the session server's URL, once a test has started it
_WORK: dict[str, tuple[float, float]] = {}  # test id -> (prompt tokens prefilled, engine seconds)


def _engine_work() -> tuple[float, float] | None:
    """The session server's prefill tokens and engine seconds so far (None before it starts, or
    for a server off this machine, which the suite does not read per test)."""
    if not _SERVER or not _SERVER[0].startswith(("http://127.0.0.1", "http://localhost")):
        return None
    import httpx

    from compare.serving.prometheus import parse_metrics

    try:
        m = parse_metrics(httpx.get(f"{_SERVER[0]}/metrics", timeout=10).text)
    except httpx.HTTPError:
        return None
    tokens = m.get("vllm:prompt_tokens_by_source:local_compute", m.get("vllm:prompt_tokens", 0.0))
    return tokens, (m.get("vllm:request_prefill_time_seconds_sum", 0.0)
                    + m.get("vllm:request_decode_time_seconds_sum", 0.0))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Which tests keep the session server busy: `--durations` says how long a test took, not
    whether that was the engine's time (CI time is scarce, the suite's goal is 40 minutes)."""
    before = _engine_work()
    yield
    after = _engine_work()
    if before is not None and after is not None and after[1] > before[1]:
        _WORK[item.nodeid] = (after[0] - before[0], after[1] - before[1])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _SUMMARY:
        terminalreporter.write_line(line)
    if _WORK:
        terminalreporter.write_line("session vLLM engine seconds by test (top 20; prefill + decode):")
        for node, (tokens, seconds) in sorted(_WORK.items(), key=lambda kv: -kv[1][1])[:20]:
            terminalreporter.write_line(f"  {seconds:7.1f} s {tokens:9,.0f} prompt tokens  {node}")


@pytest.fixture
async def backend(server_url: str) -> AsyncIterator[HttpBackend]:
    async with HttpBackend(server_url, models.DEFAULT_MODEL, timeout_s=300) as b:
        yield b


@pytest.fixture(scope="session")
def hf_tokenizer(model_path: Path):  # type: ignore[no-untyped-def]
    """The served model's own tokenizer, for tests of token-exact builders without a server."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path))


def _loopback_only(real_connect):  # type: ignore[no-untyped-def]
    """A socket guard: anything but 127.0.0.1 (a model hub, tiktoken's CDN) fails loudly."""

    def connect(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else None
        if host is None or not ipaddress.ip_address(host).is_loopback:
            raise AssertionError(f"network access attempted: {address!r}")
        return real_connect(self, address)

    return connect


@pytest.fixture(scope="module")
def no_network() -> Iterator[None]:
    """Opt-in per module (`pytest.mark.usefixtures("no_network")` in its pytestmark): the
    offline modules prove they reach nothing beyond loopback; others may talk to a remote
    RAGVSLC_TEST_BASE_URL, so the guard is not autouse."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _loopback_only(socket.socket.connect))
        yield
