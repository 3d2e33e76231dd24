"""The book's matplotlib style, so every chapter's figures look alike."""
from __future__ import annotations

BOOK_STYLE = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "font.size": 10,
}


def use_book_style() -> None:
    """Apply :data:`BOOK_STYLE` to matplotlib's global ``rcParams``."""
    import matplotlib as mpl

    mpl.rcParams.update(BOOK_STYLE)
