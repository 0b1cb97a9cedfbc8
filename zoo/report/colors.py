"""Colours that tell runs and variants apart.

Tableau 10 (matplotlib's ``tab10``), a qualitative palette: ten hues chosen to be told apart,
where MLflow's own run colours (a hash of the run id into 29 colours, six of them blues) often
give two compared runs nearly the same blue, and ``tab20`` pairs each hue with a lighter one.
Past ten, hues repeat with another line style and marker.
"""
from __future__ import annotations

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D")
RUN_COLOR_TAG = "mlflow.runColor"  # the colour MLflow's UI gives a run in its charts and runs list


def style(i: int) -> dict:
    """Colour, line style and marker of the i-th of several lines: distinct for any number."""
    cycle = i // len(PALETTE)
    return {"color": PALETTE[i % len(PALETTE)], "linestyle": LINESTYLES[cycle % len(LINESTYLES)],
            "marker": MARKERS[cycle % len(MARKERS)]}


def next_color(recent: list[str | None]) -> str:
    """A colour for a new run, given the colours of the runs made just before it (newest first):
    the first palette colour none of them has, else the one least recently used."""
    for color in PALETTE:
        if color not in recent:
            return color
    return max(PALETTE, key=lambda c: recent.index(c))
