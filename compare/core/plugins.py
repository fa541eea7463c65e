"""Components from outside the repository, named in a spec as `factory = "pkg.mod:make"`.

The factory is imported when the spec is validated, so a typo in its name is a spec error
naming the field, not a crash halfway through a run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def load_factory(ref: str) -> Callable[..., Any]:
    """`pkg.mod:attr` (or `pkg.mod:Class.attr`) as the callable it names."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"factory must look like 'package.module:function', got {ref!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} for factory {ref!r}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no {attr!r} (factory {ref!r})") from None
    if not callable(obj):
        raise ValueError(f"factory {ref!r} is not callable")
    return obj  # type: ignore[no-any-return]
