"""The two rules every OpenAI-compatible endpoint is reached by, whether it answers chats
(compare/serving/client.py) or embeddings (pipelines/embed_endpoint.py): where its API lives,
and where its key comes from. One place, so a chat and an embeddings endpoint given the same way
are reached the same way; `Endpoint` is a chat endpoint as the user gives it, resolved here once
(issue 26: the run path resolved its URLs on every use, back and forth through two modules).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from compare.core.secrets import HeaderValue, SecretNotSet, remember, resolve_headers

DEFAULT_KEY_ENV = "OPENAI_API_KEY"


class KeyNotSet(ValueError):
    """A key variable the user named is not set: every request would fail with a 401."""


def api_url(base_url: str) -> str:
    """The API base: verbatim, except a bare `http://host:port`, which means vLLM's `/v1` under it."""
    url = base_url.rstrip("/")
    return url + "/v1" if urlsplit(url).path in ("", "/") else url


def read_key(api_key_env: str, for_url: str) -> str:
    """The key from its variable. vLLM needs none ("EMPTY" is sent when the default variable is
    unset); a variable the user named explicitly must be set."""
    value = os.environ.get(api_key_env)
    if value:
        remember(value)  # scrubbed from anything written or shown, should a server echo it
        return value
    if api_key_env != DEFAULT_KEY_ENV:
        raise KeyNotSet(f"the API key variable {api_key_env} is not set "
                        f"(export {api_key_env}=... for {for_url})")
    return "EMPTY"


TokenParam = Literal["auto", "max_tokens", "max_completion_tokens"]


class EndpointConfigError(KeyNotSet):
    """An endpoint that cannot be used as configured (a key variable that is not set)."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach one endpoint. The key is never stored: only its variable's name.

    `base_url` is used verbatim as the API's base (what the OpenAI SDK calls `base_url`), except
    that a bare `http://host:port` means vLLM's convention, the API under `/v1`. vLLM's own extra
    routes (/tokenize, /metrics, /health, /version) live at the server root. Both URLs are
    resolved when the endpoint is made (they cannot change: the dataclass is frozen)."""

    base_url: str
    api_key_env: str = DEFAULT_KEY_ENV
    headers: Mapping[str, str | HeaderValue] = field(default_factory=dict, repr=False)  # values secret
    token_param: TokenParam = "auto"
    api_url: str = field(init=False, compare=False)
    root_url: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        object.__setattr__(self, "api_url", api_url(self.base_url))
        object.__setattr__(self, "root_url", f"{parts.scheme}://{parts.netloc}")

    def key(self) -> str:
        """The key from its variable. vLLM needs none ("EMPTY" is sent); a variable the user
        named explicitly must be set, or the run would fail every request with a 401."""
        try:
            return read_key(self.api_key_env, self.api_url)
        except KeyNotSet as exc:
            raise EndpointConfigError(str(exc)) from None

    def resolved_headers(self) -> dict[str, str]:
        """Extra headers with their values from the environment (`{ env = "VAR" }`, `${VAR}`) or
        the spec; each secret one remembered, so nothing written or shown can carry it."""
        if not self.headers:
            return {}
        try:
            return resolve_headers(self.headers)
        except SecretNotSet as exc:
            raise EndpointConfigError(str(exc)) from None

    def describe(self) -> dict[str, Any]:
        """What a run records about the endpoint: never the key, only where it came from."""
        return {"api_url": self.api_url, "api_key_env": self.api_key_env,
                "headers": sorted(self.headers), "token_param": self.token_param}
