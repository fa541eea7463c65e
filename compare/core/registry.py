"""One registry style for every component kind: pipelines, corpora and metrics register where
they are defined, by kind; the run spec, the builders and the analysis look them up here.

A pipeline is registered with its spec class (whose fields are the constructor's arguments) and
its role; a corpus with its spec class and an async builder; a metric with its function. The
spec's `kind` default is the registry key, so a TOML `kind = "..."` finds its component. Adding a
component is one new file plus one line in `compare/run/components.py` (or none, for a plug-in
named by `kind = "python"`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from compare.core.protocols import ROLES, CorpusBuilder, Metric, Pipeline, Role

T = TypeVar("T")
P = TypeVar("P", bound=object)


class UnknownKind(ValueError):
    """A kind nobody registered: the message lists the known ones."""


class Registry(Mapping[str, T], Generic[T]):
    """Named entries of one component kind (read like a dict); registering a name twice is a
    bug, not an override."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> None:
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._items[name] = item

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise UnknownKind(f"unknown {self.what} {name!r}; known: {known}") from None

    def __contains__(self, name: object) -> bool:  # Mapping's would catch KeyError only
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def names(self) -> list[str]:
        """Every registered name, in registration order (a spec's default: all of them)."""
        return list(self._items)


def spec_kind(spec: type[BaseModel]) -> str:
    """The `kind` a spec class answers to: its `kind` field's default."""
    field = spec.model_fields.get("kind")
    if field is None or not isinstance(field.default, str):
        raise TypeError(f"{spec.__name__} needs a `kind` field with a string default")
    return field.default


@dataclass(frozen=True)
class PipelineEntry:
    spec: type[BaseModel]
    build: Callable[[Any], Pipeline]
    role: Role


@dataclass(frozen=True)
class CorpusEntry:
    spec: type[BaseModel]
    build: CorpusBuilder


PIPELINES: Registry[PipelineEntry] = Registry("pipeline kind")
CORPORA: Registry[CorpusEntry] = Registry("corpus kind")
METRICS: Registry[Metric] = Registry("metric")


def fields_of(spec: BaseModel) -> dict[str, Any]:
    """A spec's fields as constructor arguments (the spec's `kind` names the class, not a knob)."""
    return {name: getattr(spec, name) for name in type(spec).model_fields if name != "kind"}


def register_pipeline(spec: type[BaseModel]) -> Callable[[type[P]], type[P]]:
    """Class decorator: `spec`'s fields are the class's keyword arguments, unless the class has a
    `from_spec` classmethod (a router builds its two paths from nested specs). The class
    declares its `role`; the registry keeps it so the analysis can read it."""

    def deco(cls: type[P]) -> type[P]:
        role = getattr(cls, "role", None)
        if role not in ROLES:
            raise TypeError(f"{cls.__name__} must declare `role` as one of {ROLES}, got {role!r}")
        from_spec = getattr(cls, "from_spec", None)

        def build(s: Any) -> Pipeline:
            made = from_spec(s) if callable(from_spec) else cls(**fields_of(s))
            return made  # type: ignore[return-value]  # the class is a Pipeline by contract

        PIPELINES.add(spec_kind(spec), PipelineEntry(spec, build, role))
        return cls

    return deco


def register_corpus(spec: type[BaseModel]) -> Callable[[CorpusBuilder], CorpusBuilder]:
    """Decorator of a corpus builder `async (spec, BuildContext) -> Corpus`."""

    def deco(build: CorpusBuilder) -> CorpusBuilder:
        CORPORA.add(spec_kind(spec), CorpusEntry(spec, build))
        return build

    return deco


def register_metric(name: str) -> Callable[[Metric], Metric]:
    def deco(fn: Metric) -> Metric:
        METRICS.add(name, fn)
        return fn

    return deco


def build_pipeline(spec: BaseModel) -> Pipeline:
    """The pipeline a (validated) spec describes."""
    return PIPELINES[spec_kind(type(spec))].build(spec)
