"""Endpoint config and provider usage shapes (issue 15): pure functions, values by hand."""

from __future__ import annotations

import pytest

from compare.core.endpoints import Endpoint, EndpointConfigError
from compare.serving.endpoint import (
    UsageTokens,
    read_usage,
    refuses_max_tokens,
)


def test_usage_shapes_mean_the_same_tokens() -> None:
    # OpenAI / vLLM: prompt_tokens is all of the prompt; cached tokens in the details.
    assert read_usage({"prompt_tokens": 1050, "completion_tokens": 10,
                       "prompt_tokens_details": {"cached_tokens": 1000}}) == UsageTokens(1050, 10, 1000, None)
    # vLLM's cache-creation count, top level or in the details.
    assert read_usage({"prompt_tokens": 1050, "completion_tokens": 10, "created_cache_tokens": 50,
                       "prompt_tokens_details": {"cached_tokens": 1000}}) == UsageTokens(1050, 10, 1000, 50)
    # Anthropic's native shape: input_tokens excludes cache reads and writes -> prompt is the sum.
    assert read_usage({"input_tokens": 30, "output_tokens": 7, "cache_read_input_tokens": 900,
                       "cache_creation_input_tokens": 120}) == UsageTokens(1050, 7, 900, 120)
    # Anthropic-style fields on an OpenAI-shaped usage: prompt_tokens is already the total.
    assert read_usage({"prompt_tokens": 1050, "completion_tokens": 7, "cache_read_input_tokens": 900,
                       "cache_creation_input_tokens": 120}) == UsageTokens(1050, 7, 900, 120)
    # DeepSeek-style hit count; a usage without any prompt count is no usage.
    assert read_usage({"prompt_tokens": 500, "completion_tokens": 3,
                       "prompt_cache_hit_tokens": 256}) == UsageTokens(500, 3, 256, None)
    assert read_usage({"completion_tokens": 3}) is None
    assert read_usage({"prompt_tokens": 5, "prompt_tokens_details": None}) == UsageTokens(5, None, None, None)


def test_base_urls_are_used_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    vllm = Endpoint("http://127.0.0.1:8000")
    hosted = Endpoint("https://generativelanguage.example.com/v1beta/openai/", api_key_env="GEMINI_KEY",
                      headers={"x-team": "${TEAM}"})
    assert (vllm.api_url, vllm.root_url) == ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000")
    assert hosted.api_url == "https://generativelanguage.example.com/v1beta/openai"
    assert hosted.root_url == "https://generativelanguage.example.com"
    assert Endpoint("http://h:1/v1").api_url == "http://h:1/v1"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("GEMINI_KEY", raising=False)
    assert vllm.key() == "EMPTY"  # vLLM needs no key
    with pytest.raises(EndpointConfigError, match="GEMINI_KEY is not set"):
        hosted.key()
    monkeypatch.setenv("GEMINI_KEY", "k-123")
    monkeypatch.setenv("TEAM", "eval")
    assert hosted.key() == "k-123" and hosted.resolved_headers() == {"x-team": "eval"}
    assert "k-123" not in str(hosted.describe()) and hosted.describe()["headers"] == ["x-team"]


def test_the_max_tokens_refusal_is_recognised() -> None:
    assert refuses_max_tokens("Error code: 400 - Unsupported parameter: 'max_tokens' is not supported with "
                              "this model. Use 'max_completion_tokens' instead.")
    assert not refuses_max_tokens("Error code: 400 - This model's maximum context length is 4096 tokens")
