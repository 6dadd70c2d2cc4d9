"""The parts every plot shares: a model's colour, text that fits a width, the figure layout
with its legend column, and what the spread over seeds means in words (runner/report/plots.py
and runner/report/task_plots.py draw with them)."""
from __future__ import annotations

import textwrap
import zlib

import seaborn as sns
from matplotlib.figure import Figure

from compare.metrics.significance import t_quantile_note

DPI = 120
# 20 distinguishable colours: tab10, then tab20's light partner of each.
PALETTE = [tuple(c) for c in sns.color_palette("tab10", 10) + sns.color_palette("tab20", 20)[1::2]]


def model_colours(names) -> dict[str, tuple]:
    """Each name's colour from its CRC32 (the same in every run, whatever the rank). Names are
    placed in sorted order; a taken colour moves a name to the next free one, tab10's strong
    colours before their light partners, so colours stay distinct. Past 20 models the rest get
    evenly spaced husl hues."""
    names = sorted(set(names))
    free = list(range(len(PALETTE)))
    extra = iter(sns.color_palette("husl", max(0, len(names) - len(PALETTE))))
    out = {}
    for name in names:
        if not free:
            out[name] = tuple(next(extra))
            continue
        want = zlib.crc32(name.encode()) % 10
        slot = min(free, key=lambda i: (i >= 10, (i - want) % 10))
        free.remove(slot)
        out[name] = PALETTE[slot]
    return out


def family_colours(family_of: dict[str, str]) -> dict[str, tuple]:
    """Sweeps and searches: each family its own colour (model_colours of the family names),
    its trials shades of it from light to dark in trial order, so a family reads as one group."""
    base = model_colours(family_of.values())
    out = {}
    for family in dict.fromkeys(family_of.values()):
        members = [m for m, f in family_of.items() if f == family]
        if len(members) == 1:
            out[members[0]] = base[family]
            continue
        light = tuple(0.75 + 0.25 * c for c in base[family])
        dark = tuple(0.55 * c for c in base[family])
        out |= dict(zip(members, (tuple(c) for c in sns.blend_palette([light, base[family], dark], len(members)))))
    return out


def wrap(text: str, width_in: float, fontsize: float = 11) -> str:
    """Wrap each line of `text` to what fits `width_in` inches (a character ~0.55 em wide)."""
    chars = max(20, int(width_in * 72 / (fontsize * 0.55)))
    return "\n".join(textwrap.fill(line, chars) for line in text.splitlines())


def seeds_note(n_seeds: int, band: bool = True) -> str:
    """What the spread over seeds is, in plain words; with 2 seeds, why it is not a t-band."""
    if n_seeds <= 1:
        return "one seed: no spread over seeds"
    if n_seeds < 3:
        return t_quantile_note(n_seeds) + (f" (band = min–max over the {n_seeds} seeds)" if band else "")
    return f"{n_seeds} seeds: band = 95% t-interval over seeds"


def _figure(ncols: int = 1, width: float = 6.5, height: float = 4.5, nrows: int = 1, style: str = "whitegrid",
            legend: list[str] | None = None):
    """(figure, grid of axes, legend panel or None). `legend`: the labels the panel will hold;
    it is its own column, as wide as the longest label, so the title spans it too."""
    key_width = 0.9 + 0.075 * max(map(len, legend)) if legend else 0.0  # inches: 8 pt text
    height = max(height, 1.6 + 0.19 * len(legend or ()) / nrows)  # a long legend (a 24-trial search) sets the height, not squashes the panels
    ratios = [width] * ncols + ([key_width] if legend else [])
    with sns.axes_style(style), sns.plotting_context("notebook", font_scale=0.9):
        fig = Figure(figsize=(width * ncols + key_width, height * nrows), layout="constrained")
        grid = fig.subplots(nrows, len(ratios), squeeze=False, width_ratios=ratios)
    if not legend:
        return fig, grid, None
    key = grid[0, -1]
    for ax in grid[1:, -1]:
        ax.remove()
    key.set_axis_off()
    return fig, grid[:, :-1], key


def legend_panel(key, handles: list, title: str) -> None:
    """The figure's one legend, in its own panel (long names never cover data or the title)."""
    key.legend(handles=handles, loc="upper left", bbox_to_anchor=(0, 1), borderaxespad=0, title=title, frameon=False,
               fontsize=8, title_fontsize=9, alignment="left")
