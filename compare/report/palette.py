"""One colour per pipeline kind, the same on every chart and every page.

Okabe & Ito (2008), "Color Universal Design": eight colours that readers with protanopia,
deuteranopia or tritanopia still tell apart. Long context is blue, RAG orange, the routers
green (Self-Route), purple (the length rule) and vermillion (the kind router); a kind not listed
takes a spare colour by its name (stable across pages), never one a listed kind owns.
Configurations of one kind are told apart by line dash and point shape, not by shade.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import pandas as pd

KIND_COLOURS = {"long_context": "#0072B2", "rag": "#E69F00", "self_route": "#009E73",
                "length_rule": "#CC79A7", "kind_router": "#D55E00"}
ROUTE_COLOURS = {"long_context": KIND_COLOURS["long_context"], "rag": KIND_COLOURS["rag"]}
_SPARE = ("#56B4E9", "#000000", "#F0E442")  # the rest of Okabe-Ito: no listed kind's colour
DASHES = [[1, 0], [6, 3], [2, 2], [8, 3, 2, 3], [1, 4], [10, 4]]
SHAPES = ["circle", "square", "triangle-up", "diamond", "cross", "triangle-down"]


def kind_colour(kind: str) -> str:
    """The colour of a pipeline kind, the same on every chart and every page."""
    return KIND_COLOURS.get(kind) or _SPARE[zlib.crc32(kind.encode()) % len(_SPARE)]


KIND_NAMES = {"long_context": "Long context", "rag": "RAG", "self_route": "Self-route",
              "length_rule": "Length rule", "kind_router": "Kind router"}


def with_colours(df: pd.DataFrame, kinds: Mapping[str, str]) -> pd.DataFrame:
    """The frame with `kind_name` (its label's kind, in words) and `colour` (that kind's colour)
    columns (`kinds`: label -> kind)."""
    if df.empty or "label" not in df.columns:
        return df
    kind = df["label"].map(lambda lab: kinds.get(str(lab), str(lab)))
    return df.assign(kind_name=kind.map(lambda k: KIND_NAMES.get(k, k)), colour=kind.map(kind_colour))
