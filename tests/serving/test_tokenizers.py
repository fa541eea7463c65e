"""A local tokenizer counts what the served model's /tokenize counts (hosted endpoints have no
/tokenize: budgets, overflow checks and needle lengths rest on this count)."""

from __future__ import annotations

from pathlib import Path

import pytest

from compare.serving.client import HttpBackend
from compare.serving.tokenizers import load_tokenizer
from pipelines.prompts import build_messages

pytestmark = pytest.mark.slow

TEXT = "The keeper of the tower, a patient woman named Ilse Marrow, wrote down each boat that came home."


async def test_the_model_folders_tokenizer_counts_chats_as_vllm_does(
    model_path: Path, backend: HttpBackend
) -> None:
    local = load_tokenizer(f"hf:{model_path}")
    messages = build_messages(TEXT * 3, "Who wrote down the boats?")
    served = await backend.tokenize(messages=messages)
    assert await local.tokenize(messages=messages) == served > await backend.tokenize(TEXT * 3)
    assert await local.tokenize(TEXT) == await backend.tokenize(TEXT)
