"""Shared by the benchmark scripts: how a figure over seeds is written in a results table."""

from __future__ import annotations

import statistics


def mean_std(values: list[float]) -> str:
    """``mean ± std`` over the finite values (NaN: a run without that figure), ``-`` when there are none."""
    values = [v for v in values if v == v]
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {std:.4f}"
