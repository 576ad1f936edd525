"""Small matplotlib canvases (Qt backend) styled to sit in napari's dock."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QSizePolicy, QWidget

BACKGROUND = "#262930"
FOREGROUND = "#d1d2d4"
COLORS = ("#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8", "#fff176", "#a1887f", "#90a4ae")


class PlotCanvas(FigureCanvasQTAgg):
    """A figure with ``rows`` stacked axes; redraw with :meth:`draw_idle` after changing them."""

    def __init__(self, rows: int = 1, height: float = 2.2, parent: QWidget | None = None) -> None:
        figure = Figure(figsize=(4.0, height * rows), layout="constrained", facecolor=BACKGROUND)
        super().__init__(figure)
        self.setParent(parent)
        self.axes = [figure.add_subplot(rows, 1, i + 1) for i in range(rows)]
        for ax in self.axes:
            style(ax)
        self.setMinimumHeight(int(110 * rows))
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)

    def clear(self) -> None:
        """Empty the axes and remove any added to the figure since (twin axes of a redraw)."""
        for extra in [a for a in self.figure.axes if a not in self.axes]:
            extra.remove()
        for ax in self.axes:
            ax.clear()
            style(ax)


def style(ax: object) -> None:
    """Dark background and light text, like napari's default theme."""
    ax.set_facecolor(BACKGROUND)
    for spine in ax.spines.values():
        spine.set_color(FOREGROUND)
    ax.tick_params(colors=FOREGROUND, labelsize=7)
    ax.xaxis.label.set_color(FOREGROUND)
    ax.yaxis.label.set_color(FOREGROUND)
    ax.title.set_color(FOREGROUND)
    ax.xaxis.label.set_size(8)
    ax.yaxis.label.set_size(8)
    ax.title.set_size(8)


def legend(ax: object, handles: Sequence[object] | None = None) -> None:
    kwargs = {"handles": handles} if handles is not None else {}
    leg = ax.legend(fontsize=7, frameon=False, labelcolor=FOREGROUND, **kwargs)
    return leg
