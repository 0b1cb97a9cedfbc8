"""Colours that tell runs and variants apart.

Tableau 10 (matplotlib's ``tab10``), a qualitative palette: ten hues chosen to be told apart,
where ``tab20`` pairs each hue with a lighter one (two variants in nearly the same blue).
Past ten, hues repeat with another line style and marker.
"""
from __future__ import annotations

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D")


def style(i: int) -> dict:
    """Colour, line style and marker of the i-th of several lines: distinct for any number."""
    cycle = i // len(PALETTE)
    return {"color": PALETTE[i % len(PALETTE)], "linestyle": LINESTYLES[cycle % len(LINESTYLES)],
            "marker": MARKERS[cycle % len(MARKERS)]}

