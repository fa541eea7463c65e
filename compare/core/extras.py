"""Optional extras: a feature whose packages are not installed says which extra brings them.

Video ingest and model conversion need packages not every user wants (`pip install
'ragvslc[video]'`, `'ragvslc[models]'`, pyproject.toml). Their imports stay lazy, inside the
function that needs them, and run inside `needs_extra`, so a user without the extra gets one line
naming the extra instead of an ImportError traceback. It lives in core so that corpora and the
serving layer can both use it; the caller passes its own error type, the one its CLI command
already prints as one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

# The extras a message may name, as pyproject.toml's [project.optional-dependencies] spells them;
# tests/architecture/test_dependencies.py checks the two agree.
EXTRAS = ("video", "models")


class MissingExtraError(RuntimeError):
    """A feature was used without its extra installed; the message says what to install."""


def missing_extra_message(extra: str, feature: str, module: str | None = None) -> str:
    """One line: what needs what, and the pip command that installs it."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    missing = f" (no module named {module!r})" if module else ""
    return f"{feature} needs the [{extra}] extra{missing}: pip install 'ragvslc[{extra}]'"


@contextmanager
def needs_extra(
    extra: str, feature: str, error: type[Exception] = MissingExtraError
) -> Iterator[None]:
    """Turn a missing module, imported inside the block, into `error` with the install line.

    Only ModuleNotFoundError: a module that is there but fails to load (a missing system
    library, an ABI mismatch) is a different problem, and its own traceback says which.
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        raise error(missing_extra_message(extra, feature, exc.name)) from None
