"""Price sheets: dated, editable TOML files of the prices a run's measured tokens and seconds are
billed at, and the choice of which sheet a report uses.

A sheet is validated strictly (a misspelt key is an error, not a silently free price), and its
canonical JSON is stored with every run it priced: a result priced today must stay
re-priceable years later, even when the shipped example sheets or a default here change.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import duckdb
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from compare.core.config import read_toml, validate

VIEWS = ("api", "self_hosted")
# The sheet a report falls back to: shipped with the repo, labelled illustrative.
DEFAULT_SHEET = Path(__file__).resolve().parents[2] / "prices" / "example-api.toml"

Usd = Annotated[float, Field(ge=0.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Rates(_Strict):
    input_usd_per_mtok: Usd
    cached_input_usd_per_mtok: Usd
    output_usd_per_mtok: Usd


class Tier(_Rates):
    """Rates for a whole request whose prompt is longer than `above_prompt_tokens`."""

    above_prompt_tokens: Annotated[int, Field(gt=0)]


class ApiPrices(_Rates):
    tiers: list[Tier] = []
    cache_storage_usd_per_mtok_hour: Usd = 0.0
    cache_hold_hours: Usd = 1.0
    local_usd_per_hour: Usd  # embedding and retrieval still run on your machine beside an API

    @field_validator("tiers")
    @classmethod
    def _sorted_unique(cls, tiers: list[Tier]) -> list[Tier]:
        limits = [t.above_prompt_tokens for t in tiers]
        if len(set(limits)) != len(limits):
            raise ValueError(f"two tiers share a threshold: {sorted(limits)}")
        return sorted(tiers, key=lambda t: t.above_prompt_tokens)

    def rates(self, prompt_tokens: int) -> tuple[float, float, float]:
        """(input, cached input, output) $/1M for a prompt of this length: the highest tier it exceeds."""
        rate: _Rates = self
        for tier in self.tiers:
            if prompt_tokens > tier.above_prompt_tokens:
                rate = tier
        return rate.input_usd_per_mtok, rate.cached_input_usd_per_mtok, rate.output_usd_per_mtok


class SelfHosted(_Strict):
    hardware: str = Field(min_length=1)
    device: Literal["gpu", "cpu"]
    devices: Annotated[int, Field(ge=1)] = 1
    usd_per_device_hour: Usd
    index_usd_per_hour: Usd | None = None  # None: embedding runs on the serving machine

    @property
    def usd_per_hour(self) -> float:
        return self.usd_per_device_hour * self.devices

    @property
    def index_rate(self) -> float:
        return self.usd_per_hour if self.index_usd_per_hour is None else self.index_usd_per_hour


class PriceSheet(_Strict):
    name: str = Field(min_length=1)
    date: dt.date
    source: str = Field(min_length=1)
    note: str = Field(min_length=1)
    api: ApiPrices | None = None
    self_hosted: SelfHosted | None = None

    @model_validator(mode="after")
    def _some_prices(self) -> PriceSheet:
        if self.api is None and self.self_hosted is None:
            raise ValueError("needs an [api] or a [self_hosted] section (or both)")
        return self

    def views(self) -> list[str]:
        return [v for v in VIEWS if getattr(self, v) is not None]


class PriceSheetError(ValueError):
    """A sheet that cannot be used; the message names the file and the fields."""


def load_price_sheet(path: Path | str) -> PriceSheet:
    path = Path(path)
    data = read_toml(path, PriceSheetError, "price sheet")
    return validate(PriceSheet, data, PriceSheetError, str(path), "price sheet")


def sheet_json(sheet: PriceSheet) -> str:
    """Canonical JSON (sorted keys, defaults written out) to store with a run: a result priced
    today must be re-priceable years later even if a default in this module changes."""
    return json.dumps(sheet.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def api_cost(api: ApiPrices, prompt_tokens: int, cached_tokens: int, output_tokens: int) -> float:
    """$ of one request: computed prompt tokens, cached prompt tokens and output, at its tier."""
    rin, rcached, rout = api.rates(prompt_tokens)
    computed = prompt_tokens - cached_tokens
    return (computed * rin + cached_tokens * rcached + output_tokens * rout) / 1e6


@dataclass(frozen=True)
class ChosenSheet:
    """The sheet a report prices with, and a sentence saying where it came from (the page shows
    it: a cost chart without its prices' provenance invites the wrong conclusion)."""

    sheet: PriceSheet
    origin: str


def stored_sheets(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> list[tuple[str, PriceSheet]]:
    """(run_id, sheet) pairs stored by `ragvslc cost`, newest use first."""
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if "price_sheets" not in tables:
        return []
    rows = con.execute(
        "SELECT run_id, sheet FROM price_sheets WHERE list_contains(?, run_id) ORDER BY used_at DESC, name",
        [list(run_ids)],
    ).fetchall()
    return [(str(run), PriceSheet.model_validate_json(text)) for run, text in rows]


def choose_sheet(
    con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], path: Path | str | None = None
) -> ChosenSheet:
    """An explicit file wins; else the sheet stored with the runs (the newest when they differ);
    else the shipped illustrative example."""
    if path is not None:
        return ChosenSheet(load_price_sheet(path), f"given on the command line: {path}")
    stored = stored_sheets(con, run_ids)
    if stored:
        run, sheet = stored[0]
        others = {json.dumps(s.model_dump(mode="json"), sort_keys=True) for _, s in stored}
        note = "" if len(others) == 1 else f" ({len(others)} different sheets stored; the newest is used)"
        return ChosenSheet(sheet, f"stored with run {run}{note}")
    return ChosenSheet(
        load_price_sheet(DEFAULT_SHEET),
        f"default: {DEFAULT_SHEET.name} from the repository (no sheet stored with the run)",
    )
