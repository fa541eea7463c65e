"""Workload lengths -> the measured lengths (and documents) that stand for them, and what that
evidence shares. Split from compare/analysis/recommend.py (which ranks on these bins) so which
document serves which workload length is read in one place.

- A list of lengths: each listed length (repeats add weight) uses the measured lengths within
  the workload's relative tolerance; a range uses everything measured between its widened ends,
  once both ends have measurements near them. A length without measurements is a note, never
  extrapolated.
- Bins measured by exactly the same documents say so, and a listed length all of whose
  documents lie nearer another listed length has only borrowed evidence (issue 33).
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from compare.analysis.workload import Workload

Bins = dict[str, tuple[float, list[float]]]  # workload length -> (weight, measured lengths used)


def length_bins(wl: Workload, measured: list[float]) -> tuple[Bins, list[str]]:
    """Workload lengths -> (weight, measured lengths used); a note per length not covered.

    A list: each listed length (repeats add weight) uses the measured lengths within tolerance.
    A range: both ends must have measurements within tolerance; then everything measured between
    the widened ends is used, each example weighing the same.
    """
    tol, d, notes = wl.length_tolerance, wl.documents, []

    def near(t: int) -> list[float]:
        found = [m for m in measured if abs(m - t) <= tol * t]
        if not found:
            nearest = sorted(sorted(measured, key=lambda m: abs(m - t))[:3])
            notes.append(f"no measurements within {tol:.0%} of {t} tokens (nearest measured: "
                         f"{', '.join(f'{m:.0f}' for m in nearest) or 'none'})")
        return found

    if d.tokens is None:
        lo, hi = int(d.min_tokens or 0), int(d.max_tokens or 0)
        ends = [near(lo), near(hi)]
        if not all(ends):
            return {}, notes
        inside = [m for m in measured if lo * (1 - tol) <= m <= hi * (1 + tol)]
        return {f"{lo}-{hi}": (1.0, inside)}, notes
    bins = {str(t): (float(c), found) for t, c in Counter(d.tokens).items() if (found := near(t))}
    return bins, notes


def bin_evidence(bins: Bins, docs: pd.Series
                  ) -> tuple[list[str], dict[str, str]]:
    """What the reader must know about bins that lean on the same documents (issue 33): bins
    measured by exactly the same documents say so; a workload length all of whose documents lie
    nearer another listed length has only borrowed evidence ({length: the length it borrows from}).
    `docs`: each measured document's length (index: run and document key)."""
    notes: list[str] = []
    borrowed: dict[str, str] = {}
    listed = {k: float(k) for k in bins if k.isdigit()}  # a range is one bin: nothing to share
    owned = {k: frozenset(docs.index[docs.isin(ms)]) for k, (_, ms) in bins.items() if k in listed}
    seen: dict[frozenset[str], list[str]] = {}
    for k, ids in owned.items():
        seen.setdefault(ids, []).append(k)
    for ids, keys in seen.items():
        if len(keys) > 1 and ids:
            notes.append(f"{' and '.join(keys)} tokens are measured by the same {len(ids)} document(s)")
    for k, (_, ms) in bins.items():
        if k not in listed or len(listed) < 2:
            continue
        others = [t for o, t in listed.items() if o != k]
        nearer = [min(others, key=lambda t: abs(m - t)) for m in ms]
        if ms and all(abs(m - t) < abs(m - listed[k]) for m, t in zip(ms, nearer, strict=True)):
            source = Counter(nearer).most_common(1)[0][0]
            borrowed[k] = f"{source:.0f}"
            notes.append(f"{k} tokens: no document of its own; its evidence is borrowed from {source:.0f} "
                         f"(measured {', '.join(f'{m:.0f}' for m in sorted(ms))})")
    return notes, borrowed
