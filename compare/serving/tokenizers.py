"""Counting tokens without the server: for endpoints that have no `/tokenize` (hosted APIs) and
for retrieval-only work with no server at all.

Budgets, needle lengths and long-context window checks need counts before a request is sent;
a hosted API only reports them after (in usage, which is what rows store). The counter used is
named in the run (`runs.server.tokenizer`), and one that is not the served model's own is
marked as an approximation, so a reader knows what "4,000 tokens" was measured with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compare.core.types import Message
from compare.serving import weights


class TokenizerError(ValueError):
    """A local tokenizer that cannot be loaded (no such folder, no offline encoding)."""


class LocalTokenizer:
    """The `tokenize` of the Backend protocol, answered in-process."""

    def __init__(self, name: str, encode: Any, chat: Any | None, *, approximate: bool) -> None:
        self.name = name
        self.approximate = approximate
        self._encode = encode
        self._chat = chat

    def count(self, text: str) -> int:
        return len(self._encode(text))

    def count_messages(self, messages: Sequence[Message]) -> int:
        if self._chat is not None:
            return len(self._chat(list(messages)))
        # No chat template (tiktoken): the messages' text plus a few tokens per message, the
        # usual OpenAI framing estimate; this is why such a counter is an approximation.
        return sum(self.count(str(m.get("content", ""))) + 4 for m in messages) + 3

    async def tokenize(self, text: str | None = None, *, messages: Sequence[Message] | None = None) -> int:
        return self.count_messages(messages) if messages is not None else self.count(text or "")

    def describe(self) -> dict[str, Any]:
        return {"tokenizer": self.name, "approximate": self.approximate}


def _hf(ref: str, served: str | None) -> LocalTokenizer:
    from transformers import AutoTokenizer

    path = Path(ref).expanduser()
    if not (path / "tokenizer_config.json").is_file() and not (path / "tokenizer.json").is_file():
        try:
            path = weights.prepare(ref)  # a registry model: its converted folder (offline)
        except weights.ModelError as exc:
            raise TokenizerError(f"tokenizer {ref!r}: neither a tokenizer folder nor a known model "
                                 f"({exc})") from None
    tok = AutoTokenizer.from_pretrained(str(path))

    def chat(messages: list[Any]) -> Any:
        # return_dict=False: transformers 5 returns a BatchEncoding by default, whose len() is its
        # number of keys (2), not of tokens.
        return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)

    def encode(text: str) -> Any:
        return tok(text, add_special_tokens=False).input_ids

    return LocalTokenizer(f"hf:{ref}", encode, chat if tok.chat_template else None,
                          approximate=served is not None and ref != served)


def _tiktoken(encoding: str) -> LocalTokenizer:
    import tiktoken

    try:
        enc = tiktoken.get_encoding(encoding)
    except Exception as exc:  # tiktoken downloads encodings: offline, only a cached one loads
        raise TokenizerError(
            f"tiktoken encoding {encoding!r} is not available offline ({type(exc).__name__}); put its "
            "file in $TIKTOKEN_CACHE_DIR or use an HF tokenizer folder (tokenizer = \"hf:PATH\")"
        ) from None
    return LocalTokenizer(f"tiktoken:{encoding}", enc.encode_ordinary, None, approximate=True)


APPROXIMATE = "approximate"
CHARS_PER_TOKEN = 4  # the usual English rule of thumb, for when not even a stand-in tokenizer loads


def _approximate() -> LocalTokenizer:
    """A count for a model whose tokenizer is nobody's to have (a hosted model): the default
    model's byte-level BPE where it is here (closer to a modern model's count than characters),
    else characters / 4; marked approximate either way, and named so a report can say which."""
    try:
        tok = _hf(weights.DEFAULT_MODEL, None)
    except (TokenizerError, OSError, ValueError):
        def encode(text: str) -> range:
            return range(-(-len(text) // CHARS_PER_TOKEN))

        return LocalTokenizer(f"{APPROXIMATE}:chars/{CHARS_PER_TOKEN}", encode, None, approximate=True)
    return LocalTokenizer(f"{APPROXIMATE}:{tok.name}", tok._encode, tok._chat, approximate=True)


def load_tokenizer(ref: str, served: str | None = None) -> LocalTokenizer:
    """`hf:<folder or registry model>` (or a bare folder/model name), `tiktoken:<encoding>`, or
    `approximate` (see `_approximate`). `served`: the model the endpoint serves; a different
    tokenizer is an approximation."""
    if ref == APPROXIMATE:
        return _approximate()
    kind, sep, rest = ref.partition(":")
    if sep and kind == "tiktoken":
        return _tiktoken(rest)
    return _hf(rest if sep and kind == "hf" else ref, served)


def model_tokenizer(model: str, api_url: str) -> LocalTokenizer:
    """The served model's own tokenizer when its name is one we have offline (a registry model or
    a local folder), for an endpoint without /tokenize; else one clear line naming the options."""
    try:
        return load_tokenizer(model, served=model)
    except (TokenizerError, OSError, ValueError) as exc:
        raise TokenizerError(
            f"{api_url} has no /tokenize and no local tokenizer for {model!r} ({exc}); "
            "set [server] tokenizer = \"hf:FOLDER\" (the model's tokenizer files), \"tiktoken:ENCODING\", "
            "or \"approximate\" (budgets and window checks then use an approximate count, recorded as such)"
        ) from None
