"""The report's HTML: plain tables, sections, the inlined Vega bundle and the chart embeds.

The page must open offline and years later, so the Vega JavaScript is inlined once (from
vl-convert's bundle, the same one `chart.to_html(inline=True)` uses) and every chart spec carries
its data; nothing is fetched. Numbers also appear as HTML tables, readable (and copyable)
without JavaScript.
"""

from __future__ import annotations

import html
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import altair as alt
import vl_convert as vlc

from compare.analysis.verdict import EFFECTIVE_SHARE, Verdict
from compare.report.charts import RUN_PARAM
from compare.store.views import is_load_run

_EMBED_OPTIONS = {"actions": {"export": True, "source": False, "compiled": False, "editor": False}}
_CSS = """
body { font-family: system-ui, sans-serif; margin: 0 auto; padding: 1rem 2rem; color: #222;
  max-width: 1280px; }
h1 { margin-bottom: 0.25rem; } .sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
pre { background: #f7f7f7; padding: 0.5rem; overflow-x: auto; font-size: 0.8rem; }
.caveat { color: #8a4b00; } .note { color: #666; font-style: italic; }
.chart { margin: 1rem 0 2rem; width: 100%; max-width: 100%; overflow-x: auto; }
.scroll { overflow: auto; max-height: 32rem; max-width: 100%; margin: 0.5rem 0 1.5rem; }
.scroll table { margin: 0; }
.decision { font-size: 1.1rem; line-height: 1.45; background: #eef3fb; border-left: 6px solid #0072B2;
  padding: 0.6rem 0.9rem; margin: 0.75rem 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(14rem, 1fr)); gap: 0.75rem;
  margin: 0.75rem 0; }
.card { border: 1px solid #ccc; border-top-width: 8px; border-radius: 4px; padding: 0.5rem 0.75rem; }
.card h3 { margin: 0 0 0.4rem; font-size: 1.05rem; overflow-wrap: anywhere; }
.card.chosen { box-shadow: 0 0 0 2px #222; }
.card dl { display: grid; grid-template-columns: auto 1fr; gap: 0.15rem 0.75rem; margin: 0; }
.card dt { color: #555; } .card dd { margin: 0; font-weight: 600; }
.card small { font-weight: 400; color: #555; }
.terms { font-size: 0.85rem; color: #444; } .terms dt { font-weight: 600; }
.terms dd { margin: 0 0 0.3rem 1rem; }
.verdict { background: #f6f6f6; border: 1px solid #ccc; padding: 0.5rem 1rem; margin: 0.5rem 0 1rem; }
.sheet { background: #fff8e6; border: 1px solid #e6c878; padding: 0.5rem 0.75rem; margin: 0.5rem 0; }
@media (max-width: 640px) {
  body { padding: 0.5rem 0.75rem; } h1 { font-size: 1.4rem; } .decision { font-size: 1rem; }
}
"""


@dataclass
class Section:
    """A heading, some HTML (tables, notes) and the named charts drawn under it."""

    title: str
    charts: list[str] = field(default_factory=list)
    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)


def fmt(value: Any, column: str = "") -> str:
    """A cell: dollars with 3 significant digits, ms without decimals, shares as %, '–' for none."""
    if value is None or (isinstance(value, numbers.Real) and math.isnan(float(value))):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,d}"
    if isinstance(value, numbers.Real):
        value = float(value)
        if "_vs_" in column:  # ratios and differences: 0.179, not "0 tokens"
            return f"{value:.3g}"
        if per_1k(column):  # $ per query is read per 1,000 queries: "$0.052", never "$5.2e-05"
            return dollars(1000 * value)
        if "usd" in column:
            return dollars(value)
        if column == "share" or column.startswith("share_"):
            return f"{value:.0%}"
        if column.endswith("_ms") or column.endswith("_tokens") or "tokens_" in column:
            return f"{value:,.0f}"
        if value.is_integer() and abs(value) < 1e9:
            return f"{int(value):,d}"
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def per_1k(column: str) -> bool:
    """A $-per-query column (shown per 1,000 queries)."""
    return "usd_per_query" in column


def dollars(value: float) -> str:
    """Three significant digits in plain notation: $1,234, $12.3, $0.0523, $0.0000520."""
    if value == 0 or not math.isfinite(value):
        return f"${value:.0f}" if value == 0 else str(value)
    decimals = max(2, 2 - math.floor(math.log10(abs(value))))
    return f"${value:,.{decimals if abs(value) < 100 else 0}f}"


