"""A user's own pipeline: `kind = "python"`, `factory = "pkg.mod:make"`, `options = {...}`.

The factory is called with the options as keyword arguments and must return an object with the
Pipeline protocol's `name`, `params()`, `prepare()` and `answer()`. Its role (long context,
retrieval or router) is the object's own `role` attribute when it declares one, else the spec's.
The factory's name and options join the pipeline's params, so two plug-ins (or one plug-in with
other options) are told apart in the store and in the run id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from compare.core.config import Strict
from compare.core.plugins import load_factory
from compare.core.protocols import ROLES, Backend, Pipeline, Role
from compare.core.registry import PIPELINES, PipelineEntry
from compare.core.types import Document, Example, Prediction


class PythonPipelineSpec(Strict):
    kind: Literal["python"] = "python"
    factory: str
    options: dict[str, Any] = Field(default_factory=dict)
    role: Role = "retrieval"

    @field_validator("factory")
    @classmethod
    def _importable(cls, ref: str) -> str:
        load_factory(ref)
        return ref


class PluginPipeline:
    """The user's object, with the spec's factory and options added to its params."""

    def __init__(self, inner: Any, spec: PythonPipelineSpec) -> None:
        missing = [m for m in ("name", "params", "prepare", "answer") if not hasattr(inner, m)]
        if missing:
            raise TypeError(f"factory {spec.factory!r} returned {type(inner).__name__}, "
                            f"which lacks {missing}")
        self.inner: Pipeline = inner
        self.name = str(inner.name)
        role = getattr(inner, "role", spec.role)
        if role not in ROLES:
            raise TypeError(f"{self.name}: role {role!r} is not one of {ROLES}")
        self.role = role  # this object's role: each plug-in declares its own
        self._spec = spec

    def params(self) -> dict[str, object]:
        return {"kind": "python", "factory": self._spec.factory, "options": self._spec.options,
                **dict(self.inner.params())}

    def __getattr__(self, name: str) -> Any:  # index_stats, context_for: whatever the object has
        return getattr(self.inner, name)

    async def prepare(self, documents: Mapping[str, Document], backend: Backend) -> None:
        await self.inner.prepare(documents, backend)

    async def answer(self, example: Example, backend: Backend) -> Prediction:
        return await self.inner.answer(example, backend)


def _build(spec: PythonPipelineSpec) -> Pipeline:
    # The wrapper's role is per object (declared by the user's class or the spec), which the
    # protocol's class-level `role` cannot express statically.
    return PluginPipeline(load_factory(spec.factory)(**spec.options), spec)  # type: ignore[return-value]


# Registered by hand (not with the class decorator): its role comes from each built object.
PIPELINES.add("python", PipelineEntry(PythonPipelineSpec, _build, "retrieval"))
