"""Price sheets: dated, editable TOML files of the prices a run's measured tokens and seconds are
billed at, and the choice of which sheet a report uses.

A sheet is validated strictly (a misspelt key is an error, not a silently free price), and its
canonical JSON is stored with every run it priced: a result priced today must stay
re-priceable years later, even when the shipped example sheets or a default here change.

An API section may carry 2026's caching terms, each optional and "no effect" when absent:
`[[api.cache_writes]]` (a write price per TTL, as a multiplier of the input price) with the
chosen `cache_ttl_minutes`, storage per 1M tokens per hour (`cache_storage_usd_per_mtok_hour`,
held `cache_hold_hours`), and `[[api.tiers]]` whose rates price a long prompt's fresh tokens,
cached reads and writes alike. How the cost model uses them: compare/analysis/cache_terms.py.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import duckdb
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from compare.core.config import read_toml, validate

VIEWS = ("api", "self_hosted")
# The sheet a report falls back to: shipped with the repo, labelled illustrative.
DEFAULT_SHEET = Path(__file__).resolve().parents[2] / "prices" / "example-api.toml"

Usd = Annotated[float, Field(ge=0.0)]
_T = TypeVar("_T")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Rates(_Strict):
    input_usd_per_mtok: Usd
    cached_input_usd_per_mtok: Usd
    output_usd_per_mtok: Usd


class Tier(_Rates):
    """Rates for a whole request whose prompt is longer than `above_prompt_tokens`."""

    above_prompt_tokens: Annotated[int, Field(gt=0)]


class CacheWrite(_Strict):
    """Writing a prompt prefix into the provider's cache so it lives `ttl_minutes` after its
    last use: each written token is billed at the (tier's) input price x `input_multiplier`
    instead of the input price. A written token is computed anyway, so 1.0 = no write charge
    (implicit caching), and a multiplier below 1 would make writing cheaper than not caching."""

    ttl_minutes: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    input_multiplier: Annotated[float, Field(ge=1.0, allow_inf_nan=False)]


def _by_unique_key(items: list[_T], key: Callable[[_T], float], clash: str) -> list[_T]:
    """A sheet's list sorted by its key, refusing two entries with one key (which would leave
    the price for that key to list order)."""
    keys = [key(i) for i in items]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{clash}: {sorted(keys)}")
    return sorted(items, key=key)


class ApiPrices(_Rates):
    tiers: list[Tier] = []
    cache_storage_usd_per_mtok_hour: Usd = 0.0
    cache_hold_hours: Usd = 1.0
    # Cache writes per TTL and the one the workload buys; none = writes cost what input costs
    # and the cache never expires between questions (the sheets before 2026's shape).
    cache_writes: list[CacheWrite] = []
    cache_ttl_minutes: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    local_usd_per_hour: Usd  # embedding and retrieval still run on your machine beside an API

    @field_validator("tiers")
    @classmethod
    def _sorted_unique(cls, tiers: list[Tier]) -> list[Tier]:
        return _by_unique_key(tiers, lambda t: t.above_prompt_tokens, "two tiers share a threshold")

    @field_validator("cache_writes")
    @classmethod
    def _one_price_per_ttl(cls, writes: list[CacheWrite]) -> list[CacheWrite]:
        return _by_unique_key(writes, lambda w: w.ttl_minutes, "two cache writes share a ttl_minutes")

    @model_validator(mode="after")
    def _ttl_is_priced(self) -> ApiPrices:
        """A chosen TTL without a write price would bill writes as free; writes listed without a
        chosen TTL leave unsaid which one the workload buys: both are errors, not defaults."""
        ttls = [w.ttl_minutes for w in self.cache_writes]
        if self.cache_ttl_minutes is None and ttls:
            raise ValueError(f"cache_writes are listed for ttl_minutes {ttls}: choose one with "
                             "cache_ttl_minutes")
        if self.cache_ttl_minutes is not None and self.cache_write is None:
            raise ValueError(f"cache_ttl_minutes = {self.cache_ttl_minutes:g} has no write price: add "
                             f"[[api.cache_writes]] with ttl_minutes = {self.cache_ttl_minutes:g} "
                             f"(listed: {ttls or 'none'})")
        return self

    @property
    def cache_write(self) -> CacheWrite | None:
        """The write the workload buys (its TTL and multiplier); None: no write priced, no expiry."""
        if self.cache_ttl_minutes is None:
            return None
        chosen = self.cache_ttl_minutes
        return next((w for w in self.cache_writes if math.isclose(w.ttl_minutes, chosen)), None)

    @property
    def write_multiplier(self) -> float:
        write = self.cache_write
        return 1.0 if write is None else write.input_multiplier

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


class EmbedPrices(_Strict):
    """An embeddings endpoint's price (RAG's `embed_base_url`): its billed tokens, for the index
    (once per document) and each question. It applies in both views, since where the chat
    model runs does not change what the embeddings provider bills. In-process embedding has no
    bill: its seconds are priced at the local/index hourly rate."""

    usd_per_mtok: Usd
    model: str | None = None  # the endpoint model these prices are for (a label)


class PriceSheet(_Strict):
    name: str = Field(min_length=1)
    date: dt.date
    source: str = Field(min_length=1)
    note: str = Field(min_length=1)
    api: ApiPrices | None = None
    self_hosted: SelfHosted | None = None
    embeddings: EmbedPrices | None = None

    @property
    def embed_usd_per_token(self) -> float:
        return 0.0 if self.embeddings is None else self.embeddings.usd_per_mtok / 1e6

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


def api_cost(
    api: ApiPrices, prompt_tokens: int, cached_tokens: int, output_tokens: int, written_tokens: int = 0
) -> float:
    """$ of one request: computed prompt tokens, cached prompt tokens and output, at its tier.

    `written_tokens` of the computed ones were also written to the cache: billed at the tier's
    input price x the chosen write's multiplier instead of the input price (providers count
    written tokens in the prompt; a sheet with no chosen write bills them as plain input)."""
    rin, rcached, rout = api.rates(prompt_tokens)
    computed = prompt_tokens - cached_tokens
    written = min(max(written_tokens, 0), max(computed, 0))
    surcharge = written * rin * (api.write_multiplier - 1.0)
    return (computed * rin + surcharge + cached_tokens * rcached + output_tokens * rout) / 1e6


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
