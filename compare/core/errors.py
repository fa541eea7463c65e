"""Errors every layer may raise or catch: a request the server could not complete.

They live in core so a pipeline can tell a failed request from a bug without importing the
HTTP client that raises them (pipelines only see the Backend protocol).
"""

from __future__ import annotations

from compare.core.secrets import scrub


class BackendError(RuntimeError):
    """A request the server could not complete; its message ends up in the prediction row, so
    a secret a server echoes back (a header's value in an error body) is taken out here."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(scrub(a) if isinstance(a, str) else a for a in args))


class EmptyStreamError(BackendError):
    """A stream that delivered no token counts as a failed request (vLLM benchmark rule)."""


class TruncatedStreamError(BackendError):
    """A stream that ended without a finish reason was cut mid-answer (a dropped connection, a
    proxy timeout): its text may be half an answer, so it is a failed request, not a success."""


class MissingUsageError(BackendError):
    """A stream without a usage chunk: prompt, cached and output tokens are unknown, so the
    request could be neither priced nor told cold from warm; it fails instead of guessing."""