def table(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str], left: Sequence[str] = ()) -> str:
    """An HTML table of the given columns (key -> header); keys in `left` align left (text)."""

    def cls(k: str) -> str:
        return ' class="l"' if k in left else ""

    head = "".join(f"<th{cls(k)}>{html.escape(h)}</th>" for k, h in columns.items())
    body = "".join(
        "<tr>" + "".join(f"<td{cls(k)}>{html.escape(fmt(r.get(k), k))}</td>" for k in columns) + "</tr>"
        for r in rows
    )
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


_SUMMARY_HEAD = {
    "run_id": "run", "label": "pipeline", "asked": "asked", "answered": "answered", "errors": "errors",
}
_SUMMARY_TAIL = {
    "ttft_p50_ms": "TTFT p50 ms",
    "ttft_p95_ms": "TTFT p95 ms",
    "e2e_p50_ms": "E2E p50 ms",
    "e2e_p95_ms": "E2E p95 ms",
    "total_p50_ms": "retrieval+E2E p50 ms",
    "context_tokens_mean": "context tok",
    "prompt_tokens_mean": "prompt tok",
    "cached_tokens_mean": "cached tok",
}


def verdict_box(v: Verdict, multi: bool, run_name: str | None = None) -> str:
    """The run's evidence in plain words, per axis (after the decision and the cards)."""
    title = f"The evidence, {run_name or v.run_id}" if multi else "The evidence"
    lines = "".join(f"<li>{html.escape(s)}</li>" for s in v.lines)
    eff = "; ".join(e.words() for e in v.effective)
    eff_line = (f"<li>effective length (keeps {EFFECTIVE_SHARE:.0%} of its score at the shortest length): "
                f"{html.escape(eff)}</li>") if eff else ""
    caveats = "".join(f"<li class='caveat'>{html.escape(c)}</li>" for c in v.caveats)
    return f"<div class='verdict'><h3>{html.escape(title)}</h3><ul>{lines}{eff_line}{caveats}</ul></div>"


def effective_table(v: Verdict, multi: bool, run_name: str | None = None) -> str:
    """Effective length per pipeline, side by side (NoLiMa's 85% rule)."""
    head = f"<h3>Effective length{' (' + html.escape(run_name or v.run_id) + ')' if multi else ''}</h3>"
    rows = [{"label": e.label, "effective": e.length, "tested_max": e.tested_max, "base": e.base_score}
            for e in v.effective]
    cols = {"label": "pipeline", "effective": "effective length (tokens)", "tested_max": "longest tested",
            "base": f"{v.metric} at the shortest"}
    rule = note(f"The longest tested context at which the pipeline keeps at least {EFFECTIVE_SHARE:.0%} "
                "of its score at the shortest tested length (NoLiMa's rule).")
    return head + rule + table(rows, cols, left=("label",))


def summary_table(rows: list[dict[str, Any]], headers: Mapping[str, str] | None = None) -> str:
    """Per pipeline: counts, every metric the run scored, latency and token means. `headers`
    renames metric columns (the judge's carries its control accuracy, beside its numbers)."""
    # Only metrics that apply to the run's questions: a needle run scores 4 of the 15, and 11
    # columns of dashes would push the table off the page.
    fixed = {*_SUMMARY_HEAD, *_SUMMARY_TAIL, "pipeline", "params_hash", "n", "metric_n"}
    present = {k for r in rows for k in r} - fixed
    metrics = sorted(k for k in present if any(r.get(k) is not None for r in rows))
    cols = {**_SUMMARY_HEAD, **{m: (headers or {}).get(m, m) for m in metrics}, **_SUMMARY_TAIL}
    if len({r["run_id"] for r in rows}) == 1:
        del cols["run_id"]
    shown = [{**r, **{m: None if r.get(m) is None else f"{r[m]:.3f}" + _own_n(r, m) for m in metrics}}
             for r in rows]
    return table(shown, cols, left=("run_id", "label"))


def _own_n(row: Mapping[str, Any], metric: str) -> str:
    """" (n=12)" when the metric's mean is over fewer questions than the row's n: every number
    shows the n it stands on."""
    n = (row.get("metric_n") or {}).get(metric)
    return f" (n={n})" if n is not None and n != row.get("n") else ""


