"""Secrets that must never leave the process: keys, header values, secret flags.

A results file, a report and an export are mailed around and attached to tickets, so whatever
authenticates a request is kept out of all of them by two rules that hold whichever path a
value takes:

- by shape: a spec records a header only as its name and where its value comes from
  (`env:AZURE_KEY`, or `literal, redacted`), and a secret flag's value (`--api-key X`) as
  `[redacted]`; `redact_json` applies the same rules to JSON that was stored before they held;
- by value: every secret read at run time (a key, a header's value) is remembered here, and
  `scrub` takes it out of any text about to be written or shown (an error body that echoes a
  request's headers, a traceback's message).

The registry is process-wide on purpose: the key is read in one layer (serving, pipelines)
and a row is written in another (store); neither may import the other.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

LITERAL = "literal, redacted"  # what a stored spec says about a header value given verbatim
REDACTED = "[redacted]"  # what replaces a secret inside a longer text or an argument list
REVEAL = {"secrets": "reveal"}  # model_dump(context=REVEAL): the values, for re-validation only
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_STORED_ENV = re.compile(r"env:([A-Za-z_][A-Za-z0-9_]*)")
# A header or JSON key whose value authenticates: api-key, x-api-key, X-Org-Token, Cookie, ...
_SECRET_NAME = re.compile(r"key|token|secret|auth|passw|credential|signature|cookie|session", re.I)
# A JSON key that holds a secret itself (not its variable's name: `api_key_env` is fine).
_SECRET_FIELD = re.compile(r"(^|[-_])(api[-_]?key|token|secret|password|passwd|credentials?|"
                           r"authorization)$", re.I)
# A command-line flag whose value is a secret: --api-key, --hf-token (not --max-num-batched-tokens).
_SECRET_FLAG = re.compile(r"^--?(?:[a-z0-9]+[-_])*(?:api[-_]?key|key|token|secret|password|passwd|"
                          r"credentials?|authorization)$", re.I)
_KEY_PREFIXES = ("sk-", "sk_", "pk-", "rk-", "ghp_", "gho_", "github_pat_", "xox", "hf_", "AKIA", "AIza",
                 "Bearer ", "Basic ")
_MIN_SCRUB = 6  # shorter values ("EMPTY", "1") would mangle ordinary text; they secure nothing

_known: set[str] = set()
_lock = threading.Lock()


class SecretNotSet(ValueError):
    """A variable the spec names for a secret is not set: every request would be refused."""


def remember(value: str | None) -> None:
    """Mark a value as secret for the rest of the process: `scrub` takes it out of any text."""
    if value and len(value) >= _MIN_SCRUB:
        with _lock:
            _known.add(value)


def scrub(text: str) -> str:
    """`text` with every remembered secret replaced by `[redacted]` (longest first, so a value
    that contains another is taken out whole)."""
    if not _known or not text:
        return text
    with _lock:
        values = sorted(_known, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def read_env(name: str, what: str) -> str:
    """A secret from its variable (remembered); unset is one clear line, never a 401 later."""
    value = os.environ.get(name)
    if value is None:
        raise SecretNotSet(f"the variable {name} for {what} is not set (export {name}=...)")
    remember(value)
    return value


def looks_secret(name: str, value: str) -> bool:
    """Whether a literal value in a spec is likely a credential: by its header's name, or by its
    look (a known key prefix, or a long run of letters and digits without spaces)."""
    if _SECRET_NAME.search(name) or value.startswith(_KEY_PREFIXES):
        return True
    return (len(value) >= 16 and not any(c.isspace() for c in value)
            and any(c.isalpha() for c in value) and any(c.isdigit() for c in value))


@dataclass(frozen=True, repr=False)
class HeaderValue:
    """One header's value as a spec gives it: `{ env = "VAR" }` (or `"${VAR}"`), or a literal,
    in which `${VAR}` parts are expanded at run time. Its repr and every dump of a spec say only
    where the value comes from; `reveal()` gives the spelling back for re-validation."""

    env: str | None = None
    literal: str | None = None  # None with env, and when read back from a store (value gone)
    stored: str | None = None  # read back from a store: what it said (the value is not there)

    @classmethod
    def parse(cls, value: object) -> HeaderValue:
        if isinstance(value, HeaderValue):
            return value
        if isinstance(value, Mapping):
            name = value.get("env")
            if set(value) != {"env"} or not isinstance(name, str) or not ENV_NAME.fullmatch(name):
                raise ValueError('a header value is a string or { env = "VARIABLE_NAME" }')
            return cls(env=name)
        if not isinstance(value, str):
            raise ValueError('a header value is a string or { env = "VARIABLE_NAME" }')
        whole = _VAR.fullmatch(value) or _STORED_ENV.fullmatch(value)  # "${X}"; "env:X" as stored
        if whole:
            return cls(env=whole.group(1))
        if value == LITERAL or value.endswith(f"in literal text, {REDACTED}"):
            return cls(stored=value)  # a stored spec read back: the value is not there to send
        return cls(literal=value)

    @property
    def source(self) -> str:
        """Where the value comes from: what a store, a report or a log may say about it."""
        if self.env:
            return f"env:{self.env}"
        if self.stored:
            return self.stored
        names = _VAR.findall(self.literal or "")
        if names:
            return f"env:{','.join(names)} in literal text, {REDACTED}"
        return LITERAL

    def reveal(self) -> str | dict[str, str]:
        if self.env:
            return {"env": self.env}
        return self.literal if self.literal is not None else LITERAL

    def resolve(self, header: str) -> str:
        """The value to send (remembered as a secret when it came from the environment or looks
        like one)."""
        if self.env:
            return read_env(self.env, f"header {header}")
        if self.literal is None:
            raise SecretNotSet(f"header {header}: its value was redacted from the stored spec; give it "
                               f'again, best from the environment: {header} = {{ env = "VAR" }}')

        def one(m: re.Match[str]) -> str:
            return read_env(m.group(1), f"header {header}")

        value = _VAR.sub(one, self.literal)
        if self.literal_secret(header):
            remember(value)
        return value

    def literal_secret(self, header: str) -> bool:
        """Whether the spec itself holds a secret here: a literal that looks like one (around a
        `${VAR}` only the literal text counts: `Bearer ${TOKEN}` holds none)."""
        if self.literal is None:
            return False
        if not _VAR.search(self.literal):
            return looks_secret(header, self.literal)
        rest = _VAR.sub("", self.literal).removeprefix("Bearer ").removeprefix("Basic ").strip()
        return bool(rest) and looks_secret("", rest)

    def __repr__(self) -> str:
        return f"HeaderValue({self.source})"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler,
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse,
            serialization=core_schema.plain_serializer_function_ser_schema(_dump, info_arg=True),
        )


def _dump(value: HeaderValue, info: core_schema.SerializationInfo) -> str | dict[str, str]:
    ctx = info.context
    return value.reveal() if isinstance(ctx, Mapping) and ctx.get("secrets") == "reveal" else value.source


def resolve_headers(headers: Mapping[str, str | HeaderValue]) -> dict[str, str]:
    """The headers to send: each value from its variable or its literal (a plain string, as an
    Endpoint built in code passes, is read like a spec's literal)."""
    return {name: HeaderValue.parse(v).resolve(name) for name, v in headers.items()}


def literal_secrets(headers: Mapping[str, str | HeaderValue], *args: Sequence[str]) -> list[str]:
    """Names of headers and flags given a literal secret-looking value: the one warning at start."""
    found = [name for name, v in headers.items() if HeaderValue.parse(v).literal_secret(name)]
    for argv in args:
        found += [flag for flag, value in _flag_values(argv) if not _VAR.fullmatch(value)]
    return found


def warning_line(names: Sequence[str]) -> str | None:
    if not names:
        return None
    return (f"warning: the spec holds a literal secret-looking value for {', '.join(names)}: it is "
            "sent, never stored or shown, but the spec file itself holds it; better read it from the "
            'environment (a header: { env = "VAR" }; a flag: the variable its tool reads)')


def _flag_values(argv: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if not _SECRET_FLAG.match(flag):
            continue
        if eq:
            out.append((flag, value))
        elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            out.append((flag, argv[i + 1]))
    return out


def redact_args(argv: Sequence[str]) -> list[str]:
    """An argument list with each secret flag's value replaced (`${VAR}`, a variable's name, kept)."""
    out = list(argv)
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if not _SECRET_FLAG.match(flag):
            continue
        if eq and not _VAR.fullmatch(value):
            out[i] = f"{flag}={REDACTED}"
        elif (not eq and i + 1 < len(argv) and not argv[i + 1].startswith("-")
              and not _VAR.fullmatch(argv[i + 1])):
            out[i + 1] = REDACTED
    return out


_ARG_LISTS = ("extra_args", "router_args", "args", "command")


def redact_json(obj: Any, path: str = "") -> tuple[Any, list[str]]:
    """A stored JSON value (a run's spec, its server record) with every secret taken out by shape
    and by value; also returns where a secret was removed (empty: nothing was)."""
    removed: list[str] = []
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            here = f"{path}.{k}" if path else str(k)
            if k in ("headers", "embed_headers") and isinstance(v, Mapping):
                out[k] = {}
                for name, value in v.items():
                    try:
                        parsed = HeaderValue.parse(value)
                    except ValueError:
                        parsed = HeaderValue()
                    out[k][name] = parsed.source
                    if parsed.env is None and value != parsed.source:  # a value was there
                        removed.append(f"{here}.{name}")
            elif k in _ARG_LISTS and isinstance(v, list) and all(isinstance(a, str) for a in v):
                out[k] = redact_args(v)
                removed += [f"{here}[{i}]" for i, (a, b) in enumerate(zip(v, out[k], strict=True)) if a != b]
            elif isinstance(v, str) and _SECRET_FIELD.search(str(k)) and v not in (LITERAL, REDACTED):
                out[k] = REDACTED
                removed.append(here)
            else:
                out[k], more = redact_json(v, here)
                removed += more
        return out, removed
    if isinstance(obj, list):
        items = [redact_json(v, f"{path}[{i}]") for i, v in enumerate(obj)]
        return [v for v, _ in items], [p for _, ps in items for p in ps]
    if isinstance(obj, str):
        clean = scrub(obj)
        return clean, [path] if clean != obj else []
    return obj, []
