"""One colour per pipeline kind: every built-in kind its own, and a router's colour never taken by
another kind's name (issue 30: the kind router had none of its own, so any unlisted kind whose
name hashed to the same spare colour drew in the kind router's colour)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

import compare.run.components  # noqa: F401  (registers every built-in pipeline kind)
from compare.core.registry import PIPELINES
from compare.report.palette import KIND_COLOURS, KIND_NAMES, kind_colour


def test_every_built_in_kind_has_a_colour_no_other_has() -> None:
    kinds = sorted(PIPELINES)
    assert {"long_context", "rag", "self_route", "length_rule", "kind_router"} <= set(kinds)
    colours = [kind_colour(k) for k in kinds]
    assert len(set(colours)) == len(kinds), dict(zip(kinds, colours, strict=True))
    assert KIND_COLOURS["kind_router"] == "#D55E00"  # Okabe-Ito vermillion, listed, not hashed
    assert all(k in KIND_NAMES for k in KIND_COLOURS)  # each listed kind has its words too


@given(st.text(min_size=1, max_size=30).filter(lambda k: k not in KIND_COLOURS))
def test_an_unlisted_kind_never_takes_a_listed_colour(kind: str) -> None:
    assert kind_colour(kind) not in KIND_COLOURS.values()
    assert kind_colour(kind) != kind_colour("kind_router")  # failed before: a hashed spare it shared
    assert kind_colour(kind) == kind_colour(kind)  # stable: by the name, not by call order
