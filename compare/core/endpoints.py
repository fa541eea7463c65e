"""The two rules every OpenAI-compatible endpoint is reached by, whether it answers chats
(compare/serving/endpoint.py) or embeddings (pipelines/embed_endpoint.py): where its API lives,
and where its key comes from. One place, so a chat and an embeddings endpoint given the same way
are reached the same way.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from compare.core.secrets import remember

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