def run_caveats(run: Mapping[str, Any]) -> list[str]:
    """What a reader must know before comparing this run's numbers with anything else."""
    server = json.loads(run["server"]) if run["server"] else {}
    notes = [
        f"Concurrency {run['concurrency']}: compare latency only between runs at equal concurrency.",
        "Failed requests are counted in 'errors' and excluded from latency and token statistics; they "
        "score 0 in the quality means (every pipeline over the same asked questions) and cost what they "
        "spent before failing (a failed request that reported no usage is left out of the cost means).",
    ]
    if is_load_run(run.get("run_id", "")):  # `ragvslc load`: not an idle server
        notes[0] = ("Load run: its requests were sent as open-loop traffic, one step per rate (see Under "
                    "load); the quality, latency and cost sections pool every step's requests, so their "
                    f"latency is not an idle server's, and concurrency {run['concurrency']} is the spec's, "
                    "not what was in flight.")
    if "cpu" in str(server.get("vllm", "cpu")).lower():  # unknown build: assume the worst
        notes.insert(0, "CPU build; latency numbers are relative (compare pipelines, not absolute ms).")
    notes += [f"Secrets taken out of this run's stored record ({', '.join(n['fields'])}) on {n['at']} by "
              f"{n['by']}: the spec says where each header's value came from, never the value."
              for n in json.loads(run.get("redacted") or "[]")]  # issue 32: a run stored before
    if (spent := (server.get("capabilities") or {}).get("probe_chat_usage") or {}).get("requests"):
        notes.append(f"Start-up probe chat (issue 27): {spent['requests']} request(s), "
                     f"{spent.get('prompt_tokens')} prompt + {spent.get('output_tokens')} output tokens, "
                     "not in the per-query costs; a hosted provider bills it "
                     "([server] probe_chat = false turns it off).")
    return notes


def tokens_line(server: Mapping[str, Any]) -> str:
    """Who counted what: prompt/cached/output tokens in rows always come from each response's
    usage; budgets, needle lengths and window checks from the server's /tokenize or, on an
    endpoint without it (a hosted API), from a local tokenizer that may only approximate."""
    caps = server.get("capabilities") or {}
    counter = caps.get("tokenizer") or "server /tokenize"
    approx = " (an approximation of the served model's)" if caps.get("tokenizer_approximate") else ""
    where = f" at {caps['api_url']}" if caps.get("api_url") and not caps.get("vllm", True) else ""
    return f"rows: each response's usage{where}; budgets, lengths, window: {counter}{approx}"


def speed_line(server: Mapping[str, Any]) -> str:
    """CPU, dtype, threads and the probe's rate: without them a latency cannot be compared
    with one measured on another machine (bf16-native vs AVX2-only differ ~60x in matmul)."""
    one = server if "dtype" in server or not server.get("servers") else server["servers"][0]
    cpu = one.get("cpu") or {}
    probe = server.get("probe") or {}
    parts = [
        f"CPU {cpu['model']} ({', '.join(cpu.get('flags', [])) or 'no AVX'}; {cpu.get('cores')} cores)"
        if cpu else "",
        f"dtype {one['dtype']} ({one.get('dtype_reason', '')})" if one.get("dtype") else "",
        f"{one['threads']} engine threads (cores {one.get('bind')})" if one.get("threads") else "",
        f"probe {probe['tokens_per_s']:.0f} prompt tokens/s on {probe['prompt_tokens']} tokens"
        if probe.get("tokens_per_s") else "",
    ]
    return "; ".join(p for p in parts if p) or "–"


def knobs_section(
    run: Mapping[str, Any], cost_caveats: Sequence[str] = (), run_name: str | None = None
) -> str:
    """The knobs of a run, verbatim, so a reader can reproduce or question the numbers."""

    def pretty(raw: str | None) -> str:
        return html.escape(json.dumps(json.loads(raw), indent=2, sort_keys=True) if raw else "{}")

    server = json.loads(run["server"]) if run["server"] else {}
    spec = json.loads(run["spec"]) if run["spec"] else {}
    facts: dict[str, Any] = {
        k: run[k] for k in ("run_id", "model", "corpus", "status", "concurrency", "created_at", "git_sha")
    }
    facts["server"] = ", ".join(
        f"{k}={server[k]}" for k in ("vllm", "max_model_len", "kv_cache_gib") if k in server
    )
    facts["server flags"] = " ".join(str(a) for a in server.get("args", [])) or "–"
    facts["speed"] = speed_line(server)
    facts["tokens counted by"] = tokens_line(server)
    facts["pipelines"] = "; ".join(json.dumps(p, sort_keys=True) for p in spec.get("pipelines", [])) or "–"
    facts["metrics"] = ", ".join(spec.get("metrics", [])) or "–"
    items = "".join(
        f"<tr><th class='l'>{html.escape(k)}</th><td class='l'>{html.escape(str(v))}</td></tr>"
        for k, v in facts.items()
    )
    caveats = "".join(f"<li class='caveat'>{html.escape(c)}</li>" for c in [*run_caveats(run), *cost_caveats])
    return (
        f"<h3>Run {html.escape(run_name or run['run_id'])}</h3>"
        f"<div class='scroll'><table>{items}</table></div>"
        f"<ul>{caveats}</ul>"
        f"<details><summary>server</summary><pre>{pretty(run['server'])}</pre></details>"
        f"<details><summary>spec</summary><pre>{pretty(run['spec'])}</pre></details>"
    )


