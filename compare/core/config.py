"""Strict configuration: the one base of every spec section, and strict TOML files.

Run specs, price sheets and workloads are read one way; every problem names the file and the
dotted field, all problems at once, never a traceback.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """A spec section: unknown keys are errors (a typo must not silently fall back to a default)
    and values are frozen (what was hashed into a run id is what ran)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_toml(path: Path, error: type[ValueError], what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from exc


def validate(model: type[M], data: Any, error: type[ValueError], source: str, what: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
        )
        raise error(f"{source}: invalid {what}: {problems}") from exc
