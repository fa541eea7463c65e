"""Strict configuration: the one base of every spec section, and strict TOML files.

Run specs, price sheets and workloads are read one way; every problem names the file and the
dotted field, all problems at once, never a traceback.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, ValidationError, model_serializer

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """A spec section: unknown keys are errors (a typo must not silently fall back to a default)
    and values are frozen (what was hashed into a run id is what ran)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Grown(Strict):
    """A spec section that gained fields after run ids were first stored: each listed in
    `NEW_DEFAULTS` is left out of the dump (hence the run id) while it holds that default, so
    every spec written before the field keeps its id and resumes."""

    NEW_DEFAULTS: ClassVar[dict[str, object]] = {}

    @model_serializer(mode="wrap")
    def _omit_new_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name, default in self.NEW_DEFAULTS.items():
            if name in data and data[name] == default:
                data.pop(name)
        return data


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