def _script_json(obj: Any) -> str:
    """JSON that cannot close the <script> element it sits in."""
    return json.dumps(obj).replace("</", "<\\/")


def _vl_version() -> str:
    """The Vega-Lite version Altair writes specs for, in vl-convert's spelling (v6_4)."""
    major, minor = alt.SCHEMA_VERSION.lstrip("v").split(".")[:2]
    return f"v{major}_{minor}"


_RUN_PICKER_JS = f"""
const views = [];
function pickRun(run) {{
  for (const view of views) {{
    try {{ view.signal('{RUN_PARAM}', run || null).runAsync(); }} catch (e) {{ /* chart without runs */ }}
  }}
}}
function runFromHash() {{  // report.html#run=<run_id> opens with that run picked (a link to one run)
  const m = location.hash.match(/^#run=(.+)$/);
  const picker = document.getElementById('run-picker');
  if (!m || !picker) return;
  picker.value = decodeURIComponent(m[1]);
  pickRun(picker.value);
}}
"""


def run_picker(run_ids: Sequence[str], names: Mapping[str, str] | None = None) -> str:
    """One selector for every chart (each declares the run parameter): no per-chart dropdowns.
    A run shows as its name (corpus and time); the id is only the option's value."""
    if len(run_ids) < 2:
        return ""
    names = names or {}
    options = "".join(f'<option value="{html.escape(r)}">{html.escape(names.get(r, r))}</option>'
                      for r in run_ids)
    return (
        f'<p><label>Run: <select id="run-picker" onchange="pickRun(this.value)">'
        f'<option value="">all runs</option>{options}</select></label> '
        "(click a legend entry to highlight a pipeline; shift-click for more)</p>"
    )


_COMPOUND = ("facet", "hconcat", "vconcat", "concat", "repeat")


def fit_width(spec: dict[str, Any]) -> dict[str, Any]:
    """A single view takes its box's width in the page (a phone's too); a faceted chart keeps its
    panel widths and scrolls inside its box. PNG/SVG files keep the fixed width."""
    if "width" in spec and not any(k in spec for k in _COMPOUND):
        return {**spec, "width": "container", "autosize": {"type": "fit-x", "contains": "padding"}}
    return spec


def render_page(
    header: Sequence[str],
    sections: Sequence[Section],
    charts: Mapping[str, alt.TopLevelMixin],
) -> str:
    """One page: the Vega bundle inlined once, then each section with its charts embedded."""
    # The stub marks `snippet` required; at runtime it defaults to the globals snippet (as altair uses it).
    bundle = vlc.javascript_bundle(vl_version=_vl_version())  # type: ignore[call-arg]
    body = []
    for sec in sections:
        if sec.title:  # the first screen (decision and cards) has no heading of its own
            body.append(f"<h2>{html.escape(sec.title)}</h2>")
        body += sec.before
        body += [f'<div class="chart" id="chart-{name}"></div>' for name in sec.charts if name in charts]
        body += sec.after
    embeds = "".join(
        f"  vegaEmbed('#chart-{name}', {_script_json(fit_width(c.to_dict()))}, "
        f"{_script_json(_EMBED_OPTIONS)})"
        ".then((r) => views.push(r.view)).catch(console.error),\n"
        for name, c in charts.items()
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><title>ragvslc report</title>'
        f"<style>{_CSS}</style>\n<script>\n{bundle}\n</script></head><body>\n"
        "<h1>Long context vs RAG</h1>\n"
        + "\n".join(header)
        + "\n"
        + "\n".join(body)
        + f"\n<script>\n{_RUN_PICKER_JS}Promise.all([\n{embeds}]).then(runFromHash);\n</script>\n"
        + "</body></html>\n"
    )
